--- W1 (bench/WORKLOAD.md) data-parallel under MPI: the W1 model trained by fit on N
-- ranks, one thread each (tk.set_num_threads(1); run with OPENBLAS_NUM_THREADS=1).
--   OPENBLAS_NUM_THREADS=1 mpirun -np N build/towerkit bench/w1_mpi.lua [B_rank] [steps] [name=value ...]
-- B_rank (default 512) rows a rank a step: the global batch is N x B_rank. 3 warm-up
-- steps, then R runs of `steps` (default 20) timed. The settings, as name=value:
--   mode: how the dense gradients are summed (fit's allreduce option): "one" (one
--     bucket, after backward), "buckets" (buckets of bucket_bytes, after backward),
--     "overlap" (buckets of bucket_bytes started during backward), "default" (fit's
--     defaults, the default); bucket_bytes defaults to fit's;
--   tables: "replicated" (default) or "row" (compile{embedding_sharding = "row"}: each
--     rank holds 1/N of every table's rows);
--   build: "whole" (default: the model is built with whole tables, which compile shards
--     with tables=row) or "sharded" (TwoTowerModel{embedding_sharding = "row"}: each rank
--     builds its rows of every table only; needs tables=row);
--   scale (default 1): 10 gives W1's user, item and brand tables 10x the rows (3.05M
--     rows in all instead of 307k) and draws their ids from the larger spaces.
-- Environment: TK_BENCH_THREADS=T gives each rank T threads instead of one (with more
-- than one thread a rank pass mpirun `--bind-to none`: it binds each of up to two ranks
-- to one core); TK_BENCH_RUNS=R, default 3: R timed fits, each figure their median, min
-- and max; TK_BENCH_SIDE_BY_SIDE=0: one process without the side-by-side trainer.
-- Rank 0 prints JSON lines: global examples/s, bytes each rank sent per step
-- (tk.distributed.stats: the payload handed to MPI), the milliseconds a step spent on
-- the dense gradients after backward (the part of their exchange backward did not
-- hide), the share of the step time spent inside MPI calls (waiting for the slower rank
-- included), and the memory a rank holds for the tables and Adam's two moments of them
-- (bytes of rank 0's tensors; peak_rss_mb the process's peak resident size). With N = 1
-- the one-process path runs (the side-by-side trainer) and nothing is exchanged.
local dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local tk = require "towerkit"
local C = require "common"

local BR = tonumber(arg and arg[1]) or 512
local STEPS = tonumber(arg and arg[2]) or 20
local SET = { mode = "default", tables = "replicated", scale = "1", build = "whole" }
for i = 3, arg and #arg or 0 do
  local k, v = arg[i]:match("^([%w_]+)=(.*)$")
  if not k or (SET[k] == nil and k ~= "bucket_bytes") then
    error("w1_mpi.lua: settings are mode=, bucket_bytes=, tables=, build= and scale=, got " .. arg[i])
  end
  SET[k] = v
end
local MODE, TABLES, SCALE, BUILD = SET.mode, SET.tables, tonumber(SET.scale), SET.build
if BUILD ~= "whole" and BUILD ~= "sharded" then error("w1_mpi.lua: build must be whole or sharded, got " .. BUILD) end
if BUILD == "sharded" and TABLES ~= "row" then error("w1_mpi.lua: build=sharded needs tables=row") end
local BUCKET = tonumber(SET.bucket_bytes)
local WARMUP = 3
local ALLREDUCE = ({ one = { bucket_bytes = 0, overlap = false }, buckets = { bucket_bytes = BUCKET, overlap = false },
  overlap = { bucket_bytes = BUCKET, overlap = true }, default = {} })[MODE]
if not ALLREDUCE then error("w1_mpi.lua: mode must be one, buckets, overlap or default, got " .. tostring(MODE)) end
local dist = tk.distributed
local N = dist.available() and dist.size() or 1
local rank = N > 1 and dist.rank() or 0

local THREADS = tonumber(os.getenv("TK_BENCH_THREADS") or "1")
local RUNS = tonumber(os.getenv("TK_BENCH_RUNS") or "3")
tk.set_num_threads(THREADS)
local schema = C.schema(SCALE)
local model = C.model(schema, { embedding_sharding = TABLES },
  BUILD == "sharded" and { embedding_sharding = "row" } or nil)
-- TK_BENCH_SIDE_BY_SIDE=0: one process trains in one context (the path every rank runs
-- under mpirun), not with the side-by-side trainer
if os.getenv("TK_BENCH_SIDE_BY_SIDE") == "0" then model.side_by_side = false end
local fit_opts = { batch_size = BR, epochs = 1, shuffle = false, verbose = false, allreduce = ALLREDUCE }
local resolved = dist.allreduce_options(ALLREDUCE, "w1_mpi")
local bucket_bytes, overlap = resolved.bucket_bytes, resolved.overlap
model:fit(C.w1_data(WARMUP * N * BR, 7, SCALE), fit_opts)
local data = C.w1_data(STEPS * N * BR, 1, SCALE)
-- RUNS timed fits of the data (the first after a few steps is often slower: the rows'
-- first updates); each figure is the median over the runs, with min, max and the runs
local rates, bytes, dense, share, loss = {}, {}, {}, {}, nil
local st
for run = 1, RUNS do
  if N > 1 then
    dist.barrier()
    dist.reset_stats()
  end
  local t0 = tk.core.clock()
  local h = model:fit(data, fit_opts)
  local dt = tk.core.clock() - t0
  st = N > 1 and dist.stats() or { bytes_sent = 0, seconds = 0, calls = 0, buckets = 0, buckets_overlapped = 0,
    dense_seconds = 0 }
  rates[run], bytes[run] = STEPS * N * BR / dt, st.bytes_sent / STEPS
  dense[run], share[run] = 1e3 * st.dense_seconds / STEPS, st.seconds / dt
  loss = h.epochs[1].loss
end
-- the tables' rows this rank holds (the shards' with row sharding), and Adam's m and v
local table_bytes, table_rows = 0, 0
for _, p in ipairs(model.block:parameters(true, true, true)) do
  if p[1]:find("/embeddings/", 1, true) then
    table_bytes = table_bytes + 3 * 4 * p[2]:numel()
    table_rows = table_rows + p[2]:shape()[1]
  end
end
local workload = SCALE == 1 and "W1" or ("W1x%d"):format(SCALE)
if rank == 0 then
  local function emit(fig, unit, runs, extra)
    local lo, hi = C.minmax(runs)
    local m = C.median(runs)
    local t = { workload = workload, system = "towerkit-mpi", figure = fig, unit = unit, median = m, min = lo,
      max = hi, runs = runs, ranks = N, mode = MODE, bucket_bytes = bucket_bytes, overlap = overlap,
      tables = TABLES, build = BUILD, scale = SCALE }
    for k, v in pairs(extra or {}) do t[k] = v end
    C.emit(t)
  end
  emit("train", "examples/s", rates, { batch_per_rank = BR, global_batch = N * BR, steps = STEPS,
    threads_per_rank = THREADS, side_by_side = N == 1 and model.side_by_side ~= false, loss_last_run = loss,
    buckets_per_step = st.buckets / STEPS,
    overlapped_per_step = st.buckets_overlapped / STEPS })
  emit("bytes_sent_per_step", "bytes", bytes, { calls_per_step = st.calls / STEPS })
  emit("dense_exchange_after_backward", "ms/step", dense)
  emit("communication_share", "fraction", share)
  emit("table_memory_per_rank", "bytes", { table_bytes }, { table_rows = table_rows, peak_rss_mb = C.peak_rss_mib() or 0 })
end
