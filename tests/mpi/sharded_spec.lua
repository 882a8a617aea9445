-- Sharded retrieval under `mpirun -np 2`: each rank holds a shard of a catalogue, and
-- ShardedIndex:query gives what tk_topk gives on the whole catalogue, which every rank
-- also computes here to compare.
package.path = "tests/mpi/?.lua;" .. package.path
local tk = require "towerkit"
local core = tk.core
local dist = tk.distributed

-- ids: a permutation of the rows, so that ties broken by id would differ from ties
-- broken by index
local function ids_of(n)
  local ids = {}
  for i = 1, n do ids[i] = (i * 7919) % 100003 end
  return ids
end

-- rows [lo, lo + count) of t
local function rows(t, lo, count)
  local n = t:shape()[1]
  return core.index_select(t, core.arange(n), lo, count)
end

-- The whole catalogue's top k on this rank (tk_topk), as ids, scores and indices, with
-- exclusions by id (the ids are unique: id -> its row).
local function whole(q, items, ids, k, exclude)
  local eo, ex
  if exclude then
    local row = {}
    for r, id in ipairs(ids) do row[id] = r - 1 end
    local off, list = { 0 }, {}
    for r = 1, q:shape()[1] do
      for _, id in ipairs(exclude[r] or {}) do list[#list + 1] = row[id] end
      off[r + 1] = #list
    end
    eo, ex = core.tensor(off, "int64"), core.tensor(#list > 0 and list or { 0 }, "int64")
  end
  local idx, scores = core.topk(q, items, k, eo, ex)
  return core.map_ids(idx, core.tensor(ids, "int64")):totable(), scores:totable(), idx:totable()
end

-- Every entry equal, bit for bit (Lua numbers hold float32 values exactly).
local function same(what, want, got)
  for r = 1, #want do
    for j = 1, #want[r] do
      if want[r][j] ~= got[r][j] then
        error(("%s: query %d, rank %d of the top k: %.9g from tk_topk, %.9g sharded"):format(what, r, j, want[r][j],
          got[r][j]))
      end
    end
  end
end

local function check(q, items, ids, k, lo, count, exclude)
  local ix = dist.ShardedIndex(core.tensor({ unpack(ids, lo + 1, lo + count) }, "int64"), rows(items, lo, count))
  assert.equals(#ids, ix.size)
  assert.equals(lo, ix.offset)
  local gi, gs, gx = ix:query(q, k, exclude)
  local wi, ws, wx = whole(q, items, ids, k, exclude)
  same("ids", wi, gi:totable())
  same("scores", ws, gs:totable())
  same("indices", wx, gx:totable())
  -- the same on both ranks
  local all = dist.allgather(gi:reshape({ gi:numel() })):totable()
  for i = 1, gi:numel() do assert.equals(all[i], all[gi:numel() + i]) end
  return gi:totable()
end

describe("ShardedIndex under mpirun -np 2", function()
  it("shard_range cuts at multiples of 4096, in rank order, covering the catalogue", function()
    assert.same({ 0, 8192 }, { dist.shard_range(10000, 0, 2) })
    assert.same({ 8192, 1808 }, { dist.shard_range(10000, 1, 2) })
    assert.same({ 0, 100 }, { dist.shard_range(100, 0, 2) })
    assert.same({ 100, 0 }, { dist.shard_range(100, 1, 2) })
    local lo, count = dist.shard_range(10000)
    assert.equals(dist.rank() == 0 and 0 or 8192, lo)
  end)

  it("equals tk_topk on the whole catalogue bit for bit (shards cut by shard_range, 600 queries)", function()
    tk.manual_seed(21) -- the same catalogue and queries on every rank
    local n, D, k = 4096 + 1500, 24, 10
    local items, q = tk.randn({ n, D }), tk.randn({ 600, D })
    local ids = ids_of(n)
    local lo, count = dist.shard_range(n)
    local first = check(q, items, ids, k, lo, count)
    -- with exclusions: each query's best item of rank 1's shard and of rank 0's
    local exclude = {}
    for r = 1, 600 do exclude[r] = r % 3 == 0 and {} or { first[r][1], first[r][2], ids[n] } end
    local got = check(q, items, ids, k, lo, count, exclude)
    assert.are_not.equal(first[1][1], got[1][1])
  end)

  it("breaks ties by the lower global index, as tk_topk, with any split", function()
    -- integer-valued embeddings: every score is an exact sum whatever the sgemm blocking,
    -- and most are tied
    local seed = 5
    local function small_ints(r, c) -- in [-2, 2], from a fixed generator: the same on every rank
      local t = {}
      for i = 1, r do
        t[i] = {}
        for j = 1, c do
          seed = (seed * 1103515245 + 12345) % 2147483648
          t[i][j] = math.floor(seed / 65536) % 5 - 2
        end
      end
      return tk.tensor(t)
    end
    local n, D, k = 301, 4, 25
    local items, q = small_ints(n, D), small_ints(40, D)
    local ids = ids_of(n)
    local cut = 137 -- not a multiple of 4096: the scores are exact anyway
    local lo, count = dist.rank() == 0 and 0 or cut, dist.rank() == 0 and cut or n - cut
    local got = check(q, items, ids, k, lo, count)
    local _, scores = whole(q, items, ids, k)
    local ties = 0
    for r = 1, #scores do for j = 2, k do if scores[r][j] == scores[r][j - 1] then ties = ties + 1 end end end
    assert.is_true(ties > 100, "the data should have many ties, got " .. ties)
    assert.equals(k, #got[1])
  end)

  it("pads with -1 / -inf past the catalogue's size, with an empty shard on one rank", function()
    tk.manual_seed(8)
    local n, D = 6, 4
    local items, q = tk.randn({ n, D }), tk.randn({ 3, D })
    local ids = ids_of(n)
    local lo, count = dist.shard_range(n) -- rank 0 holds all 6, rank 1 none
    assert.equals(dist.rank() == 0 and 6 or 0, count)
    local got = check(q, items, ids, 8, lo, count)
    assert.equals(-1, got[1][7])
    assert.equals(-1, got[3][8])
  end)

  it("queries in 3 collectives: the counts, the (index, id) pairs, the scores", function()
    tk.manual_seed(8)
    local n = 40
    local lo, count = dist.shard_range(n)
    local ix = dist.ShardedIndex(core.tensor({ unpack(ids_of(n), lo + 1, lo + count) }, "int64"),
      rows(tk.randn({ n, 4 }), lo, count))
    local q = tk.randn({ 3, 4 })
    dist.barrier()
    dist.reset_stats()
    ix:query(q, 5)
    assert.equals(3, dist.stats().calls)
  end)

  it("a shard of another width, or a bad shard, on one rank is an error on every rank, not a hang", function()
    -- the shapes are exchanged before any check can fail on one rank only
    local ok, err = pcall(dist.ShardedIndex, ids_of(10), tk.randn({ 10, 4 + dist.rank() }))
    assert.is_false(ok)
    assert.truthy(tostring(err):find("rank 1 has embeddings of width 5, rank 0 of 4: every shard must have the same "
      .. "width", 1, true), err)
    -- rank 1's ids and embeddings disagree: it says why, rank 0 names it
    ok, err = pcall(dist.ShardedIndex, ids_of(10), tk.randn({ dist.rank() == 1 and 9 or 10, 4 }))
    assert.is_false(ok)
    local want = dist.rank() == 1 and "ids int64 [n] and embeddings float32 [n, D] expected"
      or "rank 1's shard is bad (see its message)"
    assert.truthy(tostring(err):find(want, 1, true), err)
    dist.barrier()
  end)

  it("serves: rank 0 leads batches, the others follow, the answer is the query's", function()
    tk.manual_seed(8)
    local n = 40
    local lo, count = dist.shard_range(n)
    local ix = dist.ShardedIndex(core.tensor({ unpack(ids_of(n), lo + 1, lo + count) }, "int64"),
      rows(tk.randn({ n, 4 }), lo, count))
    local q = tk.randn({ 3, 4 })
    local h = ix.handle
    -- the wrong role is refused at once, before anything is sent
    local ok, err
    if dist.rank() == 0 then
      ok, err = pcall(core.sharded_serve_follow, h)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("sharded_serve_follow: only ranks other than 0 follow", 1, true), err)
    else
      ok, err = pcall(core.sharded_serve_query, h, q, 5)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("sharded_serve_query: only rank 0 leads", 1, true), err)
      ok, err = pcall(core.sharded_serve_stop, h)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("sharded_serve_stop: only rank 0 leads", 1, true), err)
    end
    local got
    if dist.rank() == 0 then
      got = { core.sharded_serve_query(h, q, 5) }
      core.sharded_serve_stop(h)
    else
      core.sharded_serve_follow(h)
    end
    local want = { ix:query(q, 5) }
    if dist.rank() == 0 then
      same("served ids", want[1]:totable(), got[1]:totable())
      same("served scores", want[2]:totable(), got[2]:totable())
    end
  end)

  it("different queries on the ranks are an error on every rank, not a hang", function()
    local items = tk.randn({ 10, 4 })
    local ix = dist.ShardedIndex(ids_of(10), items)
    local ok, err = pcall(ix.query, ix, tk.randn({ dist.rank() + 1, 4 }), 3)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("every rank must pass the same queries", 1, true), err)
    dist.barrier()
  end)
end)
