--- W1 (bench/WORKLOAD.md) data-parallel under MPI: the W1 model trained by fit on N
-- ranks, one thread each (tk.set_num_threads(1); run with OPENBLAS_NUM_THREADS=1; the
-- environment variable TK_BENCH_THREADS=T gives each rank T threads instead;
-- TK_BENCH_RUNS=R, default 3: R timed fits, each figure their median, min and max;
-- TK_BENCH_SIDE_BY_SIDE=0: one process without the side-by-side trainer).
--   OPENBLAS_NUM_THREADS=1 mpirun -np N build/towerkit bench/w1_mpi.lua [B_rank] [steps] [mode] [bucket_bytes]
-- B_rank (default 512) rows a rank a step: the global batch is N x B_rank. 3 warm-up
-- steps, then R runs of `steps` (default 20) timed. mode, how the dense gradients are summed
-- (fit's allreduce option): "one" (one bucket, after backward), "buckets" (buckets of
-- bucket_bytes, after backward), "overlap" (buckets of bucket_bytes started during
-- backward), "default" (fit's defaults, the default); bucket_bytes defaults to fit's.
-- Rank 0 prints JSON lines: global examples/s, bytes each rank sent per step
-- (tk.distributed.stats: the payload handed to MPI), the milliseconds a step spent on
-- the dense gradients after backward (the part of their exchange backward did not
-- hide), and the share of the step time spent inside MPI calls (waiting for the slower
-- rank included). With N = 1 the one-process path runs (the side-by-side trainer) and
-- nothing is exchanged; with more than one thread a rank, pass mpirun `--bind-to none`
-- (it binds each of up to two ranks to one core).
local dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local tk = require "towerkit"
local C = require "common"

local BR = tonumber(arg and arg[1]) or 512
local STEPS = tonumber(arg and arg[2]) or 20
local WARMUP = 3
local MODE = arg and arg[3] or "default"
local BUCKET = tonumber(arg and arg[4])
local ALLREDUCE = ({ one = { bucket_bytes = 0, overlap = false }, buckets = { bucket_bytes = BUCKET, overlap = false },
  overlap = { bucket_bytes = BUCKET, overlap = true }, default = {} })[MODE]
if not ALLREDUCE then error("w1_mpi.lua: mode must be one, buckets, overlap or default, got " .. tostring(MODE)) end
local dist = tk.distributed
local N = dist.available() and dist.size() or 1
local rank = N > 1 and dist.rank() or 0

local THREADS = tonumber(os.getenv("TK_BENCH_THREADS") or "1")
local RUNS = tonumber(os.getenv("TK_BENCH_RUNS") or "3")
tk.set_num_threads(THREADS)
local schema = C.schema()
local model = C.model(schema)
-- TK_BENCH_SIDE_BY_SIDE=0: one process trains in one context (the path every rank runs
-- under mpirun), not with the side-by-side trainer
if os.getenv("TK_BENCH_SIDE_BY_SIDE") == "0" then model.side_by_side = false end
local fit_opts = { batch_size = BR, epochs = 1, shuffle = false, verbose = false, allreduce = ALLREDUCE }
local resolved = dist.allreduce_options(ALLREDUCE, "w1_mpi")
local bucket_bytes, overlap = resolved.bucket_bytes, resolved.overlap
model:fit(C.w1_data(WARMUP * N * BR, 7), fit_opts)
local data = C.w1_data(STEPS * N * BR, 1)
-- RUNS timed fits of the data (the first after a few steps is often slower: the rows'
-- first updates); each figure is the median over the runs, with min, max and the runs
local function median(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  table.sort(c)
  return #c % 2 == 1 and c[(#c + 1) / 2] or (c[#c / 2] + c[#c / 2 + 1]) / 2
end
local function figure(runs)
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(runs) do lo, hi = math.min(lo, v), math.max(hi, v) end
  return median(runs), lo, hi
end
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
if rank == 0 then
  local function emit(fig, unit, runs, extra)
    local m, lo, hi = figure(runs)
    local t = { workload = "W1", system = "towerkit-mpi", figure = fig, unit = unit, median = m, min = lo, max = hi,
      runs = runs, ranks = N, mode = MODE, bucket_bytes = bucket_bytes, overlap = overlap }
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
end
