--- MLPBlock and DenseResidualBlock, Merlin's towers, as sequences of core blocks.
local core = require "towerkit.core"
local util = require "towerkit.util"
local seeds = require "towerkit.seed"
local meta = require "towerkit.block.meta"
local layers = require "towerkit.block.layers"
local combinators = require "towerkit.block.combinators"
local initializers = require "towerkit.block.initializers"

local argerror = util.argerror

local mlp = {}

-- The options of MLPBlocks that their meta cannot carry (functions, blocks, filter), by the
-- id in the meta (source): what without_input_dim needs to make the block anew.
local sources = {}

local KNOWN = {
  activation = true, use_bias = true, kernel_initializer = true, bias_initializer = true,
  kernel_regularizer = true, dropout = true, normalization = true, no_activation_last_layer = true,
  filter = true, block_name = true, input_dim = true, seed = true,
}

-- An l2 factor from a number or {l2 = x} (Keras' regularizers.l2(x)).
local function l2_of(reg, what)
  if reg == nil then return nil end
  if type(reg) == "number" then return reg end
  if type(reg) == "table" and type(reg.l2) == "number" then return reg.l2 end
  argerror("%s: kernel_regularizer must be an l2 factor or {l2 = factor}", what)
end

local function normalization_block(norm, idx)
  if norm == nil or norm == false then return nil end
  if norm == "batch_norm" then return layers.BatchNormalization { name = "batch_norm_" .. idx } end
  if core.is_block(norm) then return idx == 0 and norm or norm:copy() end
  if type(norm) == "function" then return norm() end
  argerror("MLPBlock: normalization must be \"batch_norm\", a block or a function returning one")
end

--- MLPBlock(dimensions, {activation = "relu", use_bias = true,
-- kernel_initializer = "glorot_uniform", bias_initializer = "zeros",
-- kernel_regularizer =, dropout =, normalization =, no_activation_last_layer = false,
-- filter =, block_name = "mlp", input_dim =})
-- kernel_initializer and bias_initializer: a name, a {kind =, ...} table or a Lua function
-- fn(shape, seed), for all layers or as a list with one per layer; without input_dim a
-- function for the first layer is called when the block is built (block:build, its first
-- forward, or the TwoTowerBlock it is a tower of), with the shape then known.
function mlp.MLPBlock(dimensions, opts)
  if type(dimensions) ~= "table" or #dimensions == 0 then
    argerror("MLPBlock: dimensions must be a non-empty list of layer sizes")
  end
  for i, d in ipairs(dimensions) do
    if type(d) ~= "number" or d < 1 or d % 1 ~= 0 then
      argerror("MLPBlock: dimensions[%d] must be a positive integer, got %s", i, tostring(d))
    end
  end
  if opts ~= nil and type(opts) ~= "table" then argerror("MLPBlock: options must be a table") end
  opts = opts or {}
  util.check_options(opts, KNOWN, "MLPBlock")
  local activation = opts.activation or "relu"
  if type(activation) == "table" then
    if #activation ~= #dimensions then
      argerror("MLPBlock: %d activations for %d layers", #activation, #dimensions)
    end
    for i = 1, #activation do layers.check_activation(activation[i], "MLPBlock") end
  elseif type(activation) ~= "string" then
    argerror("MLPBlock: activation must be a name or a list of names, one per layer")
  else
    layers.check_activation(activation, "MLPBlock")
  end
  if opts.dropout ~= nil and (type(opts.dropout) ~= "number" or opts.dropout < 0 or opts.dropout >= 1) then
    argerror("MLPBlock: dropout must be a rate in [0, 1), got %s", tostring(opts.dropout))
  end
  -- Initializers: one for all layers, or a list with one per layer; each a name, a
  -- {kind =, ...} table or a function fn(shape, seed) (applied once the layer's shape is
  -- known).
  local function per_layer(value, what, default)
    if type(value) == "table" and value.kind == nil and #value > 0 then
      if #value ~= #dimensions then argerror("MLPBlock: %d %ss for %d layers", #value, what, #dimensions) end
      return function(i) return value[i] end
    end
    return function() return value == nil and default or value end
  end
  local kinit = per_layer(opts.kernel_initializer, "kernel_initializer", "glorot_uniform")
  local binit = per_layer(opts.bias_initializer, "bias_initializer", "zeros")
  local l2 = l2_of(opts.kernel_regularizer, "MLPBlock")

  local list = {}
  local in_dim = opts.input_dim
  for i, dim in ipairs(dimensions) do
    local idx = i - 1
    local act = type(activation) == "table" and activation[i] or activation
    local last = i == #dimensions
    if opts.no_activation_last_layer and last then act = "linear" end
    local seed = seeds.take()
    local k, b = kinit(i), binit(i)
    local dense = layers.Dense(dim, {
      name = "dense_" .. idx, activation = act, use_bias = opts.use_bias,
      kernel_initializer = type(k) ~= "function" and k or "zeros",
      bias_initializer = type(b) ~= "function" and b or "zeros", kernel_regularizer = l2,
      input_dim = in_dim, seed = seed,
    })
    -- functions: applied now, or, without the layer's input width (a first layer without
    -- input_dim), once the block is built (build, forward, a TwoTowerBlock)
    local fns = {}
    if type(k) == "function" then
      fns[#fns + 1] = { param = "kernel", fn = k, seed = seed,
        what = ("MLPBlock kernel_initializer (layer %d)"):format(i) }
    end
    if type(b) == "function" and opts.use_bias ~= false then
      fns[#fns + 1] = { param = "bias", fn = b, seed = seed, what = ("MLPBlock bias_initializer (layer %d)"):format(i) }
    end
    if in_dim then
      for _, f in ipairs(fns) do initializers.apply(dense:param(f.param), f.fn, f.seed, f.what) end
    elseif #fns > 0 then
      initializers.defer(dense, fns)
    end
    list[#list + 1] = dense
    if opts.dropout and opts.dropout > 0 and not (opts.no_activation_last_layer and last) then
      list[#list + 1] = layers.Dropout(opts.dropout, { name = "dropout_" .. idx })
    end
    local norm = normalization_block(opts.normalization, idx)
    if norm then list[#list + 1] = norm end
    in_dim = dim
  end
  local mlp = combinators.SequentialBlock(list, { name = opts.block_name or "mlp" })
  if opts.filter ~= nil then
    local f = opts.filter
    if not core.is_block(f) then f = layers.Filter(f) end
    mlp:set_pre(f)
  end
  -- the options a config can carry: functions (and lists holding one) and blocks cannot
  local function plain(v)
    if type(v) == "function" or core.is_block(v) then return false end
    if type(v) == "table" then
      for _, x in pairs(v) do if not plain(x) then return false end end
    end
    return true
  end
  local info = { class = "MLPBlock", dimensions = dimensions }
  local carried = true
  for k, v in pairs(opts) do
    if plain(v) and k ~= "filter" then info[k] = v else carried = false end
  end
  if not carried then
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    sources[#sources + 1] = o
    info.source = #sources
  end
  meta.set(mlp, info)
  return mlp
end

--- mlp.without_input_dim(block) -> a new MLPBlock with the options of block (an MLPBlock
-- made here) but no input_dim, so its first layer takes the width of what it is called
-- on, and weights of its own (blocks among the options copied); nil for another block.
function mlp.without_input_dim(block)
  local info = meta.get(block)
  if type(info) ~= "table" or info.class ~= "MLPBlock" or type(info.dimensions) ~= "table" then return nil end
  local from = info
  if info.source ~= nil then
    from = sources[info.source]
    if not from then return nil end -- made in another Lua state
  end
  local o = {}
  for k, v in pairs(from) do o[k] = v end
  o.class, o.dimensions, o.source, o.input_dim = nil, nil, nil, nil
  for _, k in ipairs { "normalization", "filter" } do
    if core.is_block(o[k]) then o[k] = o[k]:copy() end
  end
  return mlp.MLPBlock(info.dimensions, o)
end

local RESIDUAL_KNOWN = {
  low_rank_dim = true, activation = true, use_bias = true, dropout = true, normalization = true,
  depth = true, input_dim = true, name = true,
}

--- DenseResidualBlock{low_rank_dim =, activation = "relu", use_bias = true, dropout =,
-- normalization = "batch_norm", depth = 1}: activation(x + dense(x)), the dense layer
-- projecting back to the input width (through low_rank_dim units when given, which
-- needs input_dim). depth > 1 stacks copies.
function mlp.DenseResidualBlock(opts)
  if opts ~= nil and type(opts) ~= "table" then argerror("DenseResidualBlock: options must be a table") end
  opts = opts or {}
  util.check_options(opts, RESIDUAL_KNOWN, "DenseResidualBlock")
  local depth = opts.depth or 1
  if type(depth) ~= "number" or depth < 1 or depth % 1 ~= 0 then
    argerror("DenseResidualBlock: depth must be a positive integer")
  end
  local list = {}
  if opts.low_rank_dim then
    if not opts.input_dim then argerror("DenseResidualBlock: low_rank_dim needs input_dim") end
    list[#list + 1] = layers.Dense(opts.low_rank_dim, { name = "low_rank", use_bias = false })
    list[#list + 1] = layers.Dense(opts.input_dim, { name = "dense", use_bias = opts.use_bias })
  else
    list[#list + 1] = core.dense("dense", 0, { use_bias = opts.use_bias, seed = seeds.take(),
      ["in"] = opts.input_dim })
  end
  if opts.dropout and opts.dropout > 0 then list[#list + 1] = layers.Dropout(opts.dropout) end
  local norm = opts.normalization
  if norm == nil then norm = "batch_norm" end
  if norm then list[#list + 1] = normalization_block(norm, 0) end
  local block = combinators.ResidualBlock(combinators.SequentialBlock(list, { name = "dense_block" }),
    { activation = opts.activation or "relu", name = opts.name or "dense_residual" })
  if depth > 1 then
    local list = { block }
    for i = 2, depth do list[i] = block:copy() end
    block = combinators.SequentialBlock(list, { name = (opts.name or "dense_residual") .. "_stack" })
  end
  return block
end

return mlp
