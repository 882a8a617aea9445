--- W1 (bench/WORKLOAD.md): two-tower training step, batch 1024, towers 256-128, in-batch
-- softmax at temperature 0.05, Adam (dense embedding updates, the default;
-- TK_BENCH_LAZY=1: lazy), 2 threads.
-- Trains through the public API (TwoTowerModel:fit on a Dataset); data generated and
-- seeded before timing; 5 warm-up steps, then 3 runs of 50 steps; median and min-max.
--   build/towerkit bench/w1_train.lua [runs] [steps]
-- Prints JSON lines: examples/s, steady-state allocations and peak RSS.
local dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local tk = require "towerkit"
local C = require "common"
C.print_blas()

local RUNS = tonumber(arg and arg[1]) or 3
local STEPS = tonumber(arg and arg[2]) or 50
local WARMUP = 5
local B = C.B

tk.set_num_threads(C.THREADS)
local schema = C.schema()
local warm = C.w1_data(WARMUP * B, 7)
local data = C.w1_data(STEPS * B, 1)
local model = C.model(schema)
local fit_opts = { batch_size = B, epochs = 1, shuffle = false, verbose = false }

-- Allocation counters: the training contexts' own (tk_ctx_alloc_count), and, when
-- bench/malloc_count.so is preloaded (make bench does), every malloc of the process
-- inside train_step (the steps) and over the whole fit (steps plus batching).
local ffi = require "ffi"
local counter = pcall(function()
  ffi.cdef "uint64_t tk_bench_malloc_count(void);"
  return ffi.C.tk_bench_malloc_count
end) and pcall(function() return ffi.C.tk_bench_malloc_count end) and function()
  return tonumber(ffi.C.tk_bench_malloc_count())
end or nil
local step_mallocs = 0
if counter then
  local train_step = model.train_step
  model.train_step = function(self, batch)
    local m = counter()
    local v = train_step(self, batch)
    step_mallocs = step_mallocs + counter() - m
    return v
  end
end
local function ctx_stats()
  return model._trainer and model._trainer:stats() or model.ctx:stats()
end

model:fit(warm, fit_opts)
step_mallocs = 0
local stats0 = ctx_stats()
local m0 = counter and counter()
local rates, losses = {}, {}
for run = 1, RUNS do
  local t0 = tk.core.clock()
  local h = model:fit(data, fit_opts)
  local dt = tk.core.clock() - t0
  rates[run] = STEPS * B / dt
  losses[run] = h.epochs[1].loss
end
local stats1 = ctx_stats()
local m1 = counter and counter()
local lo, hi = C.minmax(rates)
C.emit { workload = "W1", system = "towerkit", figure = "train", unit = "examples/s", median = C.median(rates),
  min = lo, max = hi, runs = rates, threads = C.THREADS, steps = STEPS, batch = B, mean_loss_last_run = losses[RUNS],
  side_by_side = model._trainer and true or false }
C.emit { workload = "W1", system = "towerkit", figure = "steady_state_ctx_allocations", unit = "count",
  median = stats1.allocations - stats0.allocations, steps = RUNS * STEPS, arena_bytes = stats1.arena_bytes }
if counter then
  C.emit { workload = "W1", system = "towerkit", figure = "steady_state_step_mallocs", unit = "count",
    median = step_mallocs, steps = RUNS * STEPS, fit_mallocs = m1 - m0 }
end
C.emit { workload = "W1", system = "towerkit", figure = "peak_rss", unit = "MiB", median = C.peak_rss_mib() }
