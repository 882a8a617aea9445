--- help entries: tk.distributed (lua/towerkit/distributed.lua; docs/distributed.md).
local D = require("towerkit.doc").define

D "tk.distributed" { "tk.distributed", "Data-parallel training over MPI: `mpirun -np N towerkit train.lua` trains\n" ..
  "the same script on N ranks, fit and evaluate splitting the work; see docs/distributed.md.", topic = true,
  merlin = "Horovod / TorchRec data parallelism", example = "print(tk.distributed.rank(), tk.distributed.size())" }
D "tk.distributed.available" { "tk.distributed.available() -> boolean",
  "Whether this build has MPI (mpi.h was found: `make deps` installs Open MPI).",
  example = "tk.distributed.available()" }
D "tk.distributed.init" { "tk.distributed.init() -> rank, size",
  "Starts MPI (once). fit and the functions below do it themselves under mpirun; without MPI in\n" ..
  "the build it raises an error that says how to get it.", example = "local rank, size = tk.distributed.init()" }
D "tk.distributed.auto" { "tk.distributed.auto() -> boolean",
  "Whether training is distributed: under mpirun with more than one rank it starts MPI and returns\n" ..
  "true; otherwise false.", example = "if tk.distributed.auto() then print(\"data parallel\") end" }
D "tk.distributed.rank" { "tk.distributed.rank() -> integer", "This process's rank, 0 to size - 1 (0 outside mpirun).",
  example = "if tk.distributed.rank() == 0 then m:save(\"model/\") end" }
D "tk.distributed.size" { "tk.distributed.size() -> integer", "The number of ranks (1 outside mpirun).",
  example = "tk.distributed.size()" }
D "tk.distributed.barrier" { "tk.distributed.barrier()", "Waits until every rank gets here.",
  example = "tk.distributed.barrier()" }
D "tk.distributed.allreduce" { "tk.distributed.allreduce(x) -> sum",
  "The sum over ranks, the same bits on every rank (summed in rank order): x a number, an array of\n" ..
  "numbers (as doubles) or a float32 heap tensor (in place).", example = "tk.distributed.allreduce({ hits, n })" }
D "tk.distributed.allgather" { "tk.distributed.allgather(t) -> all, counts",
  "Every rank's float32 or int64 tensor ([n] or [n, D]) stacked in rank order, and the rows per rank.",
  example = "local all, counts = tk.distributed.allgather(tk.tensor({ 1 }, \"int64\"))" }
D "tk.distributed.stats" { "tk.distributed.stats() -> {calls, bytes_sent, seconds}",
  "This rank's collectives since reset_stats(): calls, bytes it sent, seconds inside MPI.",
  example = "print(tk.distributed.stats().bytes_sent)" }
D "tk.distributed.reset_stats" { "tk.distributed.reset_stats()", "Zeroes the counters of stats().",
  example = "tk.distributed.reset_stats()" }
D "tk.distributed.abort" { "tk.distributed.abort(msg [, code = 1])",
  "Prints \"towerkit: rank R of N: msg\" and ends every rank of the job (MPI_Abort).",
  example = "tk.distributed.abort(\"bad input\")" }
