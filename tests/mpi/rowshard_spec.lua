-- Row-sharded embedding tables under `mpirun -np 2` (compile{embedding_sharding =
-- "row"}, core/src/dist_table.c): the same bits as replicated tables, shards of 1/N of
-- the rows, checkpoints, and errors.
package.path = "tests/mpi/?.lua;" .. package.path
local tk = require "towerkit"
local C = require "common"
local dist = tk.distributed

local B, STEPS = 16, 20

-- C.model with the given compile options (the same seeds as C.model).
local function model(seed, compile, model_opts) return C.model(seed, model_opts, compile) end

local fit = C.fit

local shards = C.shards

describe("row-sharded tables under mpirun -np 2", function()
  it("hold this rank's rows only: [floor(r V / N), floor((r + 1) V / N))", function()
    local m = model(7, { embedding_sharding = "row" })
    local r, N, n = dist.rank(), dist.size(), 0
    for path, s in pairs(shards(m)) do
      local lo, count, rows, held = s.lo, s.count, s.rows, s.tensor:shape()[1]
      assert.equals(math.floor(r * rows / N), lo, path)
      assert.equals(math.floor((r + 1) * rows / N) - lo, count, path)
      assert.equals(count, held, path) -- the parameter is the shard
      n = n + 1
    end
    assert.is_true(n >= 3) -- user_id, item_id, item_category
  end)

  it("train to the same bits as replicated tables (20 steps, losses and every weight)", function()
    local data = C.data(STEPS * dist.size() * B)
    local mr = model(7)
    local hr = fit(mr, data)
    local ms = model(7, { embedding_sharding = "row" })
    local hs = fit(ms, data)
    for i = 1, STEPS do assert.equals(hr.steps[i].loss, hs.steps[i].loss, "step " .. i) end
    ms:gather_tables()
    -- the same per-row sums, in the same order (rank order), and the same Adam updates
    C.same_bits(C.flat_weights(mr), C.flat_weights(ms), "replicated vs row-sharded")
  end)

  it("fetch both towers' rows in one exchange before the forward: 4 collectives a step more", function()
    -- replicated: the 3 all-gathers of the pairs; row: 3 all-to-alls before the forward
    -- (both towers), 3 after backward and the norm's all-reduce. Without the prefetch
    -- each tower would fetch on its own (3 more)
    local data = C.data(STEPS * dist.size() * B)
    local function calls(sharding)
      local m = model(7, { embedding_sharding = sharding })
      dist.barrier()
      dist.reset_stats()
      fit(m, data)
      return dist.stats().calls
    end
    local r, s = calls(nil), calls("row")
    assert.equals(4 * STEPS, s - r)
  end)

  it("with lazy = false Adam and sampled negatives: the same bits", function()
    -- the item tower runs twice a step (batch and sampled negatives): its two fetches'
    -- raw gradient rows are appended in the tape's order (the last fetch first) and
    -- coalesced once, as the replicated table's are
    local data = C.data(STEPS * dist.size() * B)
    local mopts = { negatives = { num = 8, corpus = data } }
    local function run(sharding)
      local m = model(11, { optimizer = tk.optim.Adam { learning_rate = 1e-2, lazy = false },
        embedding_sharding = sharding }, mopts)
      return m, fit(m, data)
    end
    local mr, hr = run(nil)
    local ms, hs = run("row")
    for i = 1, STEPS do assert.equals(hr.steps[i].loss, hs.steps[i].loss, "step " .. i) end
    ms:gather_tables()
    C.same_bits(C.flat_weights(mr), C.flat_weights(ms), "replicated vs row-sharded")
  end)

  it("with a table shared by a one-hot and a list feature, and streaming logQ: the same bits", function()
    -- the query tower's favourite category (one-hot) and recent categories (a list) read
    -- one table (their domains share the name "category"): one fetch for both lookups
    local T = tk.Tags
    local schema = tk.Schema {
      tk.ColumnSchema("user_id", { tags = { T.USER_ID, T.CATEGORICAL }, int_domain = { max = 299 } }),
      tk.ColumnSchema("user_fav_category", { tags = { T.USER, T.CATEGORICAL },
        int_domain = { max = 49, name = "category" } }),
      tk.ColumnSchema("user_recent_categories", { tags = { T.USER, T.CATEGORICAL, T.LIST },
        int_domain = { max = 49, name = "category" }, value_count = { min = 1, max = 5 } }),
      tk.ColumnSchema("item_id", { tags = { T.ITEM_ID, T.CATEGORICAL }, int_domain = { max = 199 } }),
      tk.ColumnSchema("item_category", { tags = { T.ITEM, T.CATEGORICAL }, int_domain = { max = 49 } }),
    }
    local data = tk.data.synthetic(schema, STEPS * dist.size() * B, { seed = 2, clusters = 5 })
    local function run(sharding)
      tk.manual_seed(3)
      local m = tk.TwoTowerModel(schema, tk.MLPBlock({ 16, 8 }, { no_activation_last_layer = true }), {
        embedding_options = tk.EmbeddingOptions { embedding_dim_default = 8 }, post = "l2-norm", logq = "streaming" })
      m:compile { optimizer = tk.optim.Adam { learning_rate = 1e-2 }, embedding_sharding = sharding }
      return m, fit(m, data)
    end
    local mr, hr = run(nil)
    local ms, hs = run("row")
    local paths = {}
    for path in pairs(shards(ms)) do paths[#paths + 1] = path end
    table.sort(paths)
    -- one table for the two query features (named by the domain), one for the item's
    assert.same({ "item/embeddings/item_category", "item/embeddings/item_id", "query/embeddings/category",
      "query/embeddings/user_id" }, paths)
    for i = 1, STEPS do assert.equals(hr.steps[i].loss, hs.steps[i].loss, "step " .. i) end
    ms:gather_tables()
    C.same_bits(C.flat_weights(mr), C.flat_weights(ms), "replicated vs row-sharded")
  end)

  it("clip the global gradient norm: within 1e-6 of replicated, the ranks bitwise alike", function()
    -- the norm adds the shards' squares rank by rank, the replicated one row by row:
    -- the same value up to rounding, so the clipped updates agree to rounding
    local data = C.data(STEPS * dist.size() * B)
    local function run(sharding)
      local m = model(7, { clip_grad_norm = 0.05, embedding_sharding = sharding })
      return m, fit(m, data)
    end
    local mr, hr = run(nil)
    local ms, hs = run("row")
    for i = 1, STEPS do assert.is_true(math.abs(hr.steps[i].loss - hs.steps[i].loss) <= 1e-6, "step " .. i) end
    ms:gather_tables()
    local b = C.flat_weights(ms)
    local d = C.max_diff(C.flat_weights(mr), b)
    assert.is_true(d <= 1e-6, tostring(d))
    C.ranks_agree(b)
    -- and the clipping acts: unclipped training ends elsewhere
    local mu = model(7, { embedding_sharding = "row" })
    fit(mu, data)
    mu:gather_tables()
    local du = C.max_diff(C.flat_weights(mu), b)
    assert.is_true(du > 1e-3, tostring(du))
  end)

  it("keep the replicated weights identical on every rank", function()
    local m = model(7, { embedding_sharding = "row" })
    fit(m, (C.data(STEPS * dist.size() * B)))
    m:gather_tables()
    C.ranks_agree(C.flat_weights(m))
  end)

  it("evaluate as replicated tables do, and train on after it", function()
    local data = C.data(STEPS * dist.size() * B)
    local mr, ms = model(7), model(7, { embedding_sharding = "row" })
    fit(mr, data)
    fit(ms, data)
    local er = mr:evaluate(data, { item_corpus = data })
    local es = ms:evaluate(data, { item_corpus = data })
    for k, v in pairs(er) do assert.equals(v, es[k], k) end
    -- sharded again: a second fit runs, named_parameters refuses the shards
    fit(ms, data, { seed = 6 })
    assert.is_true(next(shards(ms)) ~= nil)
    local ok, err = pcall(ms.block.named_parameters, ms.block)
    assert.is_false(ok)
    assert.matches("is row-sharded over the ranks", err, 1, true)
    assert.matches("call model:gather_tables() on every rank first", err, 1, true)
  end)

  it("save one ordinary checkpoint, and load with any N into shards again", function()
    local dir = C.shared_dir("rowshard")
    local data = C.data(STEPS * dist.size() * B)
    local m = model(7, { embedding_sharding = "row" })
    fit(m, data)
    m:save(dir)
    m:gather_tables()
    local want = C.flat_weights(m)
    local l = tk.load(dir)
    C.same_bits(want, C.flat_weights(l), "saved vs loaded")
    -- resumed sharded and replicated: the same bits
    l:compile { optimizer = tk.optim.Adam { learning_rate = 1e-2 }, embedding_sharding = "row" }
    local l2 = tk.load(dir)
    l2:compile { optimizer = tk.optim.Adam { learning_rate = 1e-2 } }
    fit(l, data, { seed = 8 })
    fit(l2, data, { seed = 8 })
    l:gather_tables()
    C.same_bits(C.flat_weights(l2), C.flat_weights(l), "resumed replicated vs row-sharded")
    dist.barrier()
    if dist.rank() == 0 then os.execute("rm -rf '" .. dir .. "'") end
  end)

  it("reject an unknown scheme, fit{distributed = false} and train_step outside fit", function()
    local m = C.model(7)
    local ok, err = pcall(m.compile, m, { embedding_sharding = "columns" })
    assert.is_false(ok)
    assert.matches('embedding_sharding must be "replicated" or "row", got "columns"', err, 1, true)
    m:compile { embedding_sharding = "row" }
    ok, err = pcall(m.fit, m, C.data(64), { batch_size = 16, verbose = false, distributed = false })
    assert.is_false(ok)
    assert.matches("row-sharded", err, 1, true)
    -- a checkpoint of the shards would not be the model: the writer refuses it
    ok, err = pcall(tk.core.checkpoint_write, "/tmp/towerkit_rowshard_never_" .. dist.rank(), m.block, {})
    assert.is_false(ok)
    assert.matches("is row-sharded over the ranks", err, 1, true)
    ok, err = pcall(m.train_step, m, C.data(16))
    assert.is_false(ok)
    assert.matches("train it with fit", err, 1, true)
  end)

  it("free a freed model's shards (the registry keeps no table its model let go)", function()
    local function round()
      local m = model(7, { embedding_sharding = "row" })
      fit(m, (C.data(2 * B * dist.size())))
      m = nil
      collectgarbage()
      collectgarbage()
    end
    round()
    round() -- its sharding pruned what the specs before let go
    local held = tk.core.dist_tables_count() -- the last round's model's tables
    for _ = 1, 4 do round() end
    -- each round shards its model's tables and frees those of the round before: without
    -- the pruning the count grows by a model's tables a round
    assert.equals(held, tk.core.dist_tables_count())
    assert.is_true(held >= 3 and held <= 4, tostring(held))
  end)
end)
