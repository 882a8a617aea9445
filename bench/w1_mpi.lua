--- W1 (bench/WORKLOAD.md) data-parallel under MPI: the W1 model trained by fit on N
-- ranks, one thread each (tk.set_num_threads(1); run with OPENBLAS_NUM_THREADS=1).
--   OPENBLAS_NUM_THREADS=1 mpirun -np N build/towerkit bench/w1_mpi.lua [B_rank] [steps] [tables] [scale]
-- B_rank (default 512) rows a rank a step: the global batch is N x B_rank. 3 warm-up
-- steps, then `steps` (default 20) timed. tables: "replicated" (default) or "row"
-- (compile{embedding_sharding = "row"}: each rank holds 1/N of every table's rows);
-- scale (default 1): 10 gives W1's user, item and brand tables 10x the rows (3.05M rows
-- in all instead of 307k) and draws their ids from the larger spaces. Rank 0 prints
-- JSON lines: global examples/s, bytes each rank sent per step (tk.distributed.stats:
-- the payload handed to MPI), the share of the step time spent inside MPI calls
-- (waiting for the slower rank included), and the memory a rank holds for the tables
-- and Adam's two moments of them (bytes of rank 0's tensors; peak_rss_mb the process's
-- peak resident size). With N = 1 the one-process path runs (the side-by-side trainer)
-- and nothing is exchanged.
local dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local tk = require "towerkit"
local C = require "common"

local BR = tonumber(arg and arg[1]) or 512
local STEPS = tonumber(arg and arg[2]) or 20
local TABLES = arg and arg[3] or "replicated"
local SCALE = tonumber(arg and arg[4]) or 1
local WARMUP = 3
local dist = tk.distributed
local N = dist.available() and dist.size() or 1
local rank = N > 1 and dist.rank() or 0

tk.set_num_threads(1)
local schema = C.schema(SCALE)
local model = C.model(schema, { embedding_sharding = TABLES })
local fit_opts = { batch_size = BR, epochs = 1, shuffle = false, verbose = false }
model:fit(C.w1_data(WARMUP * N * BR, 7, SCALE), fit_opts)
local data = C.w1_data(STEPS * N * BR, 1, SCALE)
if N > 1 then
  dist.barrier()
  dist.reset_stats()
end
local t0 = tk.core.clock()
local h = model:fit(data, fit_opts)
local dt = tk.core.clock() - t0
local st = N > 1 and dist.stats() or { bytes_sent = 0, seconds = 0, calls = 0 }
-- the tables' rows this rank holds (the shards' with row sharding), and Adam's m and v
local table_bytes, table_rows = 0, 0
for _, p in ipairs(model.block:parameters(true, true, true)) do
  if p[1]:find("/embeddings/", 1, true) then
    table_bytes = table_bytes + 3 * 4 * p[2]:numel()
    table_rows = table_rows + p[2]:shape()[1]
  end
end
local function peak_rss_mb()
  local f = io.open("/proc/self/status")
  local s = f and f:read("*a") or ""
  if f then f:close() end
  return (tonumber(s:match("VmHWM:%s*(%d+)")) or 0) / 1024
end
local workload = SCALE == 1 and "W1" or ("W1x%d"):format(SCALE)
if rank == 0 then
  local common = { ranks = N, tables = TABLES, scale = SCALE }
  local function emit(t)
    for k, v in pairs(common) do t[k] = v end
    C.emit(t)
  end
  emit { workload = workload, system = "towerkit-mpi", figure = "train", unit = "examples/s",
    median = STEPS * N * BR / dt, batch_per_rank = BR, global_batch = N * BR, steps = STEPS,
    threads_per_rank = 1, loss = h.epochs[1].loss }
  emit { workload = workload, system = "towerkit-mpi", figure = "bytes_sent_per_step", unit = "bytes",
    median = st.bytes_sent / STEPS, calls_per_step = st.calls / STEPS }
  emit { workload = workload, system = "towerkit-mpi", figure = "communication_share", unit = "fraction",
    median = st.seconds / dt, seconds_in_mpi = st.seconds, seconds = dt }
  emit { workload = workload, system = "towerkit-mpi", figure = "table_memory_per_rank", unit = "bytes",
    median = table_bytes, table_rows = table_rows, peak_rss_mb = peak_rss_mb() }
end
