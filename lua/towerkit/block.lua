--- Blocks: constructors of the core's block kinds and Merlin's Block methods.
--
-- A block is a `towerkit.core` userdata; the methods below extend its method table,
-- so every block (built here, in C, or restored from a config) has them.
return function(tk)
  local core = tk.core
  local Block = core.Block

  -- Seeds: each constructor without an explicit seed takes the next one, so weights
  -- differ between blocks and a script is reproducible after tk.manual_seed(n).
  local next_seed = 1
  function tk.manual_seed(n)
    assert(type(n) == "number", "manual_seed: a number expected")
    next_seed = n
  end
  local function take_seed(opts)
    if opts and opts.seed then return opts.seed end
    next_seed = next_seed + 1
    return next_seed * 7919
  end
  tk._take_seed = take_seed

  --- Raises "<what>: unknown activation 'x'; known: linear, relu, ..." unless name is an
  -- activation of the core. level as for error (default: the caller's caller).
  function tk._check_activation(name, what, level)
    if not core.is_activation(name) then
      local shown = type(name) == "string" and ("'" .. name .. "'") or ("(a " .. type(name) .. ")")
      error(("%s: unknown activation %s; known: %s"):format(what, shown, core.names("activation")), (level or 2) + 1)
    end
  end

  local function check_opts(opts, fname)
    if opts ~= nil and type(opts) ~= "table" then
      error(("%s: options must be a table, got %s"):format(fname, type(opts)), 3)
    end
    return opts or {}
  end

  --- Stores a table (JSON-encodable) as the block's meta; it travels with configs and
  -- copies. tk.get_meta(block) reads it back (nil if none).
  function tk.set_meta(block, meta)
    block:set_meta_json(meta ~= nil and core.json_encode(meta) or nil)
  end
  function tk.get_meta(block)
    local text = block:meta_json()
    return text and core.json_decode(text) or nil
  end

  -- Constructors ------------------------------------------------------------------

  --- Dense layer: act(x W + b) with W [in, out]. Options: activation, use_bias,
  -- kernel_initializer, bias_initializer, kernel_regularizer (an l2 factor),
  -- input_dim (else taken from the first input), name, seed.
  function tk.Dense(units, opts)
    opts = check_opts(opts, "Dense")
    if type(units) ~= "number" or units < 1 or units % 1 ~= 0 then
      error(("Dense: units must be a positive integer, got %s"):format(tostring(units)), 2)
    end
    if opts.activation ~= nil then tk._check_activation(opts.activation, "Dense", 2) end
    return core.dense(opts.name or "dense", units, {
      ["in"] = opts.input_dim,
      activation = opts.activation,
      use_bias = opts.use_bias,
      kernel_initializer = opts.kernel_initializer,
      bias_initializer = opts.bias_initializer,
      kernel_l2 = opts.kernel_regularizer,
      seed = take_seed(opts),
    })
  end

  function tk.Activation(name, opts)
    opts = check_opts(opts, "Activation")
    return core.activation(opts.name or name or "activation", name)
  end

  function tk.L2Norm(opts)
    opts = check_opts(opts, "L2Norm")
    return core.l2norm_block(opts.name or "l2_norm")
  end

  function tk.Dropout(rate, opts)
    opts = check_opts(opts, "Dropout")
    if type(rate) ~= "number" then error("Dropout: rate must be a number", 2) end
    return core.dropout_block(opts.name or "dropout", rate)
  end

  --- Batch normalisation; options momentum (0.99), epsilon (1e-3), dim, name.
  function tk.BatchNormalization(opts)
    opts = check_opts(opts, "BatchNormalization")
    return core.batch_norm(opts.name or "batch_norm", opts)
  end
  tk.BatchNorm = tk.BatchNormalization

  --- Keeps (or with {exclude = true} drops) named features of a tabular value.
  function tk.Filter(names, opts)
    opts = check_opts(opts, "Filter")
    if type(names) == "string" then names = { names } end
    if type(names) ~= "table" then error("Filter: a list of feature names expected", 2) end
    if names.column_names then names = names:column_names() end -- a Schema
    return core.filter(opts.name or "filter", names, opts.exclude and true or false)
  end

  function tk.AsTabular(output_name, opts)
    opts = check_opts(opts, "AsTabular")
    if type(output_name) ~= "string" then error("AsTabular: an output name expected", 2) end
    return core.as_tabular(opts.name or "as_tabular", output_name)
  end

  function tk.Aggregation(name, opts)
    opts = check_opts(opts, "Aggregation")
    return core.aggregation(opts.name or name, name)
  end

  --- A block written as a Lua function of a tensor or a table of tensors. It trains
  -- like any other (its ops are on the tape) but runs only in this Lua state and
  -- cannot be restored from a config.
  function tk.LuaBlock(fn, opts)
    if type(fn) ~= "function" then error("LuaBlock: a function expected", 2) end
    if type(opts) == "string" then opts = { name = opts } end
    opts = check_opts(opts, "LuaBlock")
    return core.lua_block(opts.name or "lua_block", fn)
  end

  --- Turns a block, a Lua function or a table of named blocks into a block.
  local function as_block(x, what)
    if core.is_block(x) then return x end
    if type(x) == "function" then return tk.LuaBlock(x) end
    if type(x) == "table" and next(x) ~= nil then return tk.ParallelBlock(x) end
    error(("%s: a block, a function or a table of blocks expected, got %s"):format(what, type(x)), 3)
  end
  tk.as_block = as_block

  --- SequentialBlock(blocks, {name =, pre =, post =}): connect, in order.
  function tk.SequentialBlock(blocks, opts)
    opts = check_opts(opts, "SequentialBlock")
    if type(blocks) ~= "table" or core.is_block(blocks) then blocks = { blocks } end
    local list = {}
    for i, b in ipairs(blocks) do list[i] = as_block(b, "SequentialBlock") end
    local seq = core.sequential(opts.name or opts.block_name or "sequential", list)
    if opts.pre then seq:set_pre(as_block(opts.pre, "pre")) end
    if opts.post then seq:set_post(tk.resolve_post(opts.post)) end
    return seq
  end

  local sorted_keys = require("towerkit.util").sorted_keys

  --- ParallelBlock(branches, {aggregation =, post =, pre =, name =}): branches is a
  -- table name -> block (in sorted name order) or a list (named "0", "1", ...).
  function tk.ParallelBlock(branches, opts)
    opts = check_opts(opts, "ParallelBlock")
    if type(branches) ~= "table" or core.is_block(branches) then
      error("ParallelBlock: a table of branches expected", 2)
    end
    local names, blocks = {}, {}
    if #branches > 0 then
      for i, b in ipairs(branches) do
        names[i] = core.is_block(b) and b:name() or tostring(i - 1)
        blocks[i] = as_block(b, "ParallelBlock")
      end
      -- Merlin keys a list of branches by their names; make duplicates unique.
      local seen = {}
      for i, n in ipairs(names) do
        if seen[n] then names[i] = n .. "_" .. (i - 1) end
        seen[names[i]] = true
      end
    else
      for _, k in ipairs(sorted_keys(branches)) do
        if type(k) ~= "string" then error("ParallelBlock: branch names must be strings", 2) end
        names[#names + 1] = k
        blocks[#blocks + 1] = as_block(branches[k], "ParallelBlock")
      end
    end
    if #names == 0 then error("ParallelBlock: at least one branch expected", 2) end
    local par = core.parallel(opts.name or "parallel", names, blocks, opts.aggregation)
    if opts.pre then par:set_pre(as_block(opts.pre, "pre")) end
    if opts.post then par:set_post(tk.resolve_post(opts.post)) end
    return par
  end

  --- ResidualBlock(block, {activation =}): activation(block(x) + x).
  function tk.ResidualBlock(block, opts)
    opts = check_opts(opts, "ResidualBlock")
    return core.residual(opts.name or "residual", as_block(block, "ResidualBlock"), opts.activation)
  end

  --- WithShortcut(block, {shortcut_filter =, aggregation = "concat", post =,
  -- block_outputs_name =}): {block_outputs_name: block(x), shortcut: filter(x) or x}.
  function tk.WithShortcut(block, opts)
    opts = check_opts(opts, "WithShortcut")
    local filter = opts.shortcut_filter
    if filter ~= nil and not core.is_block(filter) then filter = tk.Filter(filter) end
    local b = core.shortcut(opts.name or "with_shortcut", as_block(block, "WithShortcut"), filter,
      opts.block_outputs_name, opts.aggregation or "concat")
    if opts.post then b:set_post(tk.resolve_post(opts.post)) end
    return b
  end

  -- Registry of named blocks for `post = "l2-norm"` and friends --------------------
  local registry = {
    ["l2-norm"] = function() return tk.L2Norm() end,
  }
  for _, a in ipairs { "relu", "sigmoid", "tanh", "gelu", "selu", "elu", "softplus", "linear" } do
    registry[a] = function() return tk.Activation(a) end
  end
  for _, a in ipairs { "concat", "stack", "sum", "element-wise-sum", "cosine" } do
    registry[a] = function() return tk.Aggregation(a) end
  end
  tk.registry = registry

  function tk.register_block(name, factory)
    assert(type(name) == "string" and type(factory) == "function", "register_block(name, factory)")
    registry[name] = factory
  end

  local function known_names()
    return table.concat(sorted_keys(registry), ", ")
  end

  --- Resolves a post value: a block, a function, a registered name or a list of
  -- names chained in order.
  function tk.resolve_post(post)
    if type(post) == "string" then
      local f = registry[post]
      if not f then error(("unknown block name '%s'; known: %s"):format(post, known_names()), 3) end
      return f()
    end
    if type(post) == "table" and not core.is_block(post) and #post > 0 then
      local list = {}
      for i, p in ipairs(post) do list[i] = tk.resolve_post(p) end
      if #list == 1 then return list[1] end
      return tk.SequentialBlock(list, { name = "post" })
    end
    return as_block(post, "post")
  end

  -- Merlin's Block methods ------------------------------------------------------------

  local function split_opts(...)
    local n = select("#", ...)
    local args = { ... }
    local last = args[n]
    if n > 0 and type(last) == "table" and not core.is_block(last) then
      local has_block = false
      for _, v in pairs(last) do
        if core.is_block(v) or type(v) == "function" then has_block = true end
      end
      if not has_block then
        args[n] = nil
        return args, n - 1, last
      end
    end
    return args, n, {}
  end

  --- block:connect(b1, b2, ..., {block_name =}): a SequentialBlock of self then the
  -- others. A table of blocks becomes a ParallelBlock, a function a LuaBlock.
  function Block:connect(...)
    local args, n, opts = split_opts(...)
    if n == 0 then error("connect: at least one block expected", 2) end
    local list = { self }
    for i = 1, n do list[#list + 1] = as_block(args[i], "connect") end
    return tk.SequentialBlock(list, { name = opts.block_name })
  end

  --- block:connect_with_residual(b, {activation =})
  function Block:connect_with_residual(block, opts)
    return self:connect(tk.ResidualBlock(block, opts))
  end

  --- block:connect_with_shortcut(b, {shortcut_filter =, post =, aggregation =,
  -- block_outputs_name =})
  function Block:connect_with_shortcut(block, opts)
    return self:connect(tk.WithShortcut(block, opts))
  end

  --- block:connect_branch(b1, b2, ..., {post =, aggregation =, add_rest =})
  function Block:connect_branch(...)
    local args, n, opts = split_opts(...)
    if n == 0 then error("connect_branch: at least one branch expected", 2) end
    local branches = {}
    if n == 1 and type(args[1]) == "table" and not core.is_block(args[1]) then
      branches = args[1]
    else
      for i = 1, n do branches[i] = args[i] end
    end
    if opts.add_rest then
      if not tk.rest_branch then error("connect_branch: add_rest needs a block built from a schema", 2) end
      branches = tk.rest_branch(self, branches)
    end
    return self:connect(tk.ParallelBlock(branches, { post = opts.post, aggregation = opts.aggregation }))
  end

  --- block:rep(num): a SequentialBlock of num copies (new weights); Merlin's repeat.
  function Block:rep(num, opts)
    num = num or 1
    if type(num) ~= "number" or num < 1 or num % 1 ~= 0 then error("repeat: num must be a positive integer", 2) end
    opts = check_opts(opts, "repeat")
    local list = {}
    for i = 1, num do list[i] = self:copy() end
    return tk.SequentialBlock(list, { name = opts.block_name })
  end
  Block["repeat"] = Block.rep

  --- block:repeat_in_parallel(num, {prefix =, names =, post =, aggregation =,
  -- copies = true, residual = false})
  function Block:repeat_in_parallel(num, opts)
    opts = check_opts(opts, "repeat_in_parallel")
    num = num or 1
    local names = opts.names
    if not names then
      names = {}
      for i = 0, num - 1 do names[#names + 1] = (opts.prefix or "") .. i end
    end
    local branches = {}
    for _, name in ipairs(names) do
      branches[tostring(name)] = (opts.copies == false) and self or self:copy()
    end
    if opts.residual then branches.shortcut = tk.Activation("linear", { name = "shortcut" }) end
    return tk.ParallelBlock(branches, { post = opts.post, aggregation = opts.aggregation })
  end

  --- block:as_tabular(name): wraps the output tensor as {name = tensor}.
  function Block:as_tabular(name)
    return self:connect(tk.AsTabular(name or self:name()))
  end

  local core_copy = Block.copy
  --- block:copy([seed]): the same graph with new weights from the initialisers.
  function Block:copy(seed)
    return core_copy(self, seed or take_seed())
  end

  --- Parameters as {name, tensor} pairs, named by block path.
  function Block:named_parameters()
    local out = {}
    for i, p in ipairs(self:parameters(true)) do out[i] = { p[1], p[2] } end
    return out
  end

  function Block:trainable_weights()
    local out = {}
    for i, p in ipairs(self:parameters(true, true)) do out[i] = p[2] end
    return out
  end

  --- Copies of the weights, in named_parameters order.
  function Block:get_weights()
    local out = {}
    for i, p in ipairs(self:parameters(true)) do out[i] = p[2]:clone() end
    return out
  end

  --- Sets every weight from a list in named_parameters order.
  function Block:set_weights(weights)
    if type(weights) ~= "table" then error("set_weights: a list of tensors expected", 2) end
    local params = self:parameters(true)
    if #weights ~= #params then
      error(("set_weights: block '%s' has %d weights, got %d"):format(self:name(), #params, #weights), 2)
    end
    for i, p in ipairs(params) do
      local w = weights[i]
      if type(w) == "table" and not core.is_tensor(w) then w = tk.tensor(w) end
      if not core.is_tensor(w) then error(("set_weights: entry %d is not a tensor"):format(i), 2) end
      local want, got = p[2]:shape(), w:shape()
      local same = #want == #got
      for d = 1, #want do same = same and want[d] == got[d] end
      if not same then
        error(("set_weights: '%s' has shape [%s], got [%s]"):format(p[1], table.concat(want, ", "),
          table.concat(got, ", ")), 2)
      end
      p[2]:copy_from(w)
    end
  end

  function Block:get_config()
    return core.json_decode(self:config_json())
  end

  --- Builds a block from get_config()'s table (fresh weights).
  function tk.from_config(config, seed)
    if type(config) ~= "table" then error("from_config: a config table expected", 2) end
    return core.from_config_json(core.json_encode(config), seed or take_seed())
  end
  Block.from_config = function(_, config, seed) return tk.from_config(config, seed) end

  function Block:select_by_name(name)
    return self:find(name)
  end

  local core_set_post, core_set_pre = Block.set_post, Block.set_pre
  function Block:set_post(post)
    return core_set_post(self, post ~= nil and tk.resolve_post(post) or nil)
  end
  function Block:set_pre(pre)
    return core_set_pre(self, pre ~= nil and tk.resolve_post(pre) or nil)
  end

  local function shape_text(s)
    if type(s) == "string" then return s end
    local parts = {}
    for _, k in ipairs(sorted_keys(s)) do parts[#parts + 1] = k .. "=" .. s[k] end
    return "{" .. table.concat(parts, ", ") .. "}"
  end

  --- Output shapes for given input shapes: a shape table ({B, D}) or a table of
  -- name -> shape (ids: {shape, "int64"}). Runs a forward pass on zeros.
  function Block:compute_output_shape(input_shapes)
    local function zeros_of(s)
      if core.is_tensor(s) then return s end
      if type(s[1]) == "table" then return tk.zeros(s[1], s[2]) end
      return tk.zeros(s)
    end
    local input
    if type(input_shapes) == "table" and #input_shapes > 0 then
      input = zeros_of(input_shapes)
    else
      input = {}
      for k, s in pairs(input_shapes) do input[k] = zeros_of(s) end
    end
    local ctx = tk.Context()
    ctx:grad_enabled(false)
    local out = self:forward(input, ctx)
    if core.is_tensor(out) then return out:shape() end
    local shapes = {}
    for k, v in pairs(out) do shapes[k] = v:shape() end
    return shapes
  end

  --- A table of the blocks of a forward pass on `input`: name, kind, output shape and
  -- parameter count, indented by depth. Returns the text (and prints it unless
  -- opts.quiet).
  function Block:summary(input, opts)
    opts = opts or {}
    local rows = {}
    if input ~= nil then
      local ctx = tk.Context()
      ctx:grad_enabled(false)
      local _, events = self:trace(input, ctx)
      -- events finish children before parents: rebuild the tree, then list it
      local stack = {}
      for _, e in ipairs(events) do
        e.children = {}
        while #stack > 0 and stack[#stack].depth > e.depth do
          table.insert(e.children, 1, table.remove(stack))
        end
        stack[#stack + 1] = e
      end
      local function walk(e)
        rows[#rows + 1] = { string.rep("  ", e.depth) .. e.name, e.kind, shape_text(e.shape), e.params }
        for _, c in ipairs(e.children) do walk(c) end
      end
      for _, e in ipairs(stack) do walk(e) end
    else
      local function walk(b, depth, name)
        rows[#rows + 1] = { string.rep("  ", depth) .. (name or b:name()), b:kind(), "?", b:count_params() }
        for _, c in ipairs(b:children()) do walk(c.block, depth + 1, c.name) end
      end
      walk(self, 0)
    end
    local header = { "Block", "Kind", "Output shape", "Params" }
    local widths = {}
    for i, h in ipairs(header) do widths[i] = #h end
    for _, r in ipairs(rows) do
      for i = 1, 4 do widths[i] = math.max(widths[i], #tostring(r[i])) end
    end
    local function line(r)
      local cells = {}
      for i = 1, 4 do
        local fmt = i == 4 and "%" .. widths[i] .. "s" or "%-" .. widths[i] .. "s"
        cells[i] = fmt:format(tostring(r[i]))
      end
      return table.concat(cells, "  ")
    end
    local out = { line(header), string.rep("-", widths[1] + widths[2] + widths[3] + widths[4] + 6) }
    for _, r in ipairs(rows) do out[#out + 1] = line(r) end
    out[#out + 1] = ("Total params: %d"):format(self:count_params())
    local text = table.concat(out, "\n")
    if not opts.quiet then print(text) end
    return text
  end
end
