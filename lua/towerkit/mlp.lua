--- MLPBlock and DenseResidualBlock, Merlin's towers, as sequences of core blocks.
return function(tk)
  local core = tk.core

  local function fail(msg, ...) error(msg:format(...), 3) end

  local KNOWN = {
    activation = true, use_bias = true, kernel_initializer = true, bias_initializer = true,
    kernel_regularizer = true, dropout = true, normalization = true, no_activation_last_layer = true,
    filter = true, block_name = true, input_dim = true, seed = true,
  }

  local check_options = require("towerkit.util").check_options
  local function check_known(opts, what, known) check_options(opts, known, what, 3) end

  -- An l2 factor from a number or {l2 = x} (Keras' regularizers.l2(x)).
  local function l2_of(reg, what)
    if reg == nil then return nil end
    if type(reg) == "number" then return reg end
    if type(reg) == "table" and type(reg.l2) == "number" then return reg.l2 end
    fail("%s: kernel_regularizer must be an l2 factor or {l2 = factor}", what)
  end

  local function normalization_block(norm, idx)
    if norm == nil or norm == false then return nil end
    if norm == "batch_norm" then return tk.BatchNormalization { name = "batch_norm_" .. idx } end
    if core.is_block(norm) then return idx == 0 and norm or norm:copy() end
    if type(norm) == "function" then return norm() end
    fail("MLPBlock: normalization must be \"batch_norm\", a block or a function returning one")
  end

  --- MLPBlock(dimensions, {activation = "relu", use_bias = true,
  -- kernel_initializer = "glorot_uniform", bias_initializer = "zeros",
  -- kernel_regularizer =, dropout =, normalization =, no_activation_last_layer = false,
  -- filter =, block_name = "mlp", input_dim =})
  -- A Lua function kernel_initializer fn(shape, seed) needs input_dim for the first layer.
  function tk.MLPBlock(dimensions, opts)
    if type(dimensions) ~= "table" or #dimensions == 0 then
      fail("MLPBlock: dimensions must be a non-empty list of layer sizes")
    end
    for i, d in ipairs(dimensions) do
      if type(d) ~= "number" or d < 1 or d % 1 ~= 0 then
        fail("MLPBlock: dimensions[%d] must be a positive integer, got %s", i, tostring(d))
      end
    end
    if opts ~= nil and type(opts) ~= "table" then fail("MLPBlock: options must be a table") end
    opts = opts or {}
    check_known(opts, "MLPBlock", KNOWN)
    local activation = opts.activation or "relu"
    if type(activation) == "table" then
      if #activation ~= #dimensions then
        fail("MLPBlock: %d activations for %d layers", #activation, #dimensions)
      end
      for i = 1, #activation do tk._check_activation(activation[i], "MLPBlock", 2) end
    elseif type(activation) ~= "string" then
      fail("MLPBlock: activation must be a name or a list of names, one per layer")
    else
      tk._check_activation(activation, "MLPBlock", 2)
    end
    if opts.dropout ~= nil and (type(opts.dropout) ~= "number" or opts.dropout < 0 or opts.dropout >= 1) then
      fail("MLPBlock: dropout must be a rate in [0, 1), got %s", tostring(opts.dropout))
    end
    local kinit = opts.kernel_initializer or "glorot_uniform"
    local fn_init = type(kinit) == "function"
    if fn_init and not opts.input_dim then
      fail("MLPBlock: a function kernel_initializer needs input_dim (the width of the first layer's input)")
    end
    local l2 = l2_of(opts.kernel_regularizer, "MLPBlock")

    local layers = {}
    local in_dim = opts.input_dim
    for i, dim in ipairs(dimensions) do
      local idx = i - 1
      local act = type(activation) == "table" and activation[i] or activation
      local last = i == #dimensions
      if opts.no_activation_last_layer and last then act = "linear" end
      local seed = tk._take_seed()
      local dense = tk.Dense(dim, {
        name = "dense_" .. idx, activation = act, use_bias = opts.use_bias,
        kernel_initializer = not fn_init and kinit or "zeros",
        bias_initializer = opts.bias_initializer, kernel_regularizer = l2,
        input_dim = in_dim, seed = seed,
      })
      if fn_init then
        tk.apply_initializer(dense:param("kernel"), kinit, seed, "MLPBlock kernel_initializer")
      end
      layers[#layers + 1] = dense
      if opts.dropout and opts.dropout > 0 and not (opts.no_activation_last_layer and last) then
        layers[#layers + 1] = tk.Dropout(opts.dropout, { name = "dropout_" .. idx })
      end
      local norm = normalization_block(opts.normalization, idx)
      if norm then layers[#layers + 1] = norm end
      in_dim = dim
    end
    local mlp = tk.SequentialBlock(layers, { name = opts.block_name or "mlp" })
    if opts.filter ~= nil then
      local f = opts.filter
      if not core.is_block(f) then f = tk.Filter(f) end
      mlp:set_pre(f)
    end
    local meta = { class = "MLPBlock", dimensions = dimensions }
    for k, v in pairs(opts) do
      if type(v) ~= "function" and not core.is_block(v) and k ~= "filter" then meta[k] = v end
    end
    tk.set_meta(mlp, meta)
    return mlp
  end

  local RESIDUAL_KNOWN = {
    low_rank_dim = true, activation = true, use_bias = true, dropout = true, normalization = true,
    depth = true, input_dim = true, name = true,
  }

  --- DenseResidualBlock{low_rank_dim =, activation = "relu", use_bias = true, dropout =,
  -- normalization = "batch_norm", depth = 1}: activation(x + dense(x)), the dense layer
  -- projecting back to the input width (through low_rank_dim units when given, which
  -- needs input_dim). depth > 1 stacks copies.
  function tk.DenseResidualBlock(opts)
    if opts ~= nil and type(opts) ~= "table" then fail("DenseResidualBlock: options must be a table") end
    opts = opts or {}
    check_known(opts, "DenseResidualBlock", RESIDUAL_KNOWN)
    local depth = opts.depth or 1
    if type(depth) ~= "number" or depth < 1 or depth % 1 ~= 0 then
      fail("DenseResidualBlock: depth must be a positive integer")
    end
    local layers = {}
    if opts.low_rank_dim then
      if not opts.input_dim then fail("DenseResidualBlock: low_rank_dim needs input_dim") end
      layers[#layers + 1] = tk.Dense(opts.low_rank_dim, { name = "low_rank", use_bias = false })
      layers[#layers + 1] = tk.Dense(opts.input_dim, { name = "dense", use_bias = opts.use_bias })
    else
      layers[#layers + 1] = tk.core.dense("dense", 0, { use_bias = opts.use_bias, seed = tk._take_seed(),
        ["in"] = opts.input_dim })
    end
    if opts.dropout and opts.dropout > 0 then layers[#layers + 1] = tk.Dropout(opts.dropout) end
    local norm = opts.normalization
    if norm == nil then norm = "batch_norm" end
    if norm then layers[#layers + 1] = normalization_block(norm, 0) end
    local block = tk.ResidualBlock(tk.SequentialBlock(layers, { name = "dense_block" }),
      { activation = opts.activation or "relu", name = opts.name or "dense_residual" })
    if depth > 1 then
      local list = { block }
      for i = 2, depth do list[i] = block:copy() end
      block = tk.SequentialBlock(list, { name = (opts.name or "dense_residual") .. "_stack" })
    end
    return block
  end
end
