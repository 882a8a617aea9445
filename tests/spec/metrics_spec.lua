local tk = require "towerkit"
local M = tk.metrics

local function log2(x) return math.log(x) / math.log(2) end

describe("ranking metrics", function()
  -- ranked: 7 5 3 9 1; relevant: {5, 9, 4}
  local ranked = { 7, 5, 3, 9, 1 }
  local relevant = { [5] = true, [9] = true, [4] = true }

  it("match hand-computed values", function()
    assert.near(2 / 3, M.RecallAt(5):score(ranked, relevant), 1e-12)
    assert.near(1 / 3, M.RecallAt(2):score(ranked, relevant), 1e-12)
    assert.near(2 / 5, M.PrecisionAt(5):score(ranked, relevant), 1e-12)
    assert.near(1 / 2, M.PrecisionAt(2):score(ranked, relevant), 1e-12)
    assert.near(1 / 2, M.MRRAt(5):score(ranked, relevant), 1e-12)
    assert.equal(0, M.MRRAt(1):score(ranked, relevant))
    -- AP@5: hits at ranks 2 and 4: (1/2 + 2/4) / min(3, 5)
    assert.near((1 / 2 + 2 / 4) / 3, M.AvgPrecisionAt(5):score(ranked, relevant), 1e-12)
    -- AP@2: (1/2) / min(3, 2)
    assert.near((1 / 2) / 2, M.AvgPrecisionAt(2):score(ranked, relevant), 1e-12)
    -- NDCG@5: (1/log2(3) + 1/log2(5)) / (1 + 1/log2(3) + 1/log2(4))
    local dcg = 1 / log2(3) + 1 / log2(5)
    local idcg = 1 + 1 / log2(3) + 1 / log2(4)
    assert.near(dcg / idcg, M.NDCGAt(5):score(ranked, relevant), 1e-12)
    -- one relevant item at rank 1: every metric is perfect but precision
    local one = { [7] = true }
    assert.equal(1, M.NDCGAt(10):score(ranked, one))
    assert.equal(1, M.RecallAt(10):score(ranked, one))
    assert.equal(1, M.MRRAt(10):score(ranked, one))
    assert.equal(1, M.AvgPrecisionAt(10):score(ranked, one))
    assert.near(0.1, M.PrecisionAt(10):score(ranked, one), 1e-12)
  end)

  it("average over queries and are named as Merlin names them", function()
    local out = M.average({ M.RecallAt(2), M.NDCGAt(2) }, { { 1, 2 }, { 3, 4 } }, { { [2] = true }, { [9] = true } })
    assert.near(0.5, out.recall_at_2, 1e-12)
    assert.near(0.5 * (1 / log2(3)), out.ndcg_at_2, 1e-12)
    assert.equal("map_at_5", M.AvgPrecisionAt(5).name)
    assert.equal("mrr_at_3", M.MRRAt(3).name)
    assert.equal("precision_at_1", M.PrecisionAt(1).name)
  end)

  it("reject a bad k", function()
    assert.has_error(function() M.RecallAt(0) end, "recall: k must be a positive integer, got 0")
    assert.has_error(function() M.NDCGAt("10") end, "ndcg: k must be a positive integer, got 10")
  end)
end)

describe("learning-rate schedules", function()
  local S = tk.optim.schedules
  it("follow their formulas", function()
    assert.equal(0.1, S.constant()(7, 0.1))
    local w = S.warmup(10)
    assert.near(0.01, w(1, 0.1), 1e-12)
    assert.near(0.1, w(10, 0.1), 1e-12)
    assert.near(0.1, w(50, 0.1), 1e-12)
    local e = S.exponential_decay { decay_steps = 100, decay_rate = 0.5 }
    assert.near(0.05, e(100, 0.1), 1e-12)
    assert.near(0.1 * 0.5 ^ 1.5, e(150, 0.1), 1e-12)
    assert.near(0.05, S.exponential_decay { decay_steps = 100, decay_rate = 0.5, staircase = true }(150, 0.1), 1e-12)
    local c = S.cosine_decay { decay_steps = 100, alpha = 0.1 }
    assert.near(0.1, c(0, 0.1), 1e-12)
    assert.near(0.1 * (0.9 * 0.5 + 0.1), c(50, 0.1), 1e-12)
    assert.near(0.01, c(100, 0.1), 1e-12)
    assert.near(0.01, c(500, 0.1), 1e-12)
    local wc = S.warmup(10, c)
    assert.near(0.1, wc(10, 0.1), 1e-12)
    assert.near(c(40, 0.1), wc(50, 0.1), 1e-12)
    assert.has_error(function() S.cosine_decay {} end, "cosine_decay: decay_steps must be a positive number")
  end)
end)
