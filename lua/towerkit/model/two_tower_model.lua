--- TwoTowerModel: training with in-batch negatives (compile, train_step, fit),
-- full-catalogue evaluation, embedding export, top-k retrieval, save and load. Beside
-- it in towerkit.model: sampled negatives (negatives.lua), the popularity baseline and
-- the exclusion lists evaluate shares with it (baseline.lua), and the classes of what
-- the export gives (embeddings.lua, encoder.lua).
local core = require "towerkit.core"
local json = require "towerkit.json"
local util = require "towerkit.util"
local dataset = require "towerkit.data.dataset"
local is_dataset = dataset.is_dataset
local Random = require("towerkit.data.random").Random
local ranking = require "towerkit.metrics"
local optim = require "towerkit.optim"
local History = require "towerkit.history"
local negatives = require "towerkit.model.negatives"
local baseline = require "towerkit.model.baseline"
local embeddings = require "towerkit.model.embeddings"
local encoder = require "towerkit.model.encoder"
local distributed = require "towerkit.distributed"
local block_meta = require "towerkit.block.meta"
local TwoTowerBlock = require("towerkit.block.two_tower").TwoTowerBlock
local embedding_options = require "towerkit.block.embedding_options"
local Schema = require "towerkit.schema.schema"
local Tags = require("towerkit.schema.tags").Tags

local argerror = util.argerror

local Model = {}
Model.__index = Model
local model = {}

local KNOWN = {
  logits_temperature = true, logq = true, logq_reg_factor = true, logq_buckets = true, logq_alpha = true,
  remove_false_negatives = true, negatives = true, num_hard_negatives = true, sample_weight = true,
  item_tower = true, query_tower_tag = true, item_tower_tag = true, embedding_options = true, post = true,
  embedding_sharding = true,
}
local BLOCK_OPTS = { item_tower = true, query_tower_tag = true, item_tower_tag = true,
  embedding_options = true, post = true }

local function check_known(opts) util.check_options(opts, KNOWN, "TwoTowerModel") end
local FIT_OPTS = {
  batch_size = true, epochs = true, shuffle = true, seed = true, drop_last = true, verbose = true, log = true,
  callbacks = true, validation_data = true, validation_opts = true, distributed = true, allreduce = true,
}
local function id_column(schema, tag, what)
  local cols = schema:select_by_tag(tag)
  if #cols == 0 then
    argerror("TwoTowerModel: the schema has no %s column (tag '%s')", what, tag)
  end
  return cols[1]
end

--- TwoTowerModel(two_tower_block, opts) or TwoTowerModel(schema, query_tower, opts)
-- (then item_tower, query_tower_tag, item_tower_tag, embedding_options and post are
-- options of the TwoTowerBlock it builds). Options:
--   logits_temperature = 1.0     logits divided by it
--   logq = nil | "streaming" | probabilities   logQ correction: logits - reg * log(p);
--       "streaming" estimates p online (Yi et al. 2019); a tensor or Lua array gives
--       p per item id
--   logq_reg_factor = 1.0, logq_buckets = item cardinality, logq_alpha = 0.01
--   remove_false_negatives = true   mask in-batch copies of a row's positive item
--   negatives = {num =, sampler = "uniform" | "popularity" | "log_uniform", corpus = items}   extra
--       sampled negatives from an item corpus, with sampling-probability correction
--   num_hard_negatives = 0   keep only the hardest negatives per row (TFRS)
--   sample_weight = column name   per-example weights from the batch
--   embedding_sharding = "replicated" | "row"   "row": under mpirun each rank builds
--       only its 1/N of every table's rows (the embedding options' setting; the model
--       then trains row-sharded, docs/distributed.md)
function model.TwoTowerModel(a, b, c)
  local block, opts
  local sharding
  if Schema.is_schema(a) then
    opts = c or {}
    if type(opts) ~= "table" then argerror("TwoTowerModel: options must be a table") end
    check_known(opts)
    sharding = embedding_options.check_sharding(opts.embedding_sharding, "TwoTowerModel")
    local block_opts = {}
    for k in pairs(BLOCK_OPTS) do block_opts[k] = opts[k] end
    -- into the embedding options (the user's table or EmbeddingOptions, copied), which
    -- must not say otherwise; anything else there is left to the block's own error
    local eo = block_opts.embedding_options
    if sharding ~= nil and (eo == nil or type(eo) == "table") then
      local t = {}
      for k, v in pairs(eo or {}) do t[k] = v end
      local given = embedding_options.check_sharding(t.embedding_sharding, "EmbeddingOptions")
      if given ~= nil and given ~= sharding then
        argerror('TwoTowerModel: embedding_sharding = "%s" but embedding_options.embedding_sharding = "%s"; give one',
          sharding, given)
      end
      t.embedding_sharding = sharding
      block_opts.embedding_options = embedding_options.new(t)
    end
    block = TwoTowerBlock(a, b, block_opts)
  else
    if not core.is_block(a) then argerror("TwoTowerModel: a TwoTowerBlock or a schema expected, got %s", type(a)) end
    block, opts = a, b or {}
    if type(opts) ~= "table" then argerror("TwoTowerModel: options must be a table") end
    check_known(opts)
    sharding = opts.embedding_sharding
    if sharding ~= nil then
      argerror('TwoTowerModel: embedding_sharding applies when the model builds its block from a schema; this block is built already (its tables are %s): build it with embedding_options = {embedding_sharding = "row"}, or shard a whole model with compile{embedding_sharding = "row"}',
        core.dist_row_shards(a) > 0 and "row-sharded" or "whole")
    end
  end
  local meta = block_meta.get(block)
  if not meta or meta.class ~= "TwoTowerBlock" then
    argerror("TwoTowerModel: the block must be a TwoTowerBlock (it has no query and item towers)")
  end
  local schema = Schema.from_table(meta.schema, "the TwoTowerBlock's schema")
  local self = setmetatable({ block = block, schema = schema, opts = {} }, Model)
  -- tables built as this rank's rows (embedding_sharding = "row"): row-sharded from the start
  if core.dist_row_shards(block) > 0 then
    self.sharding, self.built_sharded = "row", true
  end
  local o = self.opts
  o.logits_temperature = opts.logits_temperature or 1.0
  if type(o.logits_temperature) ~= "number" or o.logits_temperature <= 0 then
    argerror("TwoTowerModel: logits_temperature must be a positive number")
  end
  o.logq_reg_factor = opts.logq_reg_factor or 1.0
  o.remove_false_negatives = opts.remove_false_negatives ~= false
  o.num_hard_negatives = opts.num_hard_negatives or 0
  if type(o.num_hard_negatives) ~= "number" or o.num_hard_negatives < 0 or o.num_hard_negatives % 1 ~= 0 then
    argerror("TwoTowerModel: num_hard_negatives must be a non-negative integer")
  end
  if opts.sample_weight ~= nil and type(opts.sample_weight) ~= "string" then
    argerror("TwoTowerModel: sample_weight must be the name of a weight column")
  end
  o.sample_weight = opts.sample_weight
  self.item_id = id_column(schema, Tags.ITEM_ID, "item id").name
  self.query_id = (schema:select_by_tag(Tags.USER_ID)[1] or {}).name
  local card = schema:column(self.item_id):cardinality()
  if opts.logq == "streaming" then
    o.logq = "streaming"
    o.logq_buckets = opts.logq_buckets or card or 1048576
    o.logq_alpha = opts.logq_alpha or 0.01
    self.estimator = core.freq_estimator(o.logq_buckets, o.logq_alpha)
  elseif opts.logq ~= nil then
    local p = opts.logq
    if type(p) == "table" and not core.is_tensor(p) then p = core.tensor(p) end
    if not core.is_tensor(p) or p:dim() ~= 1 then
      argerror("TwoTowerModel: logq must be \"streaming\" or item probabilities (a 1-d tensor or Lua array)")
    end
    local logp, bad = {}, nil
    for i, v in ipairs(p:totable()) do
      if not (v > 0) then bad = bad or i end
      logp[i] = math.log(v)
    end
    if bad then argerror("TwoTowerModel: logq probabilities must be positive (item %d is not)", bad - 1) end
    o.logq = "table"
    self.logq_table = core.tensor(logp)
  end
  if opts.negatives ~= nil then
    local n = opts.negatives
    if type(n) ~= "table" or type(n.num) ~= "number" or n.num < 1 or n.num % 1 ~= 0 then
      argerror("TwoTowerModel: negatives must be {num = count, sampler = \"uniform\"|\"popularity\", corpus = items}")
    end
    local sampler = n.sampler or "uniform"
    if sampler ~= "uniform" and sampler ~= "popularity" and sampler ~= "log_uniform" then
      argerror("TwoTowerModel: unknown negative sampler '%s'; known: log_uniform, popularity, uniform", tostring(sampler))
    end
    if not is_dataset(n.corpus) then
      argerror("TwoTowerModel: negatives.corpus must be a Dataset of items with their features")
    end
    o.negatives = { num = n.num, sampler = sampler }
    self.negative_corpus = n.corpus:unique_by(self.item_id)
  end
  return self
end

function model.is_model(x) return getmetatable(x) == Model end

--- compile{optimizer =, metrics = {...}, clip_grad_norm =, schedule =,
-- embedding_sharding = "replicated" | "row"}. Under mpirun, "row" splits every embedding
-- table's rows over the ranks (each holds 1/N of the rows and their optimizer state;
-- docs/distributed.md); "replicated" (the default) keeps every table whole on every rank.
-- A model built with row-sharded tables (TwoTowerModel{embedding_sharding = "row"}) stays
-- row-sharded: the option may be left out or say "row"; "replicated" is an error.
function Model:compile(opts)
  opts = util.known_options(opts, { optimizer = true, metrics = true, schedule = true, clip_grad_norm = true,
    embedding_sharding = true }, "compile")
  local sharding = embedding_options.check_sharding(opts.embedding_sharding, "compile")
  if self.built_sharded then
    if sharding == "replicated" then
      argerror('compile: embedding_sharding = "replicated": this model\'s tables were built row-sharded (embedding_sharding = "row"), no rank holds them whole; leave the option out or say "row"')
    end
    sharding = "row"
  end
  if sharding == "row" then distributed.need_ranks("compile", "splits the tables over the ranks") end
  self.optimizer = opts.optimizer or optim.Adam { learning_rate = 1e-3 }
  if getmetatable(self.optimizer) == nil or not self.optimizer.step then
    argerror("compile: optimizer must be a tk.optim optimizer")
  end
  self.metrics = opts.metrics or baseline.default_metrics()
  for i, m in ipairs(self.metrics) do
    if not ranking.is_metric(m) then argerror("compile: metrics[%d] is not a tk.metrics metric", i) end
  end
  self.clip = opts.clip_grad_norm
  self.schedule = opts.schedule
  if self.schedule ~= nil and type(self.schedule) ~= "function" then
    argerror("compile: schedule must be a function of the step (see tk.optim.schedules)")
  end
  self.base_lr = self.optimizer:learning_rate()
  self.step_count = 0
  self.ctx = core.Context(1)
  distributed.set_sharding(self, sharding == "row")
  return self
end

--- gather_tables(): with row-sharded tables (compile{embedding_sharding = "row"}), puts
-- the whole tables back into the model on every rank (a collective: every rank calls
-- it), so that named_parameters and the like read them; the next training step shards
-- them again. Nothing to do otherwise.
function Model:gather_tables()
  if self.sharding then core.dist_tables_gather(self.block) end
end

local function need_compiled(self, what)
  if not self.optimizer then argerror("%s: call model:compile{...} first", what) end
end

-- The trainer that runs the two towers side by side (core.two_tower_trainer), or
-- false when this model cannot use it: sampled negatives, gradient clipping (both
-- need the two towers in one context), towers sharing an embedding table, a post
-- block with weights. Made once per optimizer.
local function trainer_for(self)
  local o = self.opts
  if o.negatives or self.clip or self.side_by_side == false then return false end
  if self._trainer_opt == self.optimizer then return self._trainer end
  local block = self.block
  local ok, trainer = pcall(core.two_tower_trainer, block:query_block(), block:item_block(), block:post(),
    self.optimizer._impl, 1)
  self._trainer_opt, self._trainer = self.optimizer, ok and trainer or false
  return self._trainer
end

-- The options of the retrieval loss for a batch: temperature, hard negatives, false
-- negative masking, logQ correction (updating the streaming estimator) and weights.
local function loss_options(self, batch)
  local o = self.opts
  local item_ids = batch[self.item_id]
  local lo = { temperature = o.logits_temperature, num_hard_negatives = o.num_hard_negatives }
  if o.remove_false_negatives then lo.item_ids = item_ids end
  if o.logq == "streaming" then
    lo.item_logq = self.estimator:update(item_ids) * o.logq_reg_factor
  elseif o.logq == "table" then
    lo.item_logq = core.index_select(self.logq_table, item_ids) * o.logq_reg_factor
  end
  if o.sample_weight then
    lo.weights = batch[o.sample_weight]
    if not lo.weights then
      argerror("fit: the batch has no sample weight column '%s'", o.sample_weight)
    end
  end
  return lo
end

local function finite(v) return v == v and v ~= math.huge and v ~= -math.huge end

-- One training step on a batch; returns the loss (a number). Under a distributed fit
-- (self._dist, towerkit.distributed's plan) the same step runs on this rank's rows of
-- the global batch, with the plan's pieces: the item embeddings of every rank as
-- negatives, the loss reweighted for an uneven last batch and averaged over the ranks,
-- and the gradients averaged over the ranks before clipping and the optimizer step.
function Model:train_step(batch)
  local plan = self._dist
  if self.sharding and not plan then
    argerror('train_step: this model\'s tables are row-sharded over the ranks (compile{embedding_sharding = "row"}): train it with fit, which runs the steps on every rank together')
  end
  local trainer = not plan and trainer_for(self)
  if trainer then
    -- the options' small tensors (scaled logQ) live in self.ctx until the next step
    self.ctx:reset()
    local lo = self.ctx:run(loss_options, self, batch)
    return trainer:step(batch, lo) -- not finite: nothing was updated
  end
  local ctx = self.ctx
  ctx:reset()
  ctx:train(true)
  if plan then plan:before_forward(ctx, self, batch) end
  local o = self.opts
  local loss = ctx:run(function()
    local out = self.block:forward(batch, ctx)
    local items, view, offset = out.item, batch, nil
    if plan then items, view, offset = plan:gather_items(out.item, batch) end
    local lo = loss_options(self, view)
    lo.row_offset = offset
    if o.negatives then -- under a plan the same draws on every rank (one seed), as one process makes
      local rows, logq = negatives.sample(self, self._rng)
      lo.negatives = self.block:item_block():forward(rows, ctx)
      lo.negative_ids = rows[self.item_id]
      lo.negative_logq = logq
    end
    local l = core.retrieval_loss(out.query, items, lo)
    local scale = plan and plan:loss_scale()
    if scale then l = l * scale end
    local extra = ctx:added_loss()
    if extra then l = l + extra end
    return l
  end)
  local value = loss:item()
  if plan then value = plan:mean_loss(value) end
  if not finite(value) then return value end
  if plan then plan:begin_grads(ctx, self.block) end
  loss:backward()
  if plan then plan:sync_grads(ctx, self) end
  local norm = plan and plan:clip_grad_norm(ctx, self) or optim.clip_grad_norm(self.clip or math.huge, ctx)
  if not finite(norm) then return 0 / 0 end
  self.optimizer:step(self.block, ctx)
  return value
end

local function format_time(s)
  s = math.max(0, math.floor(s + 0.5))
  return ("%d:%02d"):format(math.floor(s / 60), s % 60)
end

--- fit(data, {batch_size = 1024, epochs = 1, shuffle = true, seed = 0,
-- validation_data =, validation_opts = {item_corpus =, k =, ...}, callbacks = {},
-- verbose = true, log = print, drop_last = false, distributed = true,
-- allreduce = {bucket_bytes = 1048576, overlap = true}}) -> history
-- Under `mpirun -np N` each rank trains on its share of global batches of N x
-- batch_size rows and the ranks stay identical (tk.distributed, docs/distributed.md);
-- distributed = false trains this process alone. allreduce: how the dense gradients are
-- summed over the ranks (buckets of at most bucket_bytes, 0 for one; overlap: reduced
-- during backward); it changes no bit of the result.
-- On a terminal a progress bar (step, loss, examples/s, ETA) is redrawn in place;
-- otherwise (or with a `log` function) a line every 10 s and one per epoch.
-- A NaN or infinite loss stops training with an error naming the step; the weights
-- stay those of the last good step.
function Model:fit(data, opts)
  need_compiled(self, "fit")
  if not is_dataset(data) then argerror("fit: data must be a tk.data.Dataset") end
  opts = util.known_options(opts, FIT_OPTS, "fit")
  local bs = opts.batch_size or 1024
  local epochs = opts.epochs or 1
  if type(epochs) ~= "number" or epochs < 1 or epochs % 1 ~= 0 then argerror("fit: epochs must be a positive integer") end
  local callbacks = opts.callbacks or {}
  local verbose = opts.verbose ~= false
  local log = opts.log or print
  local tty = verbose and not opts.log and core.isatty(1)
  local history = History.new()
  if not data:has_column(self.item_id) then
    argerror("fit: the data has no item id column '%s'", self.item_id)
  end
  if self.opts.negatives then
    local prob, cdf = negatives.probs(self, data)
    self._neg = { prob = prob, cdf = cdf }
    self._rng = Random((opts.seed or 0) + 17)
  end
  if type(bs) ~= "number" or bs < 2 or bs % 1 ~= 0 then
    argerror("fit: batch_size must be an integer >= 2 (the in-batch softmax needs other rows as negatives), got %s",
      tostring(bs))
  end
  if data:size() < 2 then
    argerror("fit: the data has %d row%s; training needs at least 2 (one batch of a positive and a negative)",
      data:size(), data:size() == 1 and "" or "s")
  end
  if self.sharding and opts.distributed == false then
    argerror('fit: distributed = false: this model\'s tables are row-sharded over the ranks (compile{embedding_sharding = "row"}); it trains on every rank together')
  end
  -- under mpirun with N ranks: each takes its rows of global batches of N x bs (distributed.lua)
  local allreduce = distributed.allreduce_options(opts.allreduce, "fit")
  local plan = opts.distributed ~= false and distributed.fit_plan(self, data, bs, opts.drop_last, allreduce) or nil
  -- one rank reports, in lines: mpirun hands every rank a pty whatever its own output is
  -- (a file, a batch job's log), so a redrawn bar would land there as \r-joined lines
  if plan then verbose, tty = verbose and plan.rank == 0, false end
  local nb = plan and plan:num_batches() or data:num_batches(bs, opts.drop_last)
  self._fit_data = data -- what evaluate{exclude_seen = true} excludes
  self.stop_training = false
  for epoch = 1, epochs do
    local t0, seen, sum, steps = core.clock(), 0, 0, 0
    local last_print = t0
    local shuffle, seed = opts.shuffle ~= false, (opts.seed or 0) * 1000 + epoch
    self._dist = plan
    for batch, i in plan and plan:batches(shuffle, seed) or data:batches { batch_size = bs, shuffle = shuffle,
      seed = seed, drop_last = opts.drop_last } do
      self.step_count = self.step_count + 1
      if self.schedule then
        self.optimizer:set_learning_rate(self.schedule(self.step_count, self.base_lr))
      end
      local value = self:train_step(batch)
      if not finite(value) then
        self._dist = nil
        if tty then io.write("\n") end
        argerror("fit: the loss is %s at step %d (epoch %d, batch %d); training stopped, the weights are those of step %d",
          tostring(value), self.step_count, epoch, i, self.step_count - 1)
      end
      local rows = plan and plan.step.total or batch[self.item_id]:numel()
      seen, sum, steps = seen + rows, sum + value, steps + 1
      history:add_step { step = self.step_count, epoch = epoch, loss = value }
      local now = core.clock()
      if verbose and (tty or now - last_print >= 10 or i == nb) then
        local rate = seen / math.max(now - t0, 1e-9)
        local eta = (nb - i) * (now - t0) / i
        if tty then
          local width = 24
          local done = math.floor(width * i / nb)
          io.write(("\repoch %d/%d [%s%s] %d/%d  loss %.4f  %.0f ex/s  ETA %s   "):format(epoch, epochs,
            string.rep("=", done), string.rep(" ", width - done), i, nb, sum / steps, rate, format_time(eta)))
        else
          log(("epoch %d/%d  step %d/%d  loss %.4f  %.0f ex/s  ETA %s"):format(epoch, epochs, i, nb, sum / steps,
            rate, format_time(eta)))
        end
        io.stdout:flush()
        last_print = now
      end
    end
    self._dist = nil
    if tty then io.write("\n") end
    local seconds = core.clock() - t0
    local logs = { epoch = epoch, loss = steps > 0 and sum / steps or 0, seconds = seconds,
      examples_per_second = seen / math.max(seconds, 1e-9) }
    if opts.validation_data then
      local v = self:evaluate(opts.validation_data, opts.validation_opts or {})
      for k, val in pairs(v) do logs["val_" .. k] = val end
    end
    history:add_epoch(logs)
    if verbose then log(History.format_logs(logs)) end
    for _, cb in ipairs(callbacks) do
      if cb.on_epoch_end then cb:on_epoch_end(self, epoch, logs) end
    end
    if self.stop_training then break end
  end
  for _, cb in ipairs(callbacks) do
    if cb.on_train_end then cb:on_train_end(self) end
  end
  if verbose then log(history:summary()) end -- one line about the run
  return history
end

-- Embeddings of one tower over a dataset, in batches, in evaluation mode, on two
-- threads (core.embed_rows: row ranges of the columns, no gathering, each batch
-- written straight into the result). Its callers (export, evaluate) refuse empty data.
local function tower_embeddings(self, which, data, bs)
  local tower = which == "query" and self.block:query_block() or self.block:item_block()
  local post = self.block:post()
  return core.embed_rows(tower, post, data.columns, bs or 1024)
end

local EXPORT_OPTS = { batch_size = true, distributed = true, shard = true }

-- The embeddings of the rows of data (ids: one per row) through one tower, as an
-- Embeddings. Under mpirun (unless opts.distributed == false) each rank embeds its
-- share of the rows (tk.distributed.export: cut where one process cuts its batches, so
-- the same bits) and the shares are all-gathered; with opts.shard each rank keeps its
-- share, and the result also has offset (its first row) and size (all rows).
local function export(self, which, data, ids, opts)
  local what = which .. "_embeddings"
  local bs = opts.batch_size or 1024
  if type(bs) ~= "number" or bs < 1 or bs % 1 ~= 0 then
    argerror("%s: batch_size must be a positive integer, got %s", what, tostring(bs))
  end
  local n = data:size()
  if n == 0 then argerror("%s: the data has no rows", what) end
  if opts.distributed == false or not distributed.auto() then
    local e = embeddings.new(ids, tower_embeddings(self, which, data, bs))
    if opts.shard then e.offset, e.size = 0, n end
    return e
  end
  local emb, lo = distributed.export(what, n, bs, function(first, count)
    return tower_embeddings(self, which, data:slice(first, count), bs)
  end, opts.shard)
  if not opts.shard then return embeddings.new(ids, emb) end
  local e = embeddings.new(core.index_select(ids, core.arange(n), lo, emb:shape()[1]), emb)
  e.offset, e.size = lo, n
  return e
end

--- query_embeddings(data [, {batch_size, distributed = true, shard = false}]) ->
-- {ids =, embeddings =} (ids: the query id column when the schema has one, else row
-- numbers). Under mpirun, a collective, as item_embeddings.
local function query_embeddings(self, data, opts)
  opts = util.known_options(opts, EXPORT_OPTS, "query_embeddings")
  if not is_dataset(data) then argerror("query_embeddings: data must be a Dataset") end
  local ids = (self.query_id and data:has_column(self.query_id)) and data:column(self.query_id) or core.arange(data:size())
  return export(self, "query", data, ids, opts)
end

-- With row-sharded tables, the calls below gather the whole tables on every rank for
-- their time (tk.distributed.with_whole_tables): they read whole tables, on threads
-- that may not call MPI.
function Model:query_embeddings(data, opts)
  return distributed.with_whole_tables(self, query_embeddings, self, data, opts)
end

--- item_embeddings(items [, {batch_size = 1024, distributed = true, shard = false}]) ->
-- {ids =, embeddings =}, one row per distinct item id (first occurrence). Under mpirun
-- every rank must call it (a collective): each embeds its shard of the distinct items
-- and every rank gets the whole result, the same bits as one process. With shard =
-- true each rank gets only its shard ({ids, embeddings, offset, size}: its first row
-- and the number of distinct items), the input of tk.distributed.ShardedIndex.
-- distributed = false embeds everything in this process alone.
local function item_embeddings(self, items, opts)
  opts = util.known_options(opts, EXPORT_OPTS, "item_embeddings")
  if not is_dataset(items) then argerror("item_embeddings: items must be a Dataset") end
  local corpus = items:unique_by(self.item_id)
  return export(self, "item", corpus, corpus:column(self.item_id), opts)
end

function Model:item_embeddings(items, opts)
  return distributed.with_whole_tables(self, item_embeddings, self, items, opts)
end

--- to_top_k_encoder(items, {k = 10, batch_size, distributed = true}) -> encoder;
-- encoder:query(batch [, {k =}]) returns item ids (int64 [B, k]) and scores
-- ([B, k]), best first, exact. Under mpirun the catalogue is embedded in parallel
-- (item_embeddings) and every rank's encoder holds all of it.
local function to_top_k_encoder(self, items, opts)
  opts = util.known_options(opts, { k = true, batch_size = true, distributed = true }, "to_top_k_encoder")
  local k = opts.k or 10
  if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then argerror("to_top_k_encoder: k must be a positive integer") end
  local e = self:item_embeddings(items, { batch_size = opts.batch_size, distributed = opts.distributed })
  return encoder.new(self, k, e.ids, e.embeddings)
end

function Model:to_top_k_encoder(items, opts)
  return distributed.with_whole_tables(self, to_top_k_encoder, self, items, opts)
end

local EVALUATE_OPTS = { item_corpus = true, k = true, exclude_seen = true, batch_size = true, metrics = true,
  distributed = true }

-- The dataset exclude_seen names: a Dataset, or true for the data of the model's last fit.
local function seen_dataset(self, value, what)
  if value == true then
    if not self._fit_data then
      argerror("%s: exclude_seen = true means the data of the last fit, but this model has not been fit; pass the training Dataset", what)
    end
    return self._fit_data
  end
  if not is_dataset(value) then
    argerror("%s: exclude_seen must be a Dataset of interactions (user id, item id) or true, got %s", what,
      util.describe(value))
  end
  return value
end

-- evaluate on this process: the rows of data ranked against the catalogue (items: its
-- Embeddings when the caller has them, else embedded here).
local function evaluate_rows(self, data, opts, items)
  local corpus = opts.item_corpus
  local metrics = opts.metrics or self.metrics or baseline.default_metrics()
  items = items or self:item_embeddings(corpus, { batch_size = opts.batch_size, distributed = opts.distributed })
  local n_items = items.ids:numel()
  local k = math.min(baseline.metrics_k(metrics, opts.k), n_items)
  local row_of = {}
  for r, id in ipairs(items.ids:totable()) do row_of[id] = r - 1 end
  local positives = data:column(self.item_id):totable()
  for q, id in ipairs(positives) do
    if not row_of[id] then
      argerror("evaluate: item id %d in column '%s' (row %d of data) is not in item_corpus; evaluate on items the corpus has",
        id, self.item_id, q)
    end
  end
  local queries = tower_embeddings(self, "query", data, opts.batch_size)
  local excl_off, excl_items
  if opts.exclude_seen then
    if not self.query_id then argerror("evaluate: exclude_seen needs a user id column in the schema") end
    local seen = seen_dataset(self, opts.exclude_seen, "evaluate")
    local off, list = baseline.seen_lists(self.query_id, self.item_id, seen, data, function(id) return row_of[id] end,
      "evaluate")
    excl_off, excl_items = core.tensor(off, "int64"), core.tensor(list, "int64")
  end
  local idx = core.topk(queries, items.embeddings, k, excl_off, excl_items)
  local ranked_ids = core.map_ids(idx, items.ids):totable()
  local relevant = {}
  for q = 1, #positives do relevant[q] = { [positives[q]] = true } end
  return ranking.average(metrics, ranked_ids, relevant)
end

--- evaluate(data, {item_corpus =, k = max metric k, exclude_seen = train_data | true,
-- batch_size = 1024, metrics =, distributed = true}) -> {metric_name = value}:
-- full-catalogue retrieval metrics. Each row of data is a query whose relevant item is
-- its item id; the corpus is de-duplicated by item id, and every positive must be in
-- it. With exclude_seen, the items the row's user has in that dataset (true: the data
-- of the last fit) are not ranked, except the row's own item. k is capped at the catalogue's size. Under mpirun
-- (a collective) the ranks embed the catalogue together (item_embeddings), each rank
-- ranks a contiguous share of the rows and the metrics are summed over ranks
-- (distributed = false: this process alone).
local function evaluate(self, data, opts)
  opts = util.known_options(opts, EVALUATE_OPTS, "evaluate")
  if not is_dataset(data) then argerror("evaluate: data must be a Dataset") end
  local corpus = opts.item_corpus
  if not is_dataset(corpus) then argerror("evaluate: item_corpus (a Dataset of items) is required") end
  if data:size() == 0 then argerror("evaluate: data has no rows") end
  if not data:has_column(self.item_id) then argerror("evaluate: data has no item id column '%s'", self.item_id) end
  -- under mpirun: the catalogue embedded in parallel, then each rank ranks its share of
  -- the rows and the metric sums are added (distributed.lua)
  local shared = distributed.evaluate(self, data, opts, evaluate_rows, function()
    return self:item_embeddings(corpus, { batch_size = opts.batch_size })
  end)
  if shared then return shared end
  return evaluate_rows(self, data, opts)
end

function Model:evaluate(data, opts)
  return distributed.with_whole_tables(self, evaluate, self, data, opts)
end

--- Popularity baseline: ranks items by their count in `train`; returns the same
-- metrics as evaluate for the rows of `data`, with the same exclude_seen.
function Model:popularity_baseline(train, data, opts)
  opts = util.known_options(opts, baseline.OPTIONS, "popularity_baseline")
  local o = { metrics = opts.metrics or self.metrics, k = opts.k, user_id = opts.user_id or self.query_id }
  if opts.exclude_seen then o.exclude_seen = seen_dataset(self, opts.exclude_seen, "popularity_baseline") end
  return baseline.popularity_baseline(train, data, self.item_id, o)
end

--- save(dir [, {distributed = true}]): config.json, schema.json, model.json and
-- weights.safetensors, written to a temporary directory and renamed into place. Under
-- mpirun every rank calls it and rank 0 writes, after a barrier, while the others wait
-- (tk.distributed.on_root: the ranks' weights are identical); distributed = false
-- writes from this process alone. The optimizer's state is not saved. Row-sharded tables
-- are gathered first (every rank calls save then, also with distributed = false).
local function save(self, dir, opts)
  if type(dir) ~= "string" or dir == "" then argerror("save: a directory path expected") end
  opts = util.known_options(opts, { distributed = true }, "save")
  local model_json = json.encode({ class = "TwoTowerModel", options = self.opts, version = core.version }, true)
  local function write()
    core.checkpoint_write(dir, self.block, { ["schema.json"] = self.schema:to_json(), ["model.json"] = model_json })
  end
  if opts.distributed == false then return write() end
  distributed.on_root(write)
end

function Model:save(dir, opts)
  return distributed.with_whole_tables(self, save, self, dir, opts) -- row-sharded: gathered for it
end

--- tk.load(dir) -> the saved model (compile it again to train further).
function model.load(dir)
  if type(dir) ~= "string" or dir == "" then argerror("load: a directory path expected") end
  local block, files = core.checkpoint_read(dir, { "schema.json", "model.json" })
  if not files["model.json"] then argerror("load: %s has no model.json", dir) end
  local info, err = json.decode(files["model.json"])
  if not info then argerror("load: %s/model.json: %s", dir, err) end
  if info.class ~= "TwoTowerModel" then argerror("load: %s/model.json: not a TwoTowerModel", dir) end
  if not files["schema.json"] then argerror("load: %s has no schema.json", dir) end
  local ok, file_schema = pcall(Schema.from_json, files["schema.json"], dir .. "/schema.json")
  if not ok then argerror("load: %s", tostring(file_schema)) end
  local meta = block_meta.get(block)
  local want = meta and meta.schema and Schema.from_table(meta.schema, dir .. "/config.json")
  for _, col in ipairs(want or {}) do
    local got = file_schema:get(col.name)
    if not got then
      argerror("load: %s/schema.json does not match the model: it has no column '%s'", dir, col.name)
    end
    if got:cardinality() ~= col:cardinality() then
      argerror("load: %s/schema.json does not match the model: column '%s' has cardinality %s, the weights expect %s",
        dir, col.name, tostring(got:cardinality()), tostring(col:cardinality()))
    end
  end
  local o = info.options or {}
  local opts = {
    logits_temperature = o.logits_temperature, logq_reg_factor = o.logq_reg_factor,
    remove_false_negatives = o.remove_false_negatives, num_hard_negatives = o.num_hard_negatives,
    sample_weight = o.sample_weight,
  }
  if o.logq == "streaming" then
    opts.logq, opts.logq_buckets, opts.logq_alpha = "streaming", o.logq_buckets, o.logq_alpha
  end
  return model.TwoTowerModel(block, opts)
end

-- The method table (help, completion) and how a model prints (towerkit.pretty).
model.Model = Model
Model.__tostring = function(m) return require("towerkit.pretty").model(m) end

return model
