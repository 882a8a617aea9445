--- Tensors: the core's constructors and ops, initializers, losses, and activations as
-- tensor methods (t:relu(), t:sigmoid(), ...).
local core = require "towerkit.core"
local util = require "towerkit.util"

local Tensor = util.class(core.Tensor, "Tensor", "lua/binding/tensor.c")
for _, name in ipairs { "relu", "sigmoid", "tanh", "gelu", "selu", "elu", "softplus" } do
  util.define(Tensor, name, function(self) return self:activate(name) end, "tensor.lua")
end
util.define(Tensor, "pow2", Tensor.square, "tensor.lua")

local tensor = {
  Tensor = Tensor,
  tensor = core.tensor,
  zeros = core.zeros,
  ones = core.ones,
  full = core.full,
  randn = core.randn,
  rand = core.rand,
  matmul = core.matmul,
  concat = core.concat,
  stack = core.stack,
  cosine = core.cosine,
  embedding_lookup = core.embedding_lookup,
  is_tensor = core.is_tensor,
  losses = {
    cross_entropy = core.cross_entropy,
    mse = core.mse,
    bce_with_logits = core.bce_with_logits,
  },
}

--- Fills a new tensor with a named initializer ("glorot_uniform", "he_normal", ...).
-- @param shape table of dimensions
-- @param initializer name or {kind =, a =, b =}
-- @param seed number (default 0)
function tensor.initialized(shape, initializer, seed)
  return core.init(shape, initializer, seed)
end

return tensor
