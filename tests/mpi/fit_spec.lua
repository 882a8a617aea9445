-- Data-parallel fit under `mpirun -np 2` (scripts/run-tests.sh runs tests/mpi so): the
-- equivalence of N ranks with batch B and one process with batch N x B, and ranks that
-- stay bitwise identical.
package.path = "tests/mpi/?.lua;" .. package.path
local tk = require "towerkit"
local C = require "common"
local dist = tk.distributed

local B, STEPS = 16, 20

-- A model fit distributed (batch B a rank) and the same model fit alone on this rank
-- with batch N x B, from the same seeds and data: 20 steps each.
local function both(model_opts, fit_opts)
  local N = dist.size()
  local data = C.data(STEPS * N * B)
  local function fit(distributed, bs)
    local m = C.model(7, model_opts)
    local o = { batch_size = bs, epochs = 1, verbose = false, seed = 5, distributed = distributed }
    for k, v in pairs(fit_opts or {}) do o[k] = v end
    return m, m:fit(data, o)
  end
  local md, hd = fit(true, B)
  local ml, hl = fit(false, N * B)
  return md, hd, ml, hl
end

-- Every step's loss of two histories within 1e-5.
local function same_losses(ha, hb)
  for i = 1, STEPS do
    assert.is_true(math.abs(ha.steps[i].loss - hb.steps[i].loss) <= 1e-5,
      ("step %d: %.9g vs %.9g"):format(i, ha.steps[i].loss, hb.steps[i].loss))
  end
end

local max_diff = C.max_diff

describe("tk.distributed under mpirun -np 2", function()
  it("starts MPI itself and has two ranks", function()
    assert.is_true(dist.available())
    assert.equals(2, dist.size())
    assert.is_true(dist.rank() == 0 or dist.rank() == 1)
    dist.barrier()
  end)

  it("allreduce sums in rank order, the same on every rank", function()
    local r = dist.rank()
    assert.equals(1 + 2, dist.allreduce(r + 1))
    local t = dist.allreduce({ 0.1 * (r + 1), r })
    assert.equals(0.1 + 0.2, t[1]) -- rank 0's value plus rank 1's, in that order
    local x = tk.tensor({ 1, 2, 3, 4, 5 }) * (r + 1)
    x = x:clone()
    dist.allreduce(x)
    assert.same({ 3, 6, 9, 12, 15 }, x:totable())
  end)

  it("allgather stacks every rank's rows in rank order", function()
    local r = dist.rank()
    local all, counts = dist.allgather(tk.tensor(r == 0 and { 0 } or { 1, 1 }, "int64"))
    assert.same({ 1, 2 }, counts)
    assert.same({ 0, 1, 1 }, all:totable())
  end)

  it("np 2 with batch B equals one process with batch 2B: losses within 1e-5, weights within 1e-5", function()
    local md, hd, ml, hl = both()
    assert.equals(STEPS, #hd.steps)
    assert.equals(STEPS, #hl.steps)
    -- different sgemm shapes (B and 2B rows) and sum orders: equal up to rounding
    same_losses(hd, hl)
    -- 20 Adam steps of lr 1e-2 from rounding-level differences in the gradients: the
    -- weights (|w| <= about 1) agree to 1e-5
    assert.is_true(max_diff(C.flat_weights(md), C.flat_weights(ml)) <= 1e-5)
  end)

  it("every rank ends with the same weights, bit for bit", function()
    -- the sums over ranks are formed in rank order once and sent to every rank
    C.ranks_agree(C.flat_weights((both())))
  end)

  it("the equivalence holds with streaming logQ and sampled negatives", function()
    local data = C.data(STEPS * 2 * B)
    local corpus = data:unique_by("item_id")
    local md, hd, ml, hl = both({ logq = "streaming", negatives = { num = 8, corpus = corpus } })
    same_losses(hd, hl)
    assert.is_true(max_diff(C.flat_weights(md), C.flat_weights(ml)) <= 1e-5)
  end)

  it("an uneven last batch is split over the ranks and still matches", function()
    local N = dist.size()
    local data = C.data(5 * N * B + 7)
    local m1 = C.model(11)
    local h1 = m1:fit(data, { batch_size = B, epochs = 1, verbose = false, seed = 2 })
    local m2 = C.model(11)
    local h2 = m2:fit(data, { batch_size = N * B, epochs = 1, verbose = false, seed = 2, distributed = false })
    assert.equals(#h2.steps, #h1.steps)
    for i = 1, #h1.steps do assert.is_true(math.abs(h1.steps[i].loss - h2.steps[i].loss) <= 1e-5) end
    assert.is_true(max_diff(C.flat_weights(m1), C.flat_weights(m2)) <= 1e-5)
  end)

  it("the specs' checks fail where they should (C.ranks_agree, C.max_diff)", function()
    local r = dist.rank()
    C.ranks_agree({ 1, 2, 3 })
    local ok, err = pcall(C.ranks_agree, { 1, 2 + (r == dist.size() - 1 and 1 or 0), 3 })
    assert.is_false(ok)
    assert.matches(("weight 2: 2 on rank 0, 3 on rank %d"):format(dist.size() - 1), err, 1, true)
    ok, err = pcall(C.ranks_agree, r == 0 and { 1, 2 } or { 1, 2, 3 })
    assert.is_false(ok)
    assert.matches("ranks_agree: " .. (2 + 3 * (dist.size() - 1)) .. " values gathered", err, 1, true)
    assert.equals(0.5, max_diff({ 1, 2 }, { 1.5, 2 }))
    ok, err = pcall(max_diff, { 1, 2 }, { 1 })
    assert.is_false(ok)
    assert.matches("max_diff: 2 values vs 1", err, 1, true)
  end)
end)
