--- W2 (bench/WORKLOAD.md): retrieval. The item tower of the W1 model exports 200,000 items
-- (TwoTowerModel:item_embeddings: forward in evaluation mode plus the L2 norm, a
-- 200,000 x 128 matrix), then 10,000 query vectors (128-d, L2-normalised, seeded) get
-- their exact top-100 by inner product (tk.core.topk, the function behind
-- evaluate and to_top_k_encoder). 2 threads; 1 warm-up, 3 runs; median and min-max.
-- The top-100 of the first queries is checked against a brute-force reference
-- (ties aside).
--   build/towerkit bench/w2_retrieval.lua [runs]
local dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local tk = require "towerkit"
local C = require "common"
C.print_blas()

local RUNS = tonumber(arg and arg[1]) or 3
local NI, NQ, K, D = 200000, 10000, 100, 128
tk.set_num_threads(C.THREADS)

local items = C.w2_items(NI) -- the catalogue (bench/common.lua)
local model = C.model(C.schema())

local function timed(fn)
  local t0 = tk.core.clock()
  local r = fn()
  return tk.core.clock() - t0, r
end

-- item export
local emb
timed(function() emb = model:item_embeddings(items) end) -- warm-up
local rates = {}
for run = 1, RUNS do
  local dt
  dt, emb = timed(function() return model:item_embeddings(items) end)
  rates[run] = NI / dt
end
local lo, hi = C.minmax(rates)
C.emit { workload = "W2", system = "towerkit", figure = "item_export", unit = "rows/s", median = C.median(rates),
  min = lo, max = hi, runs = rates, threads = C.THREADS, rows = NI }

-- exact top-100 over the exported matrix
local matrix = emb.embeddings
assert(matrix:size(1) == NI and matrix:size(2) == D)
local queries = tk.core.randn({ NQ, D }, 11):l2norm():clone()
local idx, scores
timed(function() idx, scores = tk.core.topk(queries, matrix, K) end) -- warm-up
local qps = {}
for run = 1, RUNS do
  local dt
  dt, idx = timed(function() return tk.core.topk(queries, matrix, K) end)
  qps[run] = NQ / dt
end
lo, hi = C.minmax(qps)

-- exactness: the first CHECK queries against a brute-force ranking of every item
local CHECK = 20
local sub = tk.core.index_select(queries, tk.core.arange(NQ), 0, CHECK)
local all = tk.no_grad(function() return sub:matmul(matrix, false, true):clone() end):totable()
local got = idx:totable()
local mismatches = 0
for q = 1, CHECK do
  local row = all[q]
  local order = {}
  for j = 1, NI do order[j] = j - 1 end
  -- partial: keep candidates at or above the returned 100th score, then sort them
  local thr = row[got[q][K] + 1]
  local cand = {}
  for j = 1, NI do if row[j] >= thr then cand[#cand + 1] = j - 1 end end
  table.sort(cand, function(a, b)
    if row[a + 1] ~= row[b + 1] then return row[a + 1] > row[b + 1] end
    return a < b
  end)
  for r = 1, K do
    local want, have = cand[r], got[q][r]
    if want ~= have and row[want + 1] ~= row[have + 1] then mismatches = mismatches + 1 end
  end
end
C.emit { workload = "W2", system = "towerkit", figure = "topk", unit = "queries/s", median = C.median(qps),
  min = lo, max = hi, runs = qps, threads = C.THREADS, queries = NQ, items = NI, k = K,
  checked_queries = CHECK, mismatches = mismatches }
C.emit { workload = "W2", system = "towerkit", figure = "peak_rss", unit = "MiB", median = C.peak_rss_mib() }
