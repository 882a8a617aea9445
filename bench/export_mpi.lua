--- W2's item export (bench/WORKLOAD.md: the W1 item tower over 200,000 items) under MPI:
-- TwoTowerModel:item_embeddings on N ranks, one thread each, every rank embedding its
-- shard of the catalogue and the shards all-gathered (what evaluate and
-- to_top_k_encoder now do), against one process embedding all of it
-- (distributed = false, on each rank at once: the work every rank did before).
--   OPENBLAS_NUM_THREADS=1 mpirun -np N build/towerkit bench/export_mpi.lua [runs] [items]
-- 1 warm-up, then `runs` (default 3) of each; rank 0 prints JSON lines: exported rows/s
-- (median, min, max), the seconds inside MPI per export (the all-gather, waiting for the
-- slower rank included) and the bytes this rank sent. Also checks that the two results
-- are the same bits.
local dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local tk = require "towerkit"
local C = require "common"

local RUNS = tonumber(arg and arg[1]) or 3
local NI = tonumber(arg and arg[2]) or 200000
local dist = tk.distributed
local N = dist.available() and dist.size() or 1
local rank = N > 1 and dist.rank() or 0
tk.set_num_threads(1)

local items = C.w2_items(NI) -- the catalogue of w2_retrieval.lua
local model = C.model(C.schema())

local function measure(opts)
  model:item_embeddings(items, opts) -- warm-up
  local rates, mpi, bytes, e = {}, {}, {}, nil
  for run = 1, RUNS do
    if N > 1 then
      dist.barrier()
      dist.reset_stats()
    end
    local t0 = tk.core.clock()
    e = model:item_embeddings(items, opts)
    local dt = tk.core.clock() - t0
    local st = N > 1 and dist.stats() or { seconds = 0, bytes_sent = 0 }
    rates[run], mpi[run], bytes[run] = NI / dt, st.seconds, st.bytes_sent
  end
  return rates, C.median(mpi), C.median(bytes), e
end

local shared_rates, shared_mpi, shared_bytes, shared = measure({})
local alone_rates, _, _, alone = measure({ distributed = false })
-- the same rows by the same batches: the same bits
local a, b = alone.embeddings:totable(), shared.embeddings:totable()
local same = #a == #b
for r = 1, #a, 997 do
  for j = 1, #a[r] do same = same and a[r][j] == b[r][j] end
end
if rank == 0 then
  for _, x in ipairs { { "item_export_sharded", shared_rates, shared_mpi, shared_bytes },
    { "item_export_alone", alone_rates, 0, 0 } } do
    local lo, hi = C.minmax(x[2])
    C.emit { workload = "W2", system = "towerkit-mpi", figure = x[1], unit = "rows/s", median = C.median(x[2]),
      min = lo, max = hi, runs = x[2], ranks = N, threads_per_rank = 1, rows = NI, seconds_in_mpi = x[3],
      bytes_sent = x[4], same_bits = same }
  end
end
