-- The parallel export under `mpirun -np 2`: item_embeddings, query_embeddings,
-- to_top_k_encoder and evaluate embed a share of the rows on each rank. Each rank also
-- runs the same call with distributed = false to compare: the shards are cut where one
-- process cuts its batches, so the rows are embedded by the same batches of the same
-- code and the results are the same bits.
package.path = "tests/mpi/?.lua;" .. package.path
local tk = require "towerkit"
local core = tk.core
local dist = tk.distributed
local C = require "common"
local T = tk.Tags

-- A catalogue of 5,000 items (more than one block of 4096 rows, so both ranks hold a
-- shard at the default cut) for a model with its own schema.
local big_schema = tk.Schema {
  tk.ColumnSchema("user_id", { tags = { T.USER_ID, T.CATEGORICAL }, int_domain = { max = 99 } }),
  tk.ColumnSchema("user_activity", { tags = { T.USER, T.CONTINUOUS } }),
  tk.ColumnSchema("item_id", { tags = { T.ITEM_ID, T.CATEGORICAL }, int_domain = { max = 4999 } }),
  tk.ColumnSchema("item_category", { tags = { T.ITEM, T.CATEGORICAL }, int_domain = { max = 9 } }),
}

local function big_model()
  tk.manual_seed(11)
  local m = tk.TwoTowerModel(big_schema, tk.MLPBlock({ 16, 8 }, { no_activation_last_layer = true }),
    { embedding_options = tk.EmbeddingOptions { embedding_dim_default = 8 }, post = "l2-norm" })
  m:compile { optimizer = tk.optim.Adam { learning_rate = 1e-2 } }
  return m
end

-- n distinct items in a scrambled order (ids are not row numbers), each listed twice
-- (item_embeddings keeps the first occurrence of each)
local function big_items(n)
  local ids, cats = {}, {}
  for i = 1, n do
    ids[i] = (i * 7919) % 5000
    cats[i] = ids[i] % 10
  end
  for i = 1, n do ids[n + i], cats[n + i] = ids[i], cats[i] end
  return tk.data.Dataset({ item_id = ids, item_category = cats }, { schema = big_schema })
end

-- Both tensors hold the same values, bit for bit (float32 values are exact in Lua numbers).
local function same(what, want, got)
  local w, g = want:totable(), got:totable()
  assert.equals(#w, #g, what .. ": rows")
  for r = 1, #w do
    local a, b = w[r], g[r]
    if type(a) ~= "table" then a, b = { a }, { b } end
    for j = 1, #a do
      if a[j] ~= b[j] then error(("%s: row %d, column %d: %.9g alone, %.9g distributed"):format(what, r, j, a[j], b[j])) end
    end
  end
end

describe("the parallel export under mpirun -np 2", function()
  it("cuts the shards as tk_dist_shard_range at 4096, else at the batch size", function()
    assert.equals(4096, dist.export_align(1024))
    assert.equals(4096, dist.export_align(16))
    assert.equals(24, dist.export_align(24))
    assert.equals(8192, dist.export_align(8192))
    for _, n in ipairs { 0, 1, 4095, 4096, 4097, 5000, 8192, 20000 } do
      for r = 0, 2 do
        local a, b = dist.export_range(n, 4096, r, 3)
        local c, d = core.dist_shard_range(n, r, 3)
        assert.same({ c, d }, { a, b })
      end
    end
    assert.same({ 0, 48 }, { dist.export_range(60, 24, 0, 2) })
    assert.same({ 48, 12 }, { dist.export_range(60, 24, 1, 2) })
    -- one C split for both (tk_dist_shard_range with an align), which checks it
    assert.same({ 48, 12 }, { core.dist_shard_range(60, 1, 2, 24) })
    assert.equals(4096, core.TOPK_ITEM_BLOCK)
    local ok, err = pcall(dist.export_range, 60, 0, 0, 2)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("dist_shard_range: align must be >= 1, got 0", 1, true), err)
  end)

  it("item_embeddings: every rank gets one process's result, bit for bit", function()
    assert.equals(2, dist.size())
    local m, items = big_model(), big_items(5000)
    local stats0 = dist.stats().bytes_sent
    local e = m:item_embeddings(items)
    -- rank 0 embedded 4096 rows and sent them, rank 1 904 (8 floats a row)
    local sent = dist.stats().bytes_sent - stats0
    assert.is_true(sent >= (dist.rank() == 0 and 4096 or 904) * 8 * 4, "bytes sent: " .. sent)
    local alone = m:item_embeddings(items, { distributed = false })
    assert.same({ 5000, 8 }, e.embeddings:shape())
    same("ids", alone.ids, e.ids)
    same("embeddings", alone.embeddings, e.embeddings)
    -- small catalogues: a batch size that does not divide 4096 cuts at its multiples
    -- (of about 60 items, rank 1 gets the last few), one that does leaves rank 1
    -- without rows
    local data = C.data(400)
    local small = data:unique_by("item_id")
    local m2 = C.model(5)
    for _, bs in ipairs { 24, 16, 7 } do
      local d = m2:item_embeddings(small, { batch_size = bs })
      local a = m2:item_embeddings(small, { batch_size = bs, distributed = false })
      same("ids, batch_size " .. bs, a.ids, d.ids)
      same("embeddings, batch_size " .. bs, a.embeddings, d.embeddings)
    end
  end)

  it("item_embeddings{shard = true}: this rank's rows, ready for a ShardedIndex", function()
    local m, items = big_model(), big_items(5000)
    local s = m:item_embeddings(items, { shard = true })
    local lo, count = dist.shard_range(5000)
    assert.equals(lo, s.offset)
    assert.equals(5000, s.size)
    assert.same({ count, 8 }, s.embeddings:shape())
    local alone = m:item_embeddings(items, { distributed = false })
    local all = core.arange(5000)
    same("shard ids", core.index_select(alone.ids, all, lo, count), s.ids)
    same("shard embeddings", core.index_select(alone.embeddings, all, lo, count), s.embeddings)
    -- the sharded top k is tk_topk's on the whole catalogue (cut at 4096: bitwise)
    local q = m:query_embeddings(C.data(40, 8), { distributed = false }).embeddings
    local ix = dist.ShardedIndex(s.ids, s.embeddings)
    local ids, scores = ix:query(q, 10)
    local idx, want = core.topk(q, alone.embeddings, 10)
    same("top-k ids", core.map_ids(idx, alone.ids), ids)
    same("top-k scores", want, scores)
    -- a rank without rows gets an empty shard of the right width
    local m2, small = C.model(5), C.data(400):unique_by("item_id")
    local n = small:size()
    local e = m2:item_embeddings(small, { shard = true })
    assert.equals(dist.rank() == 0 and n or 0, e.embeddings:shape()[1])
    assert.equals(8, e.embeddings:shape()[2])
    assert.equals(dist.rank() == 0 and 0 or n, e.offset)
    -- one process: the shard is everything
    local whole = m2:item_embeddings(small, { shard = true, distributed = false })
    assert.equals(0, whole.offset)
    assert.equals(n, whole.size)
  end)

  it("query_embeddings and to_top_k_encoder: one process's results on every rank", function()
    local m = C.model(6)
    local data = C.data(900, 5)
    local a = m:query_embeddings(data, { batch_size = 64 })
    local b = m:query_embeddings(data, { batch_size = 64, distributed = false })
    same("query ids", b.ids, a.ids)
    same("query embeddings", b.embeddings, a.embeddings)
    local items = data:unique_by("item_id")
    local enc = m:to_top_k_encoder(items, { k = 5 })
    local enc1 = m:to_top_k_encoder(items, { k = 5, distributed = false })
    local batch = data:rows(core.arange(data:size()), 0, 30)
    local i1, s1 = enc:query(batch)
    local i2, s2 = enc1:query(batch)
    same("encoder ids", i2, i1)
    same("encoder scores", s2, s1)
  end)

  it("a rank that fails on its shard makes every rank raise, naming it", function()
    local m, items = big_model(), big_items(5000)
    -- rank 1's rows (from 4096 on) get a category outside the table on rank 1 only
    local cats = items:column("item_category"):totable()
    if dist.rank() == 1 then cats[4500] = 77 end
    local bad = tk.data.Dataset({ item_id = items:column("item_id"), item_category = cats }, { schema = big_schema })
    local ok, err = pcall(m.item_embeddings, m, bad)
    assert.is_false(ok)
    if dist.rank() == 1 then
      assert.truthy(tostring(err):find("77", 1, true), tostring(err))
    else
      assert.truthy(tostring(err):find("item_embeddings: rank 1 failed to embed its shard", 1, true), tostring(err))
    end
    -- and the ranks go on together
    local e = m:item_embeddings(items)
    assert.same({ 5000, 8 }, e.embeddings:shape())
    local ok2, err2 = pcall(m.item_embeddings, m, items, { batch_size = 0 })
    assert.is_false(ok2)
    assert.truthy(tostring(err2):find("batch_size must be a positive integer", 1, true), tostring(err2))
  end)
end)
