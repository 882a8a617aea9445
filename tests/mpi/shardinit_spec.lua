-- Tables built row-sharded under `mpirun -np 2` (TwoTowerModel{embedding_sharding =
-- "row"}, EmbeddingOptions{embedding_sharding = "row"}): each rank makes only its rows,
-- and they are the rows of the table a whole build makes; training, evaluating,
-- exporting and saving give the bits of a model built whole and sharded at compile.
package.path = "tests/mpi/?.lua;" .. package.path
local tk = require "towerkit"
local C = require "common"
local dist = tk.distributed

local B, STEPS = 16, 20

local fit, shards = C.fit, C.shards

-- C.model built whole and sharded at compile, or built sharded (compile implied).
local function whole(seed, opts) return C.model(seed, opts, { embedding_sharding = "row" }) end
local function built(seed, opts)
  local o = { embedding_sharding = "row" }
  for k, v in pairs(opts or {}) do o[k] = v end
  return C.model(seed, o) -- C.model compiles without the option: row-sharded still
end

local function same_shards(a, b)
  local n = 0
  for path, s in pairs(a) do
    local t = b[path]
    assert.is_truthy(t, path)
    assert.same({ s.lo, s.count, s.rows }, { t.lo, t.count, t.rows }, path)
    assert.same(s.tensor:totable(), t.tensor:totable(), path) -- every value, bit for bit (equal floats)
    n = n + 1
  end
  for path in pairs(b) do assert.is_truthy(a[path], path) end
  return n
end

describe("tables built row-sharded under mpirun -np 2", function()
  it("hold from the start this rank's rows of the table a whole build makes", function()
    local mb = built(7)
    local r, N = dist.rank(), dist.size()
    for path, s in pairs(shards(mb)) do
      assert.equals(math.floor(r * s.rows / N), s.lo, path)
      assert.equals(math.floor((r + 1) * s.rows / N) - s.lo, s.count, path)
      assert.equals(s.count, s.tensor:shape()[1], path) -- the parameter is the shard
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
    assert.equals(3, same_shards(shards(mw), shards(mb)))
    local ew = mw:evaluate(data, { item_corpus = data })
    local eb = mb:evaluate(data, { item_corpus = data })
    for k, v in pairs(ew) do assert.equals(v, eb[k], k) end
    local xw, xb = mw:item_embeddings(data), mb:item_embeddings(data)
    assert.same(xw.ids:totable(), xb.ids:totable())
    assert.same(xw.embeddings:totable(), xb.embeddings:totable())
    local dir = C.shared_dir("shardinit")
    mb:save(dir)
    mw:gather_tables()
    local want = C.flat_weights(mw)
    C.same_bits(want, C.flat_weights(tk.load(dir)), "built sharded, saved vs built whole")
    mb:gather_tables()
    C.same_bits(want, C.flat_weights(mb), "built sharded vs built whole")
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

  it("refuse to shard a table built as another rank's part, or for another number of ranks", function()
    -- tk_dist_tables_shard adopts a table built as a part only when it is this rank's
    -- part of size parts; the check is local (no collective), so every rank fails alike
    local r = dist.rank()
    for _, part in ipairs { { 1 - r, 2 }, { r, 3 } } do
      local emb = tk.core.embeddings("emb")
      emb:set_row_part(part[1], part[2])
      emb:add_feature("user_id", { table = "user_id", cardinality = 100, dim = 4 })
      local ok, e = pcall(tk.core.dist_tables_shard, emb)
      assert.is_false(ok)
      assert.truthy(tostring(e):find(("table 'user_id' of block 'emb' was built as part %d of %d of its rows; this is "
        .. "rank %d of 2 (build the model under the same mpirun)"):format(part[1], part[2], r), 1, true), tostring(e))
    end
  end)
end)
