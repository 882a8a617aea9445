--- Merlin's Block methods and attributes that `towerkit.block` does not define.
--
-- Merlin Models' TwoTowerBlock page (reference/merlin-two-tower-block.txt) lists the
-- methods and attributes of a Merlin block. `towerkit.block` defines the structural ones
-- (connect, copy, get_weights, ...); this module adds the others that have a meaning
-- outside Keras, to `tk.core.Block`, the method table of every block:
--
-- * schema: `set_schema`, `schema`, `has_schema`, `check_schema`, `REQUIRES_SCHEMA`,
--   `get_item_ids_from_inputs` (the schema lives in the block's meta, as TwoTowerBlock and
--   InputBlock store it: `meta.schema = schema:to_table()`);
-- * parallel blocks: `parallel_dict`, `parallel_values`, `parallel_layers`, `add_branch`,
--   `apply_to_branch`;
-- * calls: `apply_to_all`, `pre_call`, `post_call`, `prepare`, `build`,
--   `compute_call_output_shape`, `connect_debug_block`;
-- * class-level helpers, called with a dot: `tk.Block.from_features`,
--   `tk.Block.from_schema`, `tk.Block.parse`, `tk.Block.parse_block`,
--   `tk.Block.from_layer`, `tk.Block.parse_config`;
-- * Keras attributes, as methods: `layers`, `submodules`, `weights`, `variables`,
--   `trainable_variables`, `non_trainable_weights`, `non_trainable_variables`, `losses`,
--   `trainable`, `dtype`, `compute_dtype`, `variable_dtype`, `is_input`, `is_tabular`,
--   `registry`.
--
-- A method already defined (by the binding or `towerkit.block`) is left as it is.
-- docs/two_tower_block.md lists every entry of the reference page and where it went.
--
-- Blocks cannot get new children from Lua (the binding adds children only when it builds
-- a block), so `add_branch` and `apply_to_branch` return a new parallel block over the
-- same branch blocks (the weights are shared) instead of changing the block in place.
return function(tk)
  local core = tk.core
  local Block = core.Block
  local Tags = tk.Tags

  --- `tk.Block` is the method table of every block; class-level helpers live on it.
  tk.Block = tk.Block or Block

  local function define(name, fn)
    if rawget(Block, name) == nil then Block[name] = fn end
  end

  -- Helpers ---------------------------------------------------------------------------

  local function fail(level, fmt, ...)
    error(fmt:format(...), level + 1)
  end

  --- A short description of a value for error messages.
  local function describe(v)
    if core.is_block(v) then return ("%s block '%s'"):format(v:kind(), v:name()) end
    if core.is_tensor(v) then return "a tensor" end
    if tk.Schema.is_schema(v) then return "a Schema" end
    return type(v)
  end

  --- An error message without its "file:line: " prefix, to be raised again with context.
  local function strip(msg)
    msg = tostring(msg)
    return (msg:gsub("^[^%s:]+:%d+: ", ""))
  end

  local sorted_keys = require("towerkit.util").sorted_keys

  --- Merlin's class name of a block: meta.class (TwoTowerBlock, InputBlock, MLPBlock,
  -- TabularBlock) or else the core kind.
  local function class_of(block)
    local meta = tk.get_meta(block)
    return (meta and type(meta.class) == "string") and meta.class or block:kind()
  end

  local function label(block)
    return ("%s '%s'"):format(class_of(block), block:name())
  end

  local function update_meta(block, fn)
    local meta = tk.get_meta(block) or {}
    fn(meta)
    tk.set_meta(block, next(meta) ~= nil and meta or nil)
  end

  local function is_context(v)
    return v ~= nil and getmetatable(v) == getmetatable(core.current_context())
  end

  local function is_list(v)
    return type(v) == "table" and not core.is_block(v) and not core.is_tensor(v) and #v > 0
  end

  -- An options table: a plain table whose keys are all among `known` (so a list of
  -- names or a table of blocks is not taken for one).
  local function is_opts(v, known)
    if type(v) ~= "table" or core.is_block(v) or core.is_tensor(v) or tk.Schema.is_schema(v) then
      return false
    end
    for k in pairs(v) do
      if not known[k] then return false end
    end
    return true
  end

  local function check_known(opts, known, what, level)
    if opts == nil then return {} end
    if type(opts) ~= "table" then fail(level + 1, "%s: options must be a table, got %s", what, type(opts)) end
    for k in pairs(opts) do
      if not known[k] then
        fail(level + 1, "%s: unknown option '%s'; known: %s", what, tostring(k),
          table.concat(sorted_keys(known), ", "))
      end
    end
    return opts
  end

  --- Feature names from a name, a list of names or a Schema; errors name `what`.
  local function name_list(v, what, level)
    if type(v) == "string" then return { v } end
    if tk.Schema.is_schema(v) then return v:column_names() end
    if type(v) ~= "table" or core.is_block(v) or core.is_tensor(v) then
      fail(level + 1, "%s must be a feature name, a list of names or a Schema, got %s", what, describe(v))
    end
    local names = {}
    for i, n in ipairs(v) do
      if type(n) ~= "string" then
        fail(level + 1, "%s[%d] must be a feature name (string), got %s", what, i, describe(n))
      end
      names[i] = n
    end
    if #names == 0 and next(v) ~= nil then
      fail(level + 1, "%s must be a list of feature names, got a table with keys", what)
    end
    return names
  end

  -- Schemas -------------------------------------------------------------------------

  --- The schema stored in the block's own meta, or nil.
  local function own_schema(block)
    local meta = tk.get_meta(block)
    if meta and type(meta.schema) == "table" then
      return tk.Schema.from_table(meta.schema, ("block '%s' meta.schema"):format(block:name()))
    end
    return nil
  end

  --- The block's schema: its own, else (as Merlin's constructors propagate it) the first
  -- child's for a sequential block and the union of the branches' for a parallel block
  -- whose branches all have one.
  local function find_schema(block)
    local s = own_schema(block)
    if s then return s end
    local kind, children = block:kind(), block:children()
    if #children == 0 then return nil end
    if kind == "sequential" then return find_schema(children[1].block) end
    if kind == "parallel" then
      local union
      for _, c in ipairs(children) do
        local cs = find_schema(c.block)
        if not cs then return nil end
        union = union and (union + cs) or cs
      end
      return union
    end
    return nil
  end

  local SCHEMA_CLASSES = { InputBlock = true, TwoTowerBlock = true }

  --- block:REQUIRES_SCHEMA() -> boolean. True for blocks built from a schema
  -- (InputBlock, TwoTowerBlock) and for blocks marked with tk.requires_schema(block).
  define("REQUIRES_SCHEMA", function(self)
    local meta = tk.get_meta(self)
    if meta == nil then return false end
    if meta.requires_schema ~= nil then return meta.requires_schema == true end
    return SCHEMA_CLASSES[meta.class] == true
  end)

  --- tk.requires_schema(block [, flag]): marks a block as needing a schema (Merlin's
  -- `requires_schema` class decorator); with flag false, as not needing one (even an
  -- InputBlock). Returns the block.
  function tk.requires_schema(block, flag)
    if not core.is_block(block) then
      fail(2, "requires_schema: block must be a block, got %s", describe(block))
    end
    if flag ~= nil and type(flag) ~= "boolean" then
      fail(2, "requires_schema: flag must be a boolean, got %s", type(flag))
    end
    update_meta(block, function(meta) meta.requires_schema = flag ~= false end)
    return block
  end

  --- block:has_schema() -> boolean: whether schema() finds one.
  define("has_schema", function(self)
    return find_schema(self) ~= nil
  end)

  --- block:schema() -> Schema: the block's schema (its own, else inherited from its
  -- first child (sequential) or all its branches (parallel)). Errors when there is none.
  define("schema", function(self)
    local s = find_schema(self)
    if not s then
      fail(2, "schema: %s does not have a schema (set one with set_schema)", label(self))
    end
    return s
  end)

  --- block:check_schema([schema]): raises "<class> '<name>' requires a schema" when the
  -- block REQUIRES_SCHEMA, has none and none is given. Returns the block.
  define("check_schema", function(self, schema)
    if schema ~= nil and not tk.Schema.is_schema(schema) then
      fail(2, "check_schema: schema must be a Schema, got %s", describe(schema))
    end
    if self:REQUIRES_SCHEMA() and schema == nil and not find_schema(self) then
      fail(2, "check_schema: %s requires a schema", label(self))
    end
    return self
  end)

  local SET_SCHEMA_OPTS = { overwrite = true }

  --- block:set_schema([schema [, {overwrite = false}]]): stores the schema in the block's
  -- meta (it travels with configs and copies). As in Merlin, a schema the block already
  -- has is kept unless overwrite is true; set_schema(nil, {overwrite = true}) removes it.
  -- Returns the block.
  define("set_schema", function(self, schema, opts)
    if schema ~= nil and not tk.Schema.is_schema(schema) then
      fail(2, "set_schema: schema must be a Schema, got %s", describe(schema))
    end
    opts = check_known(opts, SET_SCHEMA_OPTS, "set_schema", 2)
    if schema == nil and not opts.overwrite then
      if self:REQUIRES_SCHEMA() and not find_schema(self) then
        fail(2, "set_schema: %s requires a schema", label(self))
      end
      return self
    end
    local meta = tk.get_meta(self) or {}
    if schema == nil then
      if self:REQUIRES_SCHEMA() then
        fail(2, "set_schema: %s requires a schema; it cannot be removed", label(self))
      end
      meta.schema = nil
    elseif meta.schema == nil or opts.overwrite then
      meta.schema = schema:to_table()
    end
    tk.set_meta(self, next(meta) ~= nil and meta or nil)
    return self
  end)

  --- block:get_item_ids_from_inputs(inputs) -> ids [, offsets]: the input column of the
  -- first feature with the item_id tag in the block's schema ("movieId" for movielens).
  -- A ragged column gives its `__values` and `__offsets` tensors.
  define("get_item_ids_from_inputs", function(self, inputs)
    if type(inputs) ~= "table" or core.is_block(inputs) or core.is_tensor(inputs) then
      fail(2, "get_item_ids_from_inputs: inputs must be a table of feature name -> tensor, got %s",
        describe(inputs))
    end
    local schema = find_schema(self)
    if not schema then
      fail(2, "get_item_ids_from_inputs: %s does not have a schema (set one with set_schema)", label(self))
    end
    local selected = schema:select_by_tag(Tags.ITEM_ID)
    if #selected == 0 then
      fail(2, "get_item_ids_from_inputs: the schema of %s has no column with the item_id tag (columns: %s)",
        label(self), table.concat(schema:column_names(), ", "))
    end
    local col = selected:first()
    local ids = inputs[col.name]
    if ids ~= nil then return ids end
    local values, offsets = inputs[col.name .. "__values"], inputs[col.name .. "__offsets"]
    if values ~= nil and offsets ~= nil then return values, offsets end
    fail(2, "get_item_ids_from_inputs: the inputs have no '%s' column (the item id of the schema)", col.name)
  end)

  -- Structure -------------------------------------------------------------------------

  --- block:layers() -> {block, ...}: the direct children (a sequential block's layers, a
  -- parallel block's branches), in order.
  define("layers", function(self)
    local out = {}
    for i, c in ipairs(self:children()) do out[i] = c.block end
    return out
  end)

  --- block:submodules() -> {block, ...}: every block below this one (pre, children,
  -- post, recursively, in forward order), each once, without the block itself.
  define("submodules", function(self)
    local out, seen = {}, { [self:id()] = true }
    local function visit(b)
      if b == nil then return end
      local id = b:id()
      if seen[id] then return end
      seen[id] = true
      out[#out + 1] = b
      local pre = b:pre()
      visit(pre)
      for _, c in ipairs(b:children()) do visit(c.block) end
      visit(b:post())
    end
    visit(self:pre())
    for _, c in ipairs(self:children()) do visit(c.block) end
    visit(self:post())
    return out
  end)

  local function params_where(self, keep)
    local out = {}
    for _, p in ipairs(self:parameters(true)) do
      if keep(p) then out[#out + 1] = p[2] end
    end
    return out
  end

  --- block:weights() -> {tensor, ...}: every parameter (the live tensors, not copies) in
  -- named_parameters() order, the order of get_weights().
  define("weights", function(self)
    return params_where(self, function() return true end)
  end)

  --- block:variables(): the same as weights() (Keras' alias).
  define("variables", function(self) return self:weights() end)

  --- block:trainable_variables(): the same as trainable_weights().
  define("trainable_variables", function(self) return self:trainable_weights() end)

  --- block:non_trainable_weights() -> {tensor, ...}: the parameters no optimizer updates
  -- (batch-norm moving statistics).
  define("non_trainable_weights", function(self)
    return params_where(self, function(p) return not p.trainable end)
  end)

  --- block:non_trainable_variables(): the same as non_trainable_weights().
  define("non_trainable_variables", function(self) return self:non_trainable_weights() end)

  --- block:trainable() -> boolean: true unless the block has parameters and none of them
  -- is trainable. (Freezing a block is not available from Lua.)
  define("trainable", function(self)
    local params = self:parameters(true)
    if #params == 0 then return true end
    for _, p in ipairs(params) do
      if p.trainable then return true end
    end
    return false
  end)

  --- block:losses([ctx]) -> {tensor} or {}: the regularisation losses that forward
  -- passes in ctx (default: the current context) added since its last reset (Dense
  -- kernel_regularizer, embeddings_l2_reg in training), as one summed scalar tensor.
  define("losses", function(self, ctx)
    if ctx ~= nil and not is_context(ctx) then
      fail(2, "losses: ctx must be a tk.Context, got %s", describe(ctx))
    end
    local added = (ctx or core.current_context()):added_loss()
    return added and { added } or {}
  end)

  --- block:dtype() -> "float32": the dtype of the block's weights (Keras' Layer.dtype).
  define("dtype", function(self)
    local params = self:parameters(true)
    return params[1] and params[1][2]:dtype() or "float32"
  end)

  --- block:variable_dtype(): the same as dtype().
  define("variable_dtype", function(self) return self:dtype() end)

  --- block:compute_dtype() -> "float32": blocks compute in float32 (ids are int64
  -- inputs, never computed on).
  define("compute_dtype", function() return "float32" end)

  --- block:registry() -> tk.registry: the table of named blocks that `post = "l2-norm"`,
  -- parse and set_post resolve names with (tk.register_block adds to it).
  define("registry", function() return tk.registry end)

  --- block:is_input() -> boolean: true for an input block (tk.InputBlock).
  define("is_input", function(self)
    local meta = tk.get_meta(self)
    return meta ~= nil and meta.class == "InputBlock"
  end)

  -- Whether a block's output is tabular, given whether its input is. Derived from the
  -- kinds: filter, as_tabular, embeddings and parallel make a table; activation, l2norm
  -- and dropout keep the input's form; the others (and Lua blocks) give a tensor; an
  -- aggregation makes a tensor of a table.
  local TABULAR_KINDS = { filter = true, as_tabular = true, embeddings = true, parallel = true, shortcut = true }
  local KEEP_KINDS = { activation = true, l2norm = true, dropout = true }
  local function gives_table(b, input_tabular)
    local t = input_tabular
    local pre = b:pre()
    if pre then t = gives_table(pre, t) end
    local kind = b:kind()
    if kind == "sequential" then
      for _, c in ipairs(b:children()) do t = gives_table(c.block, t) end
    elseif TABULAR_KINDS[kind] then
      t = true
    elseif not KEEP_KINDS[kind] then
      t = false
    end
    local post = b:post()
    if post then t = gives_table(post, t) end
    if b:aggregation() ~= nil then t = false end
    return t
  end

  --- block:is_tabular() -> boolean: whether the block outputs a table of tensors (a
  -- parallel block, a two-tower block, an input block without aggregation, ...).
  define("is_tabular", function(self)
    return gives_table(self, false)
  end)

  -- Parallel blocks -------------------------------------------------------------------

  local function check_parallel(self, what)
    if self:kind() ~= "parallel" then
      fail(3, "%s: block '%s' is a %s block, not a parallel block", what, self:name(), self:kind())
    end
  end

  --- block:parallel_dict() -> {branch name = block}: the branches of a parallel block.
  define("parallel_dict", function(self)
    check_parallel(self, "parallel_dict")
    local out = {}
    for _, c in ipairs(self:children()) do out[c.name] = c.block end
    return out
  end)

  --- block:parallel_layers(): the same as parallel_dict() (branches always have names).
  define("parallel_layers", function(self)
    check_parallel(self, "parallel_layers")
    return self:parallel_dict()
  end)

  --- block:parallel_values() -> {block, ...}: the branches of a parallel block in order.
  define("parallel_values", function(self)
    check_parallel(self, "parallel_values")
    return self:layers()
  end)

  -- A parallel block like self (name, pre, post, aggregation, meta) over other branches.
  local function rebuild_parallel(self, names, blocks)
    local par = core.parallel(self:name(), names, blocks, self:aggregation())
    local pre, post = self:pre(), self:post()
    if pre then par:set_pre(pre) end
    if post then par:set_post(post) end
    local meta = self:meta_json()
    if meta then par:set_meta_json(meta) end
    return par
  end

  --- block:add_branch(name, block) -> parallel block: a parallel block like this one with
  -- the branch `name` added last, or replaced in place when it exists (Merlin's dict
  -- assignment). The block itself is unchanged; the branches are shared, not copied.
  define("add_branch", function(self, name, block)
    check_parallel(self, "add_branch")
    if type(name) ~= "string" or name == "" then
      fail(2, "add_branch: name must be a non-empty string, got %s", describe(name))
    end
    if block == nil then fail(2, "add_branch: block is required") end
    block = tk.as_block(block, "add_branch: block")
    local names, blocks, replaced = {}, {}, false
    for i, c in ipairs(self:children()) do
      names[i] = c.name
      if c.name == name then
        blocks[i], replaced = block, true
      else
        blocks[i] = c.block
      end
    end
    if not replaced then
      names[#names + 1] = name
      blocks[#blocks + 1] = block
    end
    return rebuild_parallel(self, names, blocks)
  end)

  --- block:apply_to_branch(branch_name, b1, b2, ... [, {block_name =}]) -> parallel
  -- block: a parallel block like this one whose branch `branch_name` is
  -- branch:connect(b1, b2, ...). The block itself is unchanged.
  define("apply_to_branch", function(self, branch_name, ...)
    check_parallel(self, "apply_to_branch")
    if type(branch_name) ~= "string" then
      fail(2, "apply_to_branch: branch_name must be a string, got %s", describe(branch_name))
    end
    if select("#", ...) == 0 then fail(2, "apply_to_branch: at least one block expected") end
    local names, blocks, found = {}, {}, false
    for i, c in ipairs(self:children()) do
      names[i] = c.name
      blocks[i] = c.block
      if c.name == branch_name then
        local ok, res = pcall(c.block.connect, c.block, ...)
        if not ok then fail(2, "apply_to_branch: %s", strip(res)) end
        blocks[i], found = res, true
      end
    end
    if not found then
      fail(2, "apply_to_branch: parallel block '%s' has no branch '%s' (branches: %s)", self:name(),
        branch_name, table.concat(names, ", "))
    end
    return rebuild_parallel(self, names, blocks)
  end)

  -- Calls -----------------------------------------------------------------------------

  local function check_inputs(inputs, what, level)
    if not core.is_tensor(inputs) and (type(inputs) ~= "table" or core.is_block(inputs)) then
      fail(level + 1, "%s: inputs must be a tensor or a table of tensors, got %s", what, describe(inputs))
    end
  end

  -- entry is f, f__values or f__offsets (as the core's filter matches)
  local function matches(entry, names)
    if names[entry] then return true end
    local base = entry:match("^(.*)__values$") or entry:match("^(.*)__offsets$")
    return base ~= nil and names[base] == true
  end

  --- block:apply_to_all(inputs [, columns_to_filter]) -> outputs: calls the block on each
  -- tensor of `inputs` (a tensor, or a table of tensors, nested tables included), keeping
  -- the structure; with columns_to_filter (names or a Schema) only those columns.
  define("apply_to_all", function(self, inputs, columns_to_filter)
    check_inputs(inputs, "apply_to_all", 2)
    local keep
    if columns_to_filter ~= nil then
      keep = {}
      for _, n in ipairs(name_list(columns_to_filter, "apply_to_all: columns_to_filter", 2)) do keep[n] = true end
    end
    -- level: how many calls of map stand between the error and the caller's code
    local function map(v, path, level)
      if core.is_tensor(v) then return self:forward(v) end
      if type(v) ~= "table" or core.is_block(v) then
        fail(level, "apply_to_all: inputs%s must be a tensor or a table of tensors, got %s", path, describe(v))
      end
      local out = {}
      for k, x in pairs(v) do out[k] = map(x, path .. "['" .. tostring(k) .. "']", level + 1) end
      return out
    end
    if core.is_tensor(inputs) then return self:forward(inputs) end
    local out = {}
    for k, v in pairs(inputs) do
      if not keep or (type(k) == "string" and matches(k, keep)) then
        out[k] = map(v, "['" .. tostring(k) .. "']", 3)
      end
    end
    return out
  end)

  --- block:pre_call(inputs [, transformations]) -> value: applies `transformations` (a
  -- block, a registered name or a list of names) or else the block's pre, to inputs;
  -- returns inputs when there is neither.
  define("pre_call", function(self, inputs, transformations)
    check_inputs(inputs, "pre_call", 2)
    local t = transformations ~= nil and tk.resolve_post(transformations) or self:pre()
    if t == nil then return inputs end
    return t:forward(inputs)
  end)

  local POST_CALL_OPTS = { transformations = true, merge_with = true, aggregation = true }

  --- block:post_call(inputs [, transformations [, merge_with [, aggregation]]]), or
  -- block:post_call(inputs, {transformations =, merge_with =, aggregation =}): Merlin's
  -- post-processing. The tables of merge_with (a block, or a list of blocks called on
  -- inputs, or tables of tensors) are merged into inputs, then `transformations` (else
  -- the block's post) and `aggregation` (a name; else the block's) are applied.
  define("post_call", function(self, inputs, transformations, merge_with, aggregation)
    check_inputs(inputs, "post_call", 2)
    if is_opts(transformations, POST_CALL_OPTS) and merge_with == nil and aggregation == nil then
      local o = transformations
      transformations, merge_with, aggregation = o.transformations, o.merge_with, o.aggregation
    end
    if aggregation ~= nil and type(aggregation) ~= "string" then
      fail(2, "post_call: aggregation must be a name such as \"concat\", got %s", describe(aggregation))
    end
    local outputs = inputs
    if merge_with ~= nil then
      if core.is_tensor(inputs) then fail(2, "post_call: merge_with needs tabular inputs, got a tensor") end
      local list = (type(merge_with) == "table" and not core.is_block(merge_with) and #merge_with > 0)
        and merge_with or { merge_with }
      outputs = {}
      for k, v in pairs(inputs) do outputs[k] = v end
      for i, m in ipairs(list) do
        local add = m
        if core.is_block(m) or type(m) == "function" then add = tk.as_block(m, "post_call: merge_with"):forward(inputs) end
        if type(add) ~= "table" or core.is_tensor(add) or core.is_block(add) then
          fail(2, "post_call: merge_with[%d] must give a table of tensors, got %s", i, describe(add))
        end
        for k, v in pairs(add) do outputs[k] = v end
      end
    end
    local t = transformations ~= nil and tk.resolve_post(transformations) or self:post()
    if t then outputs = t:forward(outputs) end
    local agg = aggregation or self:aggregation()
    if agg then outputs = tk.Aggregation(agg):forward(outputs) end
    return outputs
  end)

  local PREPARE_OPTS = { block = true, post = true, aggregation = true }

  --- block:prepare([block [, post [, aggregation]]]), or block:prepare({block =, post =,
  -- aggregation =}) -> SequentialBlock: transforms the inputs of this block: `block` (if
  -- any) then `post`, then `aggregation` run first, then this block.
  define("prepare", function(self, block, post, aggregation)
    if is_opts(block, PREPARE_OPTS) and post == nil and aggregation == nil then
      local o = block
      block, post, aggregation = o.block, o.post, o.aggregation
    end
    if aggregation ~= nil and type(aggregation) ~= "string" then
      fail(2, "prepare: aggregation must be a name such as \"concat\", got %s", describe(aggregation))
    end
    local first = core.sequential("prepare", block ~= nil and { tk.as_block(block, "prepare: block") } or {})
    if post ~= nil then first:set_post(post) end
    if aggregation ~= nil then first:set_aggregation(aggregation) end
    return tk.SequentialBlock({ first, self })
  end)

  -- Shapes and building -----------------------------------------------------------------

  local function check_shape(s, what, level)
    if #s == 0 then fail(level + 1, "%s must be a non-empty list of dimensions such as {B, D}", what) end
    for i, d in ipairs(s) do
      if type(d) ~= "number" or d < 0 or d % 1 ~= 0 then
        fail(level + 1, "%s[%d] must be a non-negative integer, got %s", what, i, tostring(d))
      end
    end
  end

  -- zeros for one shape spec: a tensor, {B, D} (float32) or {{B}, "int64"}
  local function zeros_for(s, what, level)
    if core.is_tensor(s) then return s end
    if type(s) ~= "table" or core.is_block(s) then
      fail(level + 1, "%s must be a shape such as {B, D}, {{B}, \"int64\"} or a tensor, got %s", what, describe(s))
    end
    if type(s[1]) == "table" then
      check_shape(s[1], what .. "[1]", level + 1)
      if s[2] ~= nil and type(s[2]) ~= "string" then
        fail(level + 1, "%s[2] must be a dtype name such as \"int64\", got %s", what, describe(s[2]))
      end
      return tk.zeros(s[1], s[2])
    end
    check_shape(s, what, level + 1)
    return tk.zeros(s)
  end

  -- A batch of one row of zeros for the features of a schema (targets and untagged
  -- columns skipped): int64 ids for categorical columns, float32 for continuous ones.
  local function zeros_from_schema(schema)
    local batch = {}
    for _, col in ipairs(schema:remove_by_tag(Tags.TARGET)) do
      if col:has_tag(Tags.CATEGORICAL) then
        batch[col.name] = tk.zeros({ 1 }, "int64")
      elseif col:has_tag(Tags.CONTINUOUS) then
        batch[col.name] = tk.zeros({ 1 })
      end
    end
    return batch
  end

  -- The input of a forward pass for input_shapes (see build); nil uses the schema.
  local function input_for(self, input_shapes, what, level)
    if input_shapes == nil then
      local schema = find_schema(self)
      if not schema then
        fail(level + 1, "%s: input_shapes is required (%s has no schema to take them from)", what, label(self))
      end
      return zeros_from_schema(schema)
    end
    if core.is_tensor(input_shapes) then return input_shapes end
    if type(input_shapes) ~= "table" or core.is_block(input_shapes) then
      fail(level + 1, "%s: input_shapes must be a shape such as {B, D} or a table of feature name -> shape, got %s",
        what, describe(input_shapes))
    end
    if #input_shapes > 0 then
      local z = zeros_for(input_shapes, what .. ": input_shapes", level + 1)
      return z
    end
    if next(input_shapes) == nil then fail(level + 1, "%s: input_shapes is empty", what) end
    local input = {}
    for k, s in pairs(input_shapes) do
      if type(k) ~= "string" then
        fail(level + 1, "%s: input_shapes keys must be feature names, got %s", what, describe(k))
      end
      input[k] = zeros_for(s, ("%s: input_shapes['%s']"):format(what, k), level + 1)
    end
    return input
  end

  local function run_shapes(block, input, what, level)
    local ctx = tk.Context()
    ctx:grad_enabled(false)
    local ok, out = pcall(block.forward, block, input, ctx)
    if not ok then fail(level + 1, "%s: %s", what, strip(out)) end
    if core.is_tensor(out) then return out:shape() end
    local shapes = {}
    for k, v in pairs(out) do shapes[k] = v:shape() end
    return shapes
  end

  --- block:build([input_shapes]) -> block: creates the weights of lazily sized blocks
  -- (Dense without input_dim, ...) by a forward pass on zeros, in a private context with
  -- gradients off. input_shapes as compute_output_shape takes them: {B, D}, a tensor, or
  -- a table of feature name -> shape (ids: {{B}, "int64"}). Without input_shapes the
  -- block's schema gives them (one row: int64 ids for categorical columns, float32 for
  -- continuous ones).
  define("build", function(self, input_shapes)
    local input = input_for(self, input_shapes, "build", 2)
    run_shapes(self, input, "build", 2)
    return self
  end)

  -- The block without its pre, post and aggregation: a container over the same children,
  -- else a clone.
  local function bare(self)
    if self:pre() == nil and self:post() == nil and self:aggregation() == nil then return self end
    local kind = self:kind()
    if kind == "parallel" or kind == "sequential" then
      local names, blocks = {}, {}
      for i, c in ipairs(self:children()) do names[i], blocks[i] = c.name, c.block end
      -- the aggregation argument is passed (nil): the binding reads a 4th argument
      if kind == "parallel" then return core.parallel(self:name(), names, blocks, nil) end
      return core.sequential(self:name(), blocks)
    end
    local c = self:clone()
    c:set_pre(nil)
    c:set_post(nil)
    c:set_aggregation(nil)
    return c
  end

  --- block:compute_call_output_shape(input_shapes) -> shape or {name = shape}: the
  -- output shape of the block's own computation, without its pre, post and aggregation
  -- (input_shapes are those after pre). Like compute_output_shape, it runs a forward pass
  -- on zeros; input_shapes as build takes them.
  define("compute_call_output_shape", function(self, input_shapes)
    local input = input_for(self, input_shapes, "compute_call_output_shape", 2)
    local shapes = run_shapes(bare(self), input, "compute_call_output_shape", 2)
    return shapes
  end)

  -- Debugging ---------------------------------------------------------------------------

  local function value_text(v)
    if core.is_tensor(v) then return ("%s [%s]"):format(v:dtype(), table.concat(v:shape(), ", ")) end
    local parts = {}
    for _, k in ipairs(sorted_keys(v)) do
      parts[#parts + 1] = ("%s = [%s]"):format(k, table.concat(v[k]:shape(), ", "))
    end
    return "{" .. table.concat(parts, ", ") .. "}"
  end

  local DEBUG_OPTS = { name = true, hook = true }

  --- tk.Debug({name = "debug", hook = fn}) -> block: Merlin's Debug block, the identity,
  -- which first calls hook(value, text) (text describes the shapes), or prints
  -- "<name>: <text>" without a hook. A Lua block: it runs only in this Lua state and
  -- is not restored by from_config.
  function tk.Debug(opts)
    opts = check_known(opts, DEBUG_OPTS, "Debug", 2)
    if opts.hook ~= nil and type(opts.hook) ~= "function" then
      fail(2, "Debug: hook must be a function, got %s", describe(opts.hook))
    end
    local name = opts.name or "debug"
    if type(name) ~= "string" then fail(2, "Debug: name must be a string, got %s", describe(name)) end
    local hook = opts.hook or function(_, text) print(name .. ": " .. text) end
    return tk.LuaBlock(function(x)
      hook(x, value_text(x))
      return x
    end, { name = name })
  end

  local DEBUG_BLOCK_OPTS = { append = true, name = true, hook = true }

  --- block:connect_debug_block([append = true]), or block:connect_debug_block({append =,
  -- hook =, name =}) -> SequentialBlock: the block followed (append) or preceded by a
  -- tk.Debug block.
  define("connect_debug_block", function(self, append)
    local opts = {}
    if type(append) == "table" then
      opts = check_known(append, DEBUG_BLOCK_OPTS, "connect_debug_block", 2)
      append = opts.append
    end
    if append ~= nil and type(append) ~= "boolean" then
      fail(2, "connect_debug_block: append must be a boolean, got %s", describe(append))
    end
    local dbg = tk.Debug { name = opts.name, hook = opts.hook }
    if append == false then return tk.SequentialBlock({ dbg, self }) end
    return self:connect(dbg)
  end)

  -- Class-level helpers (tk.Block.x(...); a block before the arguments is ignored) --------

  local function drop_self(first, ...)
    if core.is_block(first) then return ... end
    return first, ...
  end

  local FEATURES_OPTS = { pre = true, post = true, aggregation = true, name = true, schema = true }

  local function from_features(features, opts, level)
    local names = name_list(features, "from_features: features", level + 1)
    opts = check_known(opts, FEATURES_OPTS, "from_features", level + 1)
    if opts.schema ~= nil and not tk.Schema.is_schema(opts.schema) then
      fail(level + 1, "from_features: schema must be a Schema, got %s", describe(opts.schema))
    end
    if opts.aggregation ~= nil and type(opts.aggregation) ~= "string" then
      fail(level + 1, "from_features: aggregation must be a name such as \"concat\", got %s", describe(opts.aggregation))
    end
    local name = opts.name or "tabular_block"
    if type(name) ~= "string" then fail(level + 1, "from_features: name must be a string, got %s", describe(name)) end
    local block = core.sequential(name, {})
    local pre = tk.Filter(names)
    if opts.pre ~= nil then pre = tk.SequentialBlock({ pre, tk.resolve_post(opts.pre) }, { name = "pre" }) end
    block:set_pre(pre)
    if opts.post ~= nil then block:set_post(opts.post) end
    if opts.aggregation ~= nil then block:set_aggregation(opts.aggregation) end
    tk.set_meta(block, { class = "TabularBlock", schema = opts.schema and opts.schema:to_table() or nil })
    return block
  end

  --- tk.Block.from_features(features [, {pre =, post =, aggregation =, name =, schema =}])
  -- -> block: Merlin's TabularBlock.from_features: a block whose pre keeps only
  -- `features` (names or a Schema) then runs `pre`; it passes its input on, then applies
  -- post and aggregation.
  Block.from_features = rawget(Block, "from_features") or function(...)
    local features, opts = drop_self(...)
    local block = from_features(features, opts, 2)
    return block
  end

  local SCHEMA_OPTS = { tags = true, allow_none = true, pre = true, post = true, aggregation = true, name = true }

  --- tk.Block.from_schema(schema [, tags [, allow_none = true]] [, {pre =, post =,
  -- aggregation =, name =}]) -> block or nil: from_features over the columns of `schema`
  -- (with `tags`, those that have any of them), storing the schema. No column gives nil,
  -- or with allow_none = false the error "No features with tags: ... found".
  Block.from_schema = rawget(Block, "from_schema") or function(...)
    local schema, tags, allow_none, opts = drop_self(...)
    if not tk.Schema.is_schema(schema) then
      fail(2, "from_schema: schema must be a Schema, got %s", describe(schema))
    end
    -- the options table may come second or third
    if opts == nil and allow_none == nil and type(tags) == "table" and not is_list(tags) then
      opts, tags = tags, nil
    elseif opts == nil and type(allow_none) == "table" then
      opts, allow_none = allow_none, nil
    end
    opts = check_known(opts, SCHEMA_OPTS, "from_schema", 2)
    if tags == nil then tags = opts.tags end
    if allow_none == nil then allow_none = opts.allow_none end
    if allow_none ~= nil and type(allow_none) ~= "boolean" then
      fail(2, "from_schema: allow_none must be a boolean, got %s", describe(allow_none))
    end
    local selected = schema
    if tags ~= nil then
      if type(tags) ~= "string" and type(tags) ~= "table" then
        fail(2, "from_schema: tags must be a tag or a list of tags, got %s", describe(tags))
      end
      selected = schema:select_by_tag(tags)
      if #selected == 0 and allow_none == false then
        local list = type(tags) == "table" and table.concat(tags, ", ") or tags
        fail(2, "from_schema: No features with tags: %s found", list)
      end
    end
    if #selected == 0 then return nil end
    local block = from_features(selected:column_names(), {
      schema = selected, pre = opts.pre, post = opts.post, aggregation = opts.aggregation, name = opts.name,
    }, 2)
    return block
  end

  local function parse_one(b, what)
    if type(b) == "string" then return tk.resolve_post(b) end
    if core.is_block(b) or type(b) == "function" or (type(b) == "table" and not is_list(b)) then
      return tk.as_block(b, what)
    end
    fail(3, "%s: a block, a registered name, a function or a table of blocks expected, got %s", what, describe(b))
  end

  --- tk.Block.parse(b1 [, b2, ...]) or tk.Block.parse({b1, b2, ...}) -> block: Merlin's
  -- Block.parse. Each entry is a block, a registered name ("l2-norm", "relu", ...), a
  -- function (LuaBlock) or a table of named blocks (ParallelBlock); several are
  -- connected in order. Called with a colon on a block, that block comes first.
  Block.parse = rawget(Block, "parse") or function(...)
    local n = select("#", ...)
    local args = { ... }
    if n == 1 and is_list(args[1]) then
      args = args[1]
      n = #args
    end
    if n == 0 then fail(2, "parse: at least one block expected") end
    local blocks = {}
    for i = 1, n do
      if args[i] == nil then fail(2, "parse: entry %d is nil", i) end
      blocks[i] = parse_one(args[i], "parse")
    end
    if n == 1 then return blocks[1] end
    return blocks[1]:connect(unpack(blocks, 2, n))
  end

  local function block_or_function(input, what)
    if core.is_block(input) then return input end
    if type(input) == "function" then return tk.LuaBlock(input) end
    fail(3, "%s: a block or a function expected, got %s", what, describe(input))
  end

  --- tk.Block.parse_block(input) -> block: a block as it is, a function as a LuaBlock.
  Block.parse_block = rawget(Block, "parse_block") or function(input)
    local block = block_or_function(input, "parse_block")
    return block
  end

  --- tk.Block.from_layer(layer) -> block: Merlin turns a Keras layer into a block; here a
  -- Lua function becomes a LuaBlock (a block is returned as it is).
  Block.from_layer = rawget(Block, "from_layer") or function(layer)
    local block = block_or_function(layer, "from_layer")
    return block
  end

  --- tk.Block.parse_config(config) -> branches, options: splits the get_config() table
  -- of a parallel block into its branches (name -> block, built with fresh weights) and
  -- its options {name =, aggregation =, pre =, post =, schema =, meta =}, so
  -- tk.ParallelBlock(branches, options) rebuilds it (Merlin's ParallelBlock.parse_config).
  Block.parse_config = rawget(Block, "parse_config") or function(...)
    local config = drop_self(...)
    if type(config) ~= "table" then fail(2, "parse_config: config must be a table, got %s", describe(config)) end
    if config.kind ~= "parallel" then
      fail(2, "parse_config: config must be a parallel block's config, got kind '%s'", tostring(config.kind))
    end
    local children, names = config.children or {}, config.child_names or {}
    local branches = {}
    for i, child in ipairs(children) do
      local name = names[i] or child.name
      local ok, res = pcall(tk.from_config, child)
      if not ok then fail(2, "parse_config: branch '%s': %s", tostring(name), strip(res)) end
      branches[name] = res
    end
    local options = { name = config.name, aggregation = config.aggregation, meta = config.meta }
    for _, k in ipairs { "pre", "post" } do
      if config[k] ~= nil then
        local ok, res = pcall(tk.from_config, config[k])
        if not ok then fail(2, "parse_config: %s: %s", k, strip(res)) end
        options[k] = res
      end
    end
    if type(config.meta) == "table" and type(config.meta.schema) == "table" then
      options.schema = tk.Schema.from_table(config.meta.schema, "parse_config: meta.schema")
    end
    return branches, options
  end

  -- connect_branch(..., {add_rest = true}) ---------------------------------------------

  -- The features a branch keeps with a filter first (a filter, its pre, or the first
  -- block of a sequential branch), as Merlin's SequentialBlock.filter_features.
  local function filter_features(b)
    if not core.is_block(b) then return {} end
    local function of_filter(f)
      local cfg = f:get_config()
      if cfg.exclude then return {} end
      return cfg.features or {}
    end
    if b:kind() == "filter" then return of_filter(b) end
    local pre = b:pre()
    if pre then
      local got = filter_features(pre)
      if #got > 0 then return got end
    end
    if b:kind() == "sequential" then
      local first = b:children()[1]
      if first then return filter_features(first.block) end
    end
    return {}
  end

  --- tk.rest_branch(block, branches) -> branches: for connect_branch's add_rest, the
  -- branches plus a "rest" branch keeping the columns of the block's schema that no
  -- branch's filter selects (Merlin's `schema.without(filter features)`).
  tk.rest_branch = tk.rest_branch or function(block, branches)
    local schema = find_schema(block)
    if not schema then
      fail(3, "connect_branch: add_rest needs a schema; %s has none (see set_schema)", label(block))
    end
    local used, out = {}, {}
    local list = #branches > 0
    for k, b in pairs(branches) do
      out[k] = b
      for _, f in ipairs(filter_features(b)) do used[#used + 1] = f end
    end
    local rest = schema:without(used)
    if #rest == 0 then return out end
    local filter = tk.Filter(rest:column_names(), { name = "rest" })
    if list then
      out[#out + 1] = filter
    else
      if out.rest ~= nil then fail(3, "connect_branch: add_rest: a branch is named 'rest' already") end
      out.rest = filter
    end
    return out
  end
end
