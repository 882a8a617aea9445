-- Pictures of training: History:plot and tk.plot.recall_at_k write SVG that an XML
-- parser (xmllint, package libxml2-utils) reads, with the series they promise.
local tk = require "towerkit"
local T = tk.Tags

local sh = require("tests.spec.helpers.files").sh

-- xpath over an SVG (its elements are in the SVG namespace: match by local name)
local function xpath(path, expr)
  return (sh(("xmllint --xpath %q %q"):format(expr, path)):gsub("%s+$", ""))
end

local function tiny()
  tk.manual_seed(1)
  local schema = tk.Schema {
    tk.ColumnSchema("user_id", { tags = { T.USER_ID, T.CATEGORICAL }, int_domain = { max = 29 } }),
    tk.ColumnSchema("item_id", { tags = { T.ITEM_ID, T.CATEGORICAL }, int_domain = { max = 19 } }),
  }
  local data, items = tk.data.synthetic(schema, 400, { seed = 2, clusters = 3 })
  local train, valid = data:split(0.75, 1)
  local m = tk.TwoTowerModel(schema, tk.MLPBlock({ 8 }, { no_activation_last_layer = true }),
    { embedding_options = tk.EmbeddingOptions { embedding_dim_default = 4 } })
  m:compile { optimizer = tk.optim.Adam { learning_rate = 1e-2 } }
  local lines = {}
  local h = m:fit(train, { batch_size = 50, epochs = 3, validation_data = valid,
    validation_opts = { item_corpus = items }, log = function(s) lines[#lines + 1] = s end })
  return m, h, valid, items, lines
end

describe("plots", function()
  local tmp = {}
  after_each(function() for _, p in ipairs(tmp) do os.remove(p) end end)
  local function name() local n = os.tmpname() tmp[#tmp + 1] = n return n end

  it("xmllint is installed (make deps)", function()
    assert.truthy(sh("xmllint --version"):find("libxml", 1, true))
  end)

  it("history:plot draws the loss per step and per epoch and each validation metric", function()
    local _, h, _, _, lines = tiny()
    -- fit ends with one line about the run
    assert.truthy(lines[#lines]:find("^fit: 3 epochs, 18 steps in [%d.]+ s, loss [%d.]+ %-> [%d.]+, val_ndcg_at_10 "),
      lines[#lines])
    local path = name()
    assert.equal(path, h:plot(path))
    assert.equal("", sh(("xmllint --noout %q"):format(path)))
    local function count(series)
      return xpath(path, ("string(//*[local-name()='g'][@data-name='%s']/@data-points)"):format(series))
    end
    assert.equal("18", count("loss per step"))
    assert.equal("3", count("loss per epoch"))
    assert.equal("3", count("val_recall_at_10"))
    assert.equal("3", count("val_ndcg_at_10"))
    assert.equal("4", xpath(path, "count(//*[local-name()='polyline'])"))
    -- the polyline of a series has as many points as it says
    local pts = xpath(path, "string(//*[local-name()='g'][@data-name='loss per step']/*[local-name()='polyline']/@points)")
    local n = 0
    for _ in pts:gmatch("[%d.]+,[%d.]+") do n = n + 1 end
    assert.equal(18, n)
    -- labelled axes
    local texts = xpath(path, "//*[local-name()='text'][@class='axis']/text()")
    assert.truthy(texts:find("step", 1, true) and texts:find("epoch", 1, true), texts)
  end)

  it("tk.plot.recall_at_k draws recall and NDCG against k for the model and the popularity baseline", function()
    local m, _, valid, items = tiny()
    local path = name()
    local p, res = tk.plot.recall_at_k(m, valid, { item_corpus = items, ks = { 1, 5, 10 }, path = path })
    assert.equal(path, p)
    assert.equal("", sh(("xmllint --noout %q"):format(path)))
    assert.equal("2", xpath(path, "count(//*[local-name()='g'][@class='panel'])"))
    assert.equal("2", xpath(path, "count(//*[local-name()='g'][@data-name='popularity'])"))
    assert.equal("3", xpath(path, "string(//*[local-name()='g'][@data-title='Recall@k']/*[@data-name='model']/@data-points)"))
    assert.is_true(res.model.recall_at_10 >= res.model.recall_at_1)
    assert.is_number(res.popularity.ndcg_at_5)
    assert.has_error(function() tk.plot.recall_at_k(m, valid, { item_corpus = items, kz = 1 }) end)
  end)
end)
