--- Block methods about weights: named_parameters, get_weights, set_weights and Keras'
-- attributes as methods (weights, variables, trainable_weights, non_trainable_weights,
-- trainable, losses, dtype, ...).
local core = require "towerkit.core"
local util = require "towerkit.util"

local argerror, describe = util.argerror, util.describe

local methods = util.methods("block/weights.lua")

-- The parameter tensors (live, not copies) for which keep({name, tensor, trainable =})
-- holds, in named_parameters order.
local function params_where(self, keep)
  local out = {}
  for _, p in ipairs(self:parameters(true)) do
    if keep(p) then out[#out + 1] = p[2] end
  end
  return out
end

--- Parameters as {name, tensor} pairs, named by block path.
function methods:named_parameters()
  local out = {}
  for i, p in ipairs(self:parameters(true)) do out[i] = { p[1], p[2] } end
  return out
end

function methods:trainable_weights()
  local out = {}
  for i, p in ipairs(self:parameters(true, true)) do out[i] = p[2] end
  return out
end

--- Copies of the weights, in named_parameters order.
function methods:get_weights()
  local out = {}
  for i, p in ipairs(self:parameters(true)) do out[i] = p[2]:clone() end
  return out
end

--- Sets every weight from a list in named_parameters order.
function methods:set_weights(weights)
  if type(weights) ~= "table" then argerror("set_weights: a list of tensors expected") end
  local params = self:parameters(true)
  if #weights ~= #params then
    argerror("set_weights: block '%s' has %d weights, got %d", self:name(), #params, #weights)
  end
  for i, p in ipairs(params) do
    local w = weights[i]
    if type(w) == "table" and not core.is_tensor(w) then w = core.tensor(w) end
    if not core.is_tensor(w) then argerror("set_weights: entry %d is not a tensor", i) end
    local want, got = p[2]:shape(), w:shape()
    local same = #want == #got
    for d = 1, #want do same = same and want[d] == got[d] end
    if not same then
      argerror("set_weights: '%s' has shape [%s], got [%s]", p[1], table.concat(want, ", "), table.concat(got, ", "))
    end
    p[2]:copy_from(w)
  end
end

--- block:weights() -> {tensor, ...}: every parameter (the live tensors, not copies) in
-- named_parameters() order, the order of get_weights().
function methods:weights()
  return params_where(self, function() return true end)
end

--- block:variables(): the same as weights() (Keras' alias).
function methods:variables() return self:weights() end

--- block:trainable_variables(): the same as trainable_weights().
function methods:trainable_variables() return self:trainable_weights() end

--- block:non_trainable_weights() -> {tensor, ...}: the parameters no optimizer updates
-- (batch-norm moving statistics).
function methods:non_trainable_weights()
  return params_where(self, function(p) return not p.trainable end)
end

--- block:non_trainable_variables(): the same as non_trainable_weights().
function methods:non_trainable_variables() return self:non_trainable_weights() end

--- block:trainable() -> boolean: true unless the block has parameters and none of them
-- is trainable. (Freezing a block is not available from Lua.)
function methods:trainable()
  local params = self:parameters(true)
  if #params == 0 then return true end
  for _, p in ipairs(params) do
    if p.trainable then return true end
  end
  return false
end

local function is_context(v)
  return v ~= nil and getmetatable(v) == getmetatable(core.current_context())
end

--- block:losses([ctx]) -> {tensor} or {}: the regularisation losses that forward
-- passes in ctx (default: the current context) added since its last reset (Dense
-- kernel_regularizer, embeddings_l2_reg in training), as one summed scalar tensor.
function methods:losses(ctx)
  if ctx ~= nil and not is_context(ctx) then
    argerror("losses: ctx must be a tk.Context, got %s", describe(ctx))
  end
  local added = (ctx or core.current_context()):added_loss()
  return added and { added } or {}
end

--- block:dtype() -> "float32": the dtype of the block's weights (Keras' Layer.dtype).
function methods:dtype()
  local params = self:parameters(true)
  return params[1] and params[1][2]:dtype() or "float32"
end

--- block:variable_dtype(): the same as dtype().
function methods:variable_dtype() return self:dtype() end

--- block:compute_dtype() -> "float32": blocks compute in float32 (ids are int64
-- inputs, never computed on).
function methods.compute_dtype() return "float32" end

return { methods = methods }
