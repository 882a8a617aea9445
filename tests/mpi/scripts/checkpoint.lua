-- A distributed run that saves one checkpoint (tests/spec/distributed_spec.lua runs it
-- under mpirun -np 2 and loads the checkpoint in one process):
--   towerkit checkpoint.lua DIR
-- trains 10 steps on two ranks, saves to DIR (rank 0 writes) and writes every weight
-- of the trained model, one "%.9g" a line, to DIR.weights.txt (rank 0).
package.path = "tests/mpi/?.lua;" .. package.path
local tk = require "towerkit"
local C = require "common"
local dir = assert(arg[1], "usage: checkpoint.lua DIR")
local m = C.model(13)
m:fit(C.data(10 * 2 * 16), { batch_size = 16, epochs = 1, verbose = false, seed = 4 })
assert(tk.distributed.size() == 2, "run under mpirun -np 2")
m:save(dir)
tk.distributed.on_root(function()
  local f = assert(io.open(dir .. ".weights.txt", "w"))
  for _, v in ipairs(C.flat_weights(m)) do f:write(("%.9g\n"):format(v)) end
  f:close()
end)
