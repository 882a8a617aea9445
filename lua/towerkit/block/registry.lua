--- The registry of named blocks: what `post = "l2-norm"`, set_post("relu") and
-- Block.parse resolve names with (tk.registry; tk.register_block adds to it).
local util = require "towerkit.util"
local layers = require "towerkit.block.layers"

local registry = {
  ["l2-norm"] = function() return layers.L2Norm() end,
}
for _, a in ipairs { "relu", "sigmoid", "tanh", "gelu", "selu", "elu", "softplus", "linear" } do
  registry[a] = function() return layers.Activation(a) end
end
for _, a in ipairs { "concat", "stack", "sum", "element-wise-sum", "cosine" } do
  registry[a] = function() return layers.Aggregation(a) end
end

--- tk.register_block(name, factory): `name` resolves to factory().
local function register_block(name, factory)
  if type(name) ~= "string" or type(factory) ~= "function" then util.argerror("register_block(name, factory)") end
  registry[name] = factory
end

return { blocks = registry, register = register_block }
