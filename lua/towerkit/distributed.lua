--- tk.distributed: data-parallel training over MPI (docs/distributed.md).
--
-- `mpirun -np N towerkit train.lua` runs the same script on N ranks; fit notices it
-- (OMPI_COMM_WORLD_SIZE) and starts MPI itself, so a script written for one process
-- needs no change. Each rank trains on its share of every global batch of N x B rows
-- (B the batch_size it passes), the item embeddings of all ranks are gathered so every
-- softmax sees the global batch's items as negatives, and the gradients are averaged
-- so that every rank ends every step with the same parameters and optimizer state, bit
-- for bit. The C side is core/src/dist.c (towerkit_dist.h).
local core = require "towerkit.core"
local util = require "towerkit.util"

local argerror = util.argerror

local M = {}

-- The message of a build without MPI (the one tk_dist_init gives there).
local function no_mpi()
  local ok, err = pcall(core.dist_init)
  assert(not ok)
  return tostring(err)
end

--- available() -> whether this towerkit was built with MPI (mpi.h found at build time).
function M.available() return core.dist_available() end

local function need_mpi(what)
  if not core.dist_available() then error(("tk.distributed.%s: %s"):format(what, no_mpi()), 3) end
end

--- init() -> rank, size: starts MPI (once; fit and the functions below do it
-- themselves under mpirun). Without MPI in the build it raises an error saying how to
-- get it.
function M.init()
  need_mpi("init")
  return core.dist_init()
end

-- The number of processes mpirun started (nil outside mpirun).
local function launched_size()
  return tonumber(os.getenv("OMPI_COMM_WORLD_SIZE") or os.getenv("PMI_SIZE") or "")
end

--- auto() -> whether training is distributed: under mpirun with more than one rank,
-- MPI is started (an error if this build has none); otherwise false (one process).
function M.auto()
  if core.dist_initialized() then return core.dist_size() > 1 end
  local n = launched_size()
  if not n or n <= 1 then return false end
  if not core.dist_available() then
    argerror("distributed: this script runs under mpirun with %d processes, but %s", n, no_mpi())
  end
  core.dist_init()
  return core.dist_size() > 1
end

--- need_ranks(what, does): raises the error of row-sharded tables in a process that runs
-- alone (outside mpirun, or one rank): "<what>: embedding_sharding = "row" <does> of an
-- MPI job ...". Nothing when auto() (more than one rank). Shared by InputBlock and compile.
function M.need_ranks(what, does)
  if M.auto() then return end
  argerror('%s: embedding_sharding = "row" %s of an MPI job (mpirun -np N, N > 1); this process runs alone: ' ..
    'leave the option out or say "replicated"', what, does)
end

local function started(what)
  need_mpi(what)
  if not core.dist_initialized() then core.dist_init() end
end

--- rank() -> this process's rank (0 to size - 1); 0 outside mpirun, also in a build
-- without MPI (so a script can say `if tk.distributed.rank() == 0` in any build; under
-- mpirun a build without MPI raises auto()'s error).
function M.rank()
  M.auto()
  return core.dist_rank()
end

--- size() -> the number of ranks; 1 outside mpirun (in any build).
function M.size()
  M.auto()
  return core.dist_size()
end

--- barrier(): waits until every rank gets here.
function M.barrier()
  started("barrier")
  core.dist_barrier()
end

--- allreduce(x) -> the sum over ranks, the same bits on every rank: x a number, an
-- array of numbers (summed as doubles) or a float32 heap tensor (summed in place).
function M.allreduce(x)
  started("allreduce")
  return core.dist_allreduce(x)
end

--- allgather(t) -> every rank's tensor (float32 or int64, [n] or [n, D]) stacked in
-- rank order, and the row counts per rank (a Lua array).
function M.allgather(t)
  started("allgather")
  return core.dist_allgather(t)
end

--- stats() -> {calls, bytes_sent, seconds} of this rank's collectives since
-- reset_stats() (bytes as a point-to-point implementation sends them).
function M.stats() return core.dist_stats() end
function M.reset_stats() core.dist_reset_stats() end

--- abort(msg [, code]): prints "towerkit: rank R of N: msg" and ends every rank.
function M.abort(msg, code) core.dist_abort(tostring(msg), code) end

--- on_root(fn, ...) -> fn's results on rank 0, nothing on the others: under mpirun a
-- barrier, then rank 0 runs fn while the others wait for it; an error of fn is raised
-- on rank 0 with its message and on every other rank as "rank 0 failed". Outside
-- mpirun it just calls fn. Model:save uses it: one checkpoint, written by rank 0.
function M.on_root(fn, ...)
  if type(fn) ~= "function" then argerror("on_root: a function expected") end
  if not M.auto() then return fn(...) end
  core.dist_barrier()
  local res = { n = 0 }
  local ok, err = true, nil
  if core.dist_rank() == 0 then
    res = { pcall(fn, ...) }
    ok, err = res[1], res[2]
  end
  -- rank 0's outcome, summed in rank order: every rank waits here until rank 0 is done
  if core.dist_allreduce(ok and 0 or 1) ~= 0 then
    if not ok then error(err, 0) end
    error("tk.distributed.on_root: rank 0 failed (its own message says why)", 2)
  end
  if core.dist_rank() == 0 then return unpack(res, 2, table.maxn(res)) end
end

-- ----------------------------------------------------------------------------------
-- Sharded retrieval: a catalogue split over the ranks (core/src/sharded.c)
-- ----------------------------------------------------------------------------------

--- shard_range(n [, rank, size]) -> lo, count: the rows [lo, lo + count) (0-based) of a
-- catalogue of n items that a rank holds (this process's rank and size by default):
-- contiguous, in rank order, cut at multiples of 4096 (tk_topk's item block), so that
-- a ShardedIndex over these shards gives tk_topk's result on the whole catalogue, bit
-- for bit.
function M.shard_range(n, rank, size)
  if type(n) ~= "number" or n < 0 or n % 1 ~= 0 then argerror("shard_range: n must be a non-negative integer") end
  if rank == nil then M.auto() end
  return core.dist_shard_range(n, rank, size)
end

local ShardedIndex = {}
ShardedIndex.__index = ShardedIndex
M._ShardedIndex = ShardedIndex -- the method table (help)

local function int64_ids(ids, what)
  if type(ids) == "table" and not core.is_tensor(ids) then return core.tensor(ids, "int64") end
  if not core.is_tensor(ids) or ids:dtype() ~= "int64" then argerror("%s: item ids: an int64 tensor or a Lua array expected", what) end
  return ids
end

--- ShardedIndex(item_ids, embeddings) -> index over this rank's shard of a catalogue:
-- item_ids (int64 [n] or a Lua array), embeddings (float32 [n, D]); n may be 0. Every
-- rank calls it (a collective), each with its own shard; the catalogue is the shards
-- stacked in rank order. Outside mpirun it is one shard, the whole catalogue.
function M.ShardedIndex(item_ids, embeddings)
  M.auto()
  local ids = int64_ids(item_ids, "ShardedIndex")
  if not core.is_tensor(embeddings) then argerror("ShardedIndex: embeddings: a float32 tensor [n, D] expected") end
  local h = core.sharded_index_new(ids, embeddings)
  local size, offset, n = core.sharded_index_info(h)
  return setmetatable({ handle = h, size = size, offset = offset, shard_size = n }, ShardedIndex)
end

-- exclude: one Lua array of item ids per query row (nil or {} for none) -> CSR tensors
local function exclusion_csr(exclude, q)
  if type(exclude) ~= "table" then argerror("query: exclude must be a Lua array of item id lists, one per query") end
  local off, ids = { 0 }, {}
  for r = 1, q do
    local l = exclude[r]
    if l ~= nil and type(l) ~= "table" then argerror("query: exclude[%d] must be a Lua array of item ids", r) end
    for _, id in ipairs(l or {}) do ids[#ids + 1] = id end
    off[r + 1] = #ids
  end
  return core.tensor(off, "int64"), core.tensor(#ids > 0 and ids or { 0 }, "int64")
end

--- index:query(queries, k [, exclude]) -> ids (int64 [Q, k]), scores ([Q, k]), global
-- indices (int64 [Q, k]): each query's k best items of the whole catalogue, best first
-- (score descending, then the lower global index, as tk_topk), the same on every rank;
-- -1 / -inf where fewer than k items remain. queries (float32 [Q, D]), k and exclude
-- (one Lua array of item ids per query) must be the same on every rank: a collective.
function ShardedIndex:query(queries, k, exclude)
  if not core.is_tensor(queries) then argerror("query: queries: a float32 tensor [Q, D] expected") end
  if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then argerror("query: k must be a positive integer") end
  if exclude ~= nil then
    local off, ids = exclusion_csr(exclude, queries:shape()[1])
    return core.sharded_index_query(self.handle, queries, k, off, ids)
  end
  return core.sharded_index_query(self.handle, queries, k)
end

-- ----------------------------------------------------------------------------------
-- Export: a table of rows embedded in shards, one per rank (TwoTowerModel's
-- item_embeddings, query_embeddings, and the catalogue of evaluate)
-- ----------------------------------------------------------------------------------

--- export_align(batch_size) -> the multiple of rows at which an export cuts its shards:
-- 4096 when batch_size divides it (the default 1024 does), else batch_size. A shard
-- that starts at a multiple of batch_size runs the batches one process runs, on the
-- same rows, so its embeddings are one process's bit for bit; at multiples of 4096 too,
-- a ShardedIndex over the shards also scores as tk_topk on the whole catalogue.
function M.export_align(bs)
  local block = core.TOPK_ITEM_BLOCK
  if block % bs == 0 then return block end
  return bs
end

--- export_range(n, align [, rank, size]) -> lo, count: the rows [lo, lo + count) of n a
-- rank embeds, contiguous, in rank order, cut at multiples of align (the first ranks
-- fill first; with fewer blocks than ranks the last hold none): tk_dist_shard_range with
-- that align, so with align 4096 it is shard_range's split.
function M.export_range(n, align, rank, size)
  return core.dist_shard_range(n, rank, size, align)
end

--- export(what, n, batch_size, embed, shard_only) -> embeddings [, lo]: a collective of
-- every rank (the same n and batch_size everywhere). Each rank calls embed(lo, count)
-- -> float32 [count, D] for its rows only (export_range), then every rank learns every
-- rank's outcome: if any rank failed, every rank raises (the failing one its own
-- message, the others one naming it), so no rank waits for a failed one. Then the
-- shards are all-gathered in rank order into [n, D] on every rank, or, with
-- shard_only, this rank's rows ([0, D] for a rank without any) and their first row lo
-- are returned.
function M.export(what, n, bs, embed, shard_only)
  local lo, count = M.export_range(n, M.export_align(bs))
  local ok, emb = true, nil
  if count > 0 then ok, emb = pcall(embed, lo, count) end
  local width = not ok and -1 or (emb and emb:shape()[2] or 0)
  local widths = core.dist_allgather(core.tensor({ width }, "int64")):totable()
  local dim = 0
  for r, w in ipairs(widths) do
    if w < 0 then
      if not ok then error(emb, 0) end
      argerror("%s: rank %d failed to embed its shard of the rows (its own message says why)", what, r - 1)
    end
    if w > 0 then dim = w end -- one model: every rank with rows has the same width
  end
  if count == 0 then emb = core.zeros({ 0, dim }) end
  if shard_only then return emb, lo end
  return (core.dist_allgather(emb))
end

-- ----------------------------------------------------------------------------------
-- Data-parallel fit (the hooks of TwoTowerModel:fit and :train_step)
-- ----------------------------------------------------------------------------------

local Plan = {}
Plan.__index = Plan

--- allreduce_options(v, what) -> {bucket_bytes =, overlap =}: fit's `allreduce` option
-- checked, nil fields given tk_dist_grad_defaults() (bucket_bytes = 1048576, overlap =
-- true; docs/distributed.md says why). bucket_bytes: the dense gradients are summed over
-- the ranks in buckets of at most this many bytes (0: one bucket for all); overlap: a
-- bucket's reduction starts during backward once its gradients are final.
function M.allreduce_options(v, what)
  local bb, ov = core.dist_grad_defaults()
  if v == nil then return { bucket_bytes = bb, overlap = ov } end
  if type(v) ~= "table" then
    argerror("%s: allreduce must be a table {bucket_bytes = bytes, overlap = true|false}, got %s", what, type(v))
  end
  util.check_options(v, { bucket_bytes = true, overlap = true }, what .. ": allreduce")
  if v.bucket_bytes ~= nil then
    local n = v.bucket_bytes
    if type(n) ~= "number" or n < 0 or n % 1 ~= 0 or n > 2 ^ 53 then
      argerror("%s: allreduce.bucket_bytes must be a non-negative integer (bytes; 0: one bucket for every dense gradient), got %s",
        what, tostring(n))
    end
    bb = n
  end
  if v.overlap ~= nil then
    if type(v.overlap) ~= "boolean" then
      argerror("%s: allreduce.overlap must be true or false, got %s", what, tostring(v.overlap))
    end
    ov = v.overlap
  end
  return { bucket_bytes = bb, overlap = ov }
end

--- The plan of a distributed fit, or nil with one process. Every global batch has
-- size x batch_size rows, from one shuffle of the whole data (the seed fit passes), and
-- rank r takes rows [r B, (r + 1) B) of it; a last, shorter batch is split evenly
-- (rank r: [floor(r n / N), floor((r + 1) n / N))), and dropped when it has fewer rows
-- than ranks (every rank drops it: the split is computed the same everywhere).
-- allreduce: allreduce_options' table.
function M.fit_plan(model, data, bs, drop_last, allreduce)
  if not M.auto() then return nil end
  local size = core.dist_size()
  return setmetatable({ rank = core.dist_rank(), size = size, data = data, bs = bs, global_bs = bs * size,
    drop_last = drop_last, item_id = model.item_id, allreduce = allreduce or M.allreduce_options(nil, "fit") }, Plan)
end

function Plan:num_batches()
  local n, g = self.data:size(), self.global_bs
  local nb = self.drop_last and math.floor(n / g) or math.ceil(n / g)
  if not self.drop_last and nb > 0 and n - (nb - 1) * g < self.size then nb = nb - 1 end
  return nb
end

--- for batch, i in plan:batches(shuffle, seed): this rank's rows of each global batch;
-- plan.step describes the global batch (its item ids, this rank's offset and count).
function Plan:batches(shuffle, seed)
  local data, n = self.data, self.data:size()
  local order = core.arange(n)
  if shuffle then core.shuffle(order, seed or 0) end
  local nb, g, N, r = self:num_batches(), self.global_bs, self.size, self.rank
  local ids = data:column(self.item_id)
  local i = 0
  return function()
    if i >= nb then return nil end
    local first = i * g
    i = i + 1
    local count = math.min(g, n - first)
    local lo, hi = math.floor(r * count / N), math.floor((r + 1) * count / N)
    self.step = { ids = core.index_select(ids, order, first, count), offset = lo, count = hi - lo, total = count }
    return data:rows(order, first + lo, hi - lo), i
  end
end

-- The distributed pieces of a training step (TwoTowerModel:train_step runs one step
-- function, with these where it runs under a plan), for this rank's rows of the global
-- batch the plan's batches() gave last.

--- plan:gather_items(items, batch) -> every rank's item embeddings stacked in rank order
-- (the gradient of each row goes back to the rank that computed it), the batch as the
-- loss options read it (the global batch's item ids, in the gathered order, for false
-- negatives and logQ; the other columns, such as weights per query row, this rank's),
-- and this rank's first row among the items (the loss's row_offset).
function Plan:gather_items(items, batch)
  local st = assert(self.step, "distributed train_step outside the plan's batches")
  local all, offset = core.dist_allgather_rows(items)
  assert(offset == st.offset, "distributed: rank rows out of order")
  return all, setmetatable({ [self.item_id] = st.ids }, { __index = batch }), offset
end

--- plan:loss_scale() -> the factor of this rank's mean loss that makes the mean over the
-- ranks the mean over the global batch (an uneven last batch), or nil when it is 1.
function Plan:loss_scale()
  local st = self.step
  if st.count * self.size ~= st.total then return st.count * self.size / st.total end
end

--- plan:mean_loss(v) -> the mean over the ranks of v (the global batch's loss).
function Plan:mean_loss(v) return core.dist_allreduce(v) / self.size end

--- plan:begin_grads(ctx, block): after the forward pass, before backward (buckets and
-- overlap: tk_dist_grads_begin).
function Plan:begin_grads(ctx, block)
  core.dist_grads_begin(ctx, block, self.allreduce.bucket_bytes, self.allreduce.overlap)
end

--- plan:before_forward(ctx, model, batch): with row-sharded tables, the rows the
-- forward pass reads, fetched from their owners for both towers at once.
function Plan:before_forward(ctx, model, batch)
  if model.sharding then
    core.dist_tables_shard(model.block)
    core.dist_tables_prefetch(ctx, model.block, batch)
  end
end

--- plan:sync_grads(ctx, model): after backward, the gradients averaged over the ranks
-- (a row-sharded table's rows on the rank that owns them).
function Plan:sync_grads(ctx, model)
  if model.sharding then core.dist_tables_sync(ctx, model.block) end
  core.dist_sync_grads(ctx, model.block)
end

--- plan:clip_grad_norm(ctx, model) -> the global gradient norm, clipped to model.clip
-- (with row-sharded tables every rank's shards count, summed in rank order).
function Plan:clip_grad_norm(ctx, model)
  local max = model.clip or math.huge
  if model.sharding then return core.dist_tables_clip_grad_norm(ctx, max) end
  return require("towerkit.optim").clip_grad_norm(max, ctx)
end

-- ----------------------------------------------------------------------------------
-- Row-sharded embedding tables (core/src/dist_table.c)
-- ----------------------------------------------------------------------------------

--- The hook of compile{embedding_sharding =}: on (every rank holds 1/N of each table's
-- rows from now on) or off (the whole tables back on every rank, a collective).
function M.set_sharding(model, on)
  if on then
    core.dist_tables_shard(model.block)
    model.sharding = "row"
  elseif model.sharding then
    core.dist_tables_gather(model.block)
    model.sharding = nil
  end
end

--- with_whole_tables(model, fn, ...) -> fn(...)'s results. With row-sharded tables the
-- whole tables are gathered into the model on every rank (a collective: every rank
-- must call it) for fn, and sharded again after it, also when fn raises; otherwise (or
-- inside another such call) just fn(...). Saving, evaluating and exporting embeddings
-- run so: they read whole tables, on threads that may not call MPI.
function M.with_whole_tables(model, fn, ...)
  if not model.sharding or model._whole_tables then return fn(...) end
  core.dist_tables_gather(model.block)
  model._whole_tables = true
  local res = { pcall(fn, ...) }
  model._whole_tables = nil
  core.dist_tables_shard(model.block)
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, table.maxn(res))
end

-- ----------------------------------------------------------------------------------
-- Evaluation: the rows split over the ranks, the metric sums added
-- ----------------------------------------------------------------------------------

--- The hook of TwoTowerModel:evaluate: nil with one process (or distributed = false),
-- else the metrics over all of data, the same on every rank. The catalogue is embedded
-- once over the ranks (embed_catalogue: item_embeddings, each rank 1/N of it, then
-- all-gathered: the same bits as one process), then rank r ranks rows
-- [floor(r n / N), floor((r + 1) n / N)) against the whole of it (evaluate_local(model,
-- rows, opts, items)); each metric's sum over its rows is all-reduced in rank order
-- and divided by n. The single-process figure sums the same per-row scores in one
-- sequence: they agree to double rounding (about 1e-15 relative).
function M.evaluate(model, data, opts, evaluate_local, embed_catalogue)
  if opts.distributed == false or not M.auto() then return nil end
  local N, r, n = core.dist_size(), core.dist_rank(), data:size()
  if n < N then return nil end -- too few rows to split: every rank evaluates them all
  local items = embed_catalogue()
  local lo, hi = math.floor(r * n / N), math.floor((r + 1) * n / N)
  local part = data:slice(lo, hi - lo)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.distributed = false
  local res = evaluate_local(model, part, o, items)
  local names = {}
  for name in pairs(res) do names[#names + 1] = name end
  table.sort(names) -- the same order on every rank
  local sums = {}
  for i, name in ipairs(names) do sums[i] = res[name] * (hi - lo) end
  sums = core.dist_allreduce(sums)
  local out = {}
  for i, name in ipairs(names) do out[name] = sums[i] / n end
  return out
end

return M
