--- The core's layers as block constructors: Dense, Activation, L2Norm, Dropout,
-- BatchNormalization, Filter, AsTabular, Aggregation and LuaBlock (a Lua function).
local core = require "towerkit.core"
local util = require "towerkit.util"
local seed = require "towerkit.seed"

local argerror, opts_table = util.argerror, util.opts_table

local layers = {}

--- Raises "<what>: unknown activation 'x'; known: linear, relu, ..." unless name is an
-- activation of the core.
function layers.check_activation(name, what)
  if not core.is_activation(name) then
    local shown = type(name) == "string" and ("'" .. name .. "'") or ("(a " .. type(name) .. ")")
    argerror("%s: unknown activation %s; known: %s", what, shown, core.names("activation"))
  end
end

--- Dense layer: act(x W + b) with W [in, out]. Options: activation, use_bias,
-- kernel_initializer, bias_initializer, kernel_regularizer (an l2 factor),
-- input_dim (else taken from the first input), name, seed.
function layers.Dense(units, opts)
  opts = opts_table(opts, "Dense")
  if type(units) ~= "number" or units < 1 or units % 1 ~= 0 then
    argerror("Dense: units must be a positive integer, got %s", tostring(units))
  end
  if opts.activation ~= nil then layers.check_activation(opts.activation, "Dense") end
  return core.dense(opts.name or "dense", units, {
    ["in"] = opts.input_dim,
    activation = opts.activation,
    use_bias = opts.use_bias,
    kernel_initializer = opts.kernel_initializer,
    bias_initializer = opts.bias_initializer,
    kernel_l2 = opts.kernel_regularizer,
    seed = seed.take(opts),
  })
end

function layers.Activation(name, opts)
  opts = opts_table(opts, "Activation")
  return core.activation(opts.name or name or "activation", name)
end

function layers.L2Norm(opts)
  opts = opts_table(opts, "L2Norm")
  return core.l2norm_block(opts.name or "l2_norm")
end

function layers.Dropout(rate, opts)
  opts = opts_table(opts, "Dropout")
  if type(rate) ~= "number" then argerror("Dropout: rate must be a number") end
  return core.dropout_block(opts.name or "dropout", rate)
end

--- Batch normalisation; options momentum (0.99), epsilon (1e-3), dim, name.
function layers.BatchNormalization(opts)
  opts = opts_table(opts, "BatchNormalization")
  return core.batch_norm(opts.name or "batch_norm", opts)
end

--- Keeps (or with {exclude = true} drops) named features of a tabular value.
function layers.Filter(names, opts)
  opts = opts_table(opts, "Filter")
  if type(names) == "string" then names = { names } end
  if type(names) ~= "table" then argerror("Filter: a list of feature names expected") end
  if names.column_names then names = names:column_names() end -- a Schema
  return core.filter(opts.name or "filter", names, opts.exclude and true or false)
end

function layers.AsTabular(output_name, opts)
  opts = opts_table(opts, "AsTabular")
  if type(output_name) ~= "string" then argerror("AsTabular: an output name expected") end
  return core.as_tabular(opts.name or "as_tabular", output_name)
end

function layers.Aggregation(name, opts)
  opts = opts_table(opts, "Aggregation")
  return core.aggregation(opts.name or name, name)
end

--- A block written as a Lua function of a tensor or a table of tensors. It trains
-- like any other (its ops are on the tape) but runs only in this Lua state and
-- cannot be restored from a config.
function layers.LuaBlock(fn, opts)
  if type(fn) ~= "function" then argerror("LuaBlock: a function expected") end
  if type(opts) == "string" then opts = { name = opts } end
  opts = opts_table(opts, "LuaBlock")
  return core.lua_block(opts.name or "lua_block", fn)
end

return layers
