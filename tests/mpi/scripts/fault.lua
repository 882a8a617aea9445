-- A job with a failing rank (tests/spec/distributed_spec.lua runs it under mpirun -np 2):
--   towerkit fault.lua error   rank 1 raises a Lua error while rank 0 waits in a collective
--   towerkit fault.lua kill    rank 1 kills itself (SIGKILL) while rank 0 trains on
-- Either way the job must end at once, never hang.
package.path = "tests/mpi/?.lua;" .. package.path
local tk = require "towerkit"
local C = require "common"
local mode = arg[1]
local dist = tk.distributed
dist.init()
if dist.rank() == 1 then
  if mode == "kill" then
    local pid = io.open("/proc/self/stat"):read("*n")
    os.execute("kill -KILL " .. pid)
  end
  error("the data of rank 1 is bad (a planned failure)")
end
-- rank 0: trains, then waits on rank 1 in every step's collectives
local m = C.model(1)
m:fit(C.data(4000), { batch_size = 8, epochs = 100, verbose = false })
print("rank 0 finished: it should have been stopped")
