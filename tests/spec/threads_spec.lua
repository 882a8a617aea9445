-- The thread count (tk.set_num_threads, ctx:num_threads) and determinism: for a fixed seed, data and thread count, fit, evaluate, the item
-- export and top-k give the same bits on every run; across thread counts the results
-- agree within float rounding.
local tk = require "towerkit"
local T = tk.Tags

local function schema()
  return tk.Schema {
    tk.ColumnSchema("user_id", { tags = { T.USER_ID, T.CATEGORICAL }, int_domain = { max = 299 } }),
    tk.ColumnSchema("user_recent", { tags = { T.USER, T.CATEGORICAL, T.LIST }, int_domain = { max = 49 },
      value_count = { min = 1, max = 3 } }),
    tk.ColumnSchema("user_activity", { tags = { T.USER, T.CONTINUOUS } }),
    tk.ColumnSchema("item_id", { tags = { T.ITEM_ID, T.CATEGORICAL }, int_domain = { max = 399 } }),
    tk.ColumnSchema("item_category", { tags = { T.ITEM, T.CATEGORICAL }, int_domain = { max = 29 } }),
  }
end

local data, items = tk.data.synthetic(schema(), 6000, { seed = 4, clusters = 8 })
local train, test = data:split(0.9, 5)

-- Trains a model with `threads` threads; returns its weights, its metrics, the item
-- embeddings and the top-10 of the first test queries, all as plain tables.
local function run(threads)
  local before = tk.get_num_threads()
  tk.set_num_threads(threads)
  tk.manual_seed(11)
  local model = tk.TwoTowerModel(schema(), tk.MLPBlock({ 64, 32 }, { no_activation_last_layer = true }), {
    embedding_options = { embedding_dim_default = 16 },
    post = "l2-norm",
    logits_temperature = 0.1,
    logq = "streaming",
  })
  model:compile { optimizer = tk.optim.Adam { learning_rate = 5e-3 } }
  -- batches of 300 rows: blocks of 48 rows in the trainer, the last one short
  local history = model:fit(train, { batch_size = 300, epochs = 2, seed = 3, verbose = false })
  local out = { loss = history.epochs[2].loss, weights = {} }
  for i, w in ipairs(model.block:get_weights()) do out.weights[i] = w:totable() end
  out.metrics = model:evaluate(test, { item_corpus = items })
  out.items = model:item_embeddings(items).embeddings:totable()
  local ids, scores = model:to_top_k_encoder(items, { k = 10 }):query(test:select(tk.core.arange(20)).columns)
  out.top = { ids = ids:totable(), scores = scores:totable() }
  tk.set_num_threads(before)
  return out
end

-- The largest absolute difference between two nested tables of numbers (inf if their
-- shapes differ).
local function max_diff(a, b)
  if type(a) == "number" then return type(b) == "number" and math.abs(a - b) or math.huge end
  if type(b) ~= "table" or #a ~= #b then return math.huge end
  local worst = 0
  for i = 1, #a do worst = math.max(worst, max_diff(a[i], b[i])) end
  return worst
end

describe("determinism", function()
  local two = run(2)

  it("gives the same bits on a second run with the same seed and thread count", function()
    local again = run(2)
    assert.equal(two.loss, again.loss)
    assert.equal(0, max_diff(two.weights, again.weights))
    for name, value in pairs(two.metrics) do assert.equal(value, again.metrics[name], name) end
    assert.equal(0, max_diff(two.items, again.items))
    assert.same(two.top.ids, again.top.ids)
    assert.equal(0, max_diff(two.top.scores, again.top.scores))
  end)

  it("agrees across 1, 2 and 3 threads within float rounding", function()
    for _, n in ipairs { 1, 3 } do
      local other = run(n)
      -- a few float ulps of unit-scale weights, after 36 Adam steps
      assert.truthy(max_diff(two.weights, other.weights) < 1e-4, n .. " threads")
      assert.truthy(math.abs(two.loss - other.loss) < 1e-4 * math.abs(two.loss), n .. " threads")
      assert.truthy(max_diff(two.items, other.items) < 1e-4, n .. " threads")
    end
  end)
end)

describe("threads", function()
  it("sets and reads the process's count and a context's", function()
    local before = tk.get_num_threads()
    assert.truthy(before >= 1)
    tk.set_num_threads(3)
    assert.equal(3, tk.get_num_threads())
    local ctx = tk.Context(1)
    assert.equal(3, ctx:num_threads())
    ctx:num_threads(1)
    assert.equal(1, ctx:num_threads())
    ctx:num_threads(0) -- back to the process's count
    assert.equal(3, ctx:num_threads())
    tk.set_num_threads(before)
    assert.equal(1, tk.blas_info().blas_threads) -- every product is single-threaded
  end)

  it("refuses counts out of range, naming the function", function()
    for _, bad in ipairs { 0, -2, 5000 } do
      local ok, err = pcall(tk.set_num_threads, bad)
      assert.is_false(ok)
      assert.truthy(err:find("to 'set_num_threads' (expected a count from 1 to 1024", 1, true), err)
    end
    local ok, err = pcall(tk.set_num_threads, 1.5)
    assert.is_false(ok)
    assert.truthy(err:find("must be an integer", 1, true), err)
    ok = pcall(tk.set_num_threads, "four")
    assert.is_false(ok)
    local ctx = tk.Context(1)
    ok, err = pcall(ctx.num_threads, ctx, -1)
    assert.is_false(ok)
    assert.truthy(err:find("num_threads", 1, true), err)
  end)
end)
