-- Tables built row-sharded under `mpirun -np 2` (TwoTowerModel{embedding_sharding =
-- "row"}, EmbeddingOptions{embedding_sharding = "row"}): each rank makes only its rows,
-- and they are the rows of the table a whole build makes; training, evaluating,
-- exporting and saving give the bits of a model built whole and sharded at compile.
package.path = "tests/mpi/?.lua;" .. package.path
local tk = require "towerkit"
local C = require "common"
local dist = tk.distributed

local B, STEPS = 16, 20

local function fit(m, data, opts)
  local o = { batch_size = B, epochs = 1, verbose = false, seed = 5 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return m:fit(data, o)
end

-- C.model built whole and sharded at compile, or built sharded (compile implied).
local function whole(seed, opts)
  local m = C.model(seed, opts)
  m:compile { optimizer = tk.optim.Adam { learning_rate = 1e-2 }, embedding_sharding = "row" }
  return m
end
local function built(seed, opts)
  local o = { embedding_sharding = "row" }
  for k, v in pairs(opts or {}) do o[k] = v end
  return C.model(seed, o) -- C.model compiles without the option: row-sharded still
end

-- The shards of a model: {path = {lo, count, rows, values}}.
local function shards(m)
  local out = {}
  for _, p in ipairs(m.block:parameters(true, true, true)) do
    local lo, count, rows = tk.core.dist_table_info(p[2])
    if lo then out[p[1]] = { lo, count, rows, p[2]:totable() } end
  end
  return out
end

local function same_shards(a, b)
  local n = 0
  for path, s in pairs(a) do
    local t = b[path]
    assert.is_truthy(t, path)
    for i = 1, 3 do assert.equals(s[i], t[i], path) end
    assert.same(s[4], t[4], path) -- every value, bit for bit (equal floats)
    n = n + 1
  end
  for path in pairs(b) do assert.is_truthy(a[path], path) end
  return n
end

local function first_diff(a, b)
  if #a ~= #b then return 0 end
  for i = 1, #a do
    if a[i] ~= b[i] then return i end
  end
  return nil
end

describe("tables built row-sharded under mpirun -np 2", function()
  it("hold from the start this rank's rows of the table a whole build makes", function()
    local mb = built(7)
    local r, N = dist.rank(), dist.size()
    for path, s in pairs(shards(mb)) do
      assert.equals(math.floor(r * s[3] / N), s[1], path)
      assert.equals(math.floor((r + 1) * s[3] / N) - s[1], s[2], path)
      assert.equals(s[2], #s[4], path) -- the parameter is the shard
    end
    assert.equals(3, same_shards(shards(whole(7)), shards(mb)))
  end)

  it("draw every initializer's stream as the whole table does (truncated normal rejects draws)", function()
    for _, init in ipairs { "truncated_normal", "random_uniform", "random_normal", "glorot_normal", "he_uniform",
      "lecun_normal", "ones" } do
      local eo = tk.EmbeddingOptions { embedding_dim_default = 8, embeddings_initializers = init }
      local n = same_shards(shards(whole(3, { embedding_options = eo })),
        shards(built(3, { embedding_options = eo })))
      assert.equals(3, n, init)
    end
  end)

  it("train, evaluate, export and save to the bits of a model built whole and sharded at compile", function()
    local data = C.data(STEPS * dist.size() * B)
    local mw, mb = whole(7), built(7)
    assert.equals("row", mb.sharding)
    local hw, hb = fit(mw, data), fit(mb, data)
    for i = 1, STEPS do assert.equals(hw.steps[i].loss, hb.steps[i].loss, "step " .. i) end
    same_shards(shards(mw), shards(mb))
    local ew = mw:evaluate(data, { item_corpus = data })
    local eb = mb:evaluate(data, { item_corpus = data })
    for k, v in pairs(ew) do assert.equals(v, eb[k], k) end
    local xw, xb = mw:item_embeddings(data), mb:item_embeddings(data)
    assert.same(xw.ids:totable(), xb.ids:totable())
    assert.same(xw.embeddings:totable(), xb.embeddings:totable())
    local dir = (os.getenv("TK_MPI_TMP") or "/tmp") .. "/towerkit_shardinit_ckpt"
    mb:save(dir)
    mw:gather_tables()
    local want = C.flat_weights(mw)
    assert.is_nil(first_diff(want, C.flat_weights(tk.load(dir))))
    mb:gather_tables()
    assert.is_nil(first_diff(want, C.flat_weights(mb)))
    -- trains on after the gathers (sharded again by the step)
    fit(mb, data, { seed = 6 })
    assert.is_true(next(shards(mb)) ~= nil)
    dist.barrier()
    if dist.rank() == 0 then os.execute("rm -rf '" .. dir .. "'") end
  end)

  it("reject conflicting settings and initializer functions with clear errors", function()
    local tower = tk.MLPBlock({ 16, 8 })
    local function err(fn, want)
      local ok, e = pcall(fn)
      assert.is_false(ok)
      assert.truthy(tostring(e):find(want, 1, true), tostring(e))
    end
    local mb = built(7)
    err(function() mb:compile { embedding_sharding = "replicated" } end,
      "this model's tables were built row-sharded")
    mb:compile { embedding_sharding = "row" }
    err(function()
      tk.TwoTowerModel(C.schema, tower, { embedding_sharding = "row",
        embedding_options = { embedding_sharding = "replicated" } })
    end, 'embedding_sharding = "row" but embedding_options.embedding_sharding = "replicated"')
    err(function() tk.TwoTowerModel(mb.block, { embedding_sharding = "row" }) end,
      "embedding_sharding applies when the model builds its block from a schema")
    err(function() tk.TwoTowerModel(C.schema, tower, { embedding_sharding = "rows" }) end,
      'embedding_sharding must be "replicated" or "row", got "rows"')
    err(function() tk.EmbeddingOptions { embedding_sharding = "column" } end,
      'embedding_sharding must be "replicated" or "row", got "column"')
    err(function()
      tk.TwoTowerModel(C.schema, tower, { embedding_sharding = "row",
        embedding_options = { embeddings_initializers = function(shape) return tk.zeros(shape) end } })
    end, "has an initializer function, which fills a whole table")
  end)
end)
