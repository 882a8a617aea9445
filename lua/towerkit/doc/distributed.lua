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
D "tk.distributed.rank" { "tk.distributed.rank() -> integer",
  "This process's rank, 0 to size - 1 (0 outside mpirun, in any build).",
  example = "if tk.distributed.rank() == 0 then print(m:evaluate(test, { item_corpus = items })) end" }
D "tk.distributed.size" { "tk.distributed.size() -> integer", "The number of ranks (1 outside mpirun, in any build).",
  example = "tk.distributed.size()" }
D "tk.distributed.barrier" { "tk.distributed.barrier()", "Waits until every rank gets here.",
  example = "tk.distributed.barrier()" }
D "tk.distributed.allreduce" { "tk.distributed.allreduce(x) -> sum",
  "The sum over ranks, the same bits on every rank (summed in rank order): x a number, an array of\n" ..
  "numbers (as doubles) or a float32 heap tensor (in place).", example = "tk.distributed.allreduce({ hits, n })" }
D "tk.distributed.allgather" { "tk.distributed.allgather(t) -> all, counts",
  "Every rank's float32 or int64 tensor ([n] or [n, D]) stacked in rank order, and the rows per rank.",
  example = "local all, counts = tk.distributed.allgather(tk.tensor({ 1 }, \"int64\"))" }
D "tk.distributed.stats" { "tk.distributed.stats() -> {calls, bytes_sent, seconds, buckets, buckets_overlapped, dense_seconds}",
  "This rank's collectives since reset_stats(): calls, bytes it sent, seconds inside MPI; the\n" ..
  "buckets of dense gradients fit reduced, how many of them started during backward, and the\n" ..
  "seconds spent on dense gradients after backward.",
  example = "print(tk.distributed.stats().bytes_sent)" }
D "tk.distributed.reset_stats" { "tk.distributed.reset_stats()", "Zeroes the counters of stats().",
  example = "tk.distributed.reset_stats()" }
D "tk.distributed.abort" { "tk.distributed.abort(msg [, code = 1])",
  "Prints \"towerkit: rank R of N: msg\" and ends every rank of the job (MPI_Abort).",
  example = "tk.distributed.abort(\"bad input\")" }
D "tk.distributed.on_root" { "tk.distributed.on_root(fn, ...) -> fn's results on rank 0",
  "Under mpirun: a barrier, then rank 0 runs fn while the other ranks wait; an error in fn is raised\n" ..
  "on every rank. Outside mpirun it calls fn. model:save writes its one checkpoint so.",
  example = "tk.distributed.on_root(function() history:to_csv(\"history.csv\") end)" }
D "tk.distributed.shard_range" { "tk.distributed.shard_range(n [, rank, size]) -> lo, count",
  "The rows [lo, lo + count) (0-based) of a catalogue of n items a rank holds: contiguous, in rank\n" ..
  "order, cut at multiples of 4096 (tk_topk's item block), so a ShardedIndex over them gives tk_topk's\n" ..
  "result on the whole catalogue bit for bit.",
  example = "local lo, count = tk.distributed.shard_range(e.ids:numel())" }
D "tk.distributed.export_align" { "tk.distributed.export_align(batch_size) -> rows",
  "The multiple of rows at which item_embeddings and query_embeddings cut the ranks' shards under\n" ..
  "mpirun: 4096 when batch_size divides it, else batch_size (one process's batches, so its bits).",
  example = "tk.distributed.export_align(1024) -- 4096" }
D "tk.distributed.export_range" { "tk.distributed.export_range(n, align [, rank, size]) -> lo, count",
  "The rows [lo, lo + count) (0-based) of n that a rank embeds in an export: contiguous, in rank\n" ..
  "order, cut at multiples of align (with 4096, shard_range's split).",
  example = "local lo, count = tk.distributed.export_range(5000, tk.distributed.export_align(1024))" }
D "tk.distributed.ShardedIndex" { "tk.distributed.ShardedIndex(item_ids, embeddings) -> index",
  "An exact top-k index over a catalogue split over the ranks: each rank passes its shard (int64 ids\n" ..
  "[n] or a Lua array, float32 embeddings [n, D]; n may be 0), the catalogue is the shards in rank\n" ..
  "order. A collective: every rank calls it. Fields: size (the catalogue's), offset (this shard's\n" ..
  "first global index), shard_size. Outside mpirun: one shard, the whole catalogue.",
  merlin = "a sharded TopKEncoder / FAISS IndexShards", example =
  "local s = m:item_embeddings(items, { shard = true }) -- this rank's rows, embedded here\n" ..
  "local ix = tk.distributed.ShardedIndex(s.ids, s.embeddings)" }
D "ShardedIndex:query" { "index:query(queries, k [, exclude]) -> ids, scores, indices",
  "Each query's k best items of the whole catalogue (float32 queries [Q, D]), best first: score\n" ..
  "descending, then the lower global index, as tk_topk; item ids (int64 [Q, k]), scores and global\n" ..
  "indices, the same on every rank; -1 / -inf past the catalogue. exclude: one Lua array of item ids\n" ..
  "per query. A collective: every rank passes the same queries, k and exclude.",
  example = "local ids, scores = ix:query(q, 10, { { 3, 7 }, {} })" }
