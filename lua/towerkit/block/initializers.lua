--- Lua initializer functions fn(shape, seed) for weights the core's named initializers
-- do not cover (MLPBlock kernel_initializer, EmbeddingOptions embeddings_initializers).
local core = require "towerkit.core"
local argerror = require("towerkit.util").argerror

local initializers = {}

--- tk.apply_initializer(param, fn, seed, what): fills a parameter from fn(shape, seed),
-- which returns a tensor or a nested table of that shape.
function initializers.apply(param, fn, seed, what)
  local value = fn(param:shape(), seed)
  if type(value) == "table" and not core.is_tensor(value) then value = core.tensor(value) end
  if not core.is_tensor(value) then
    argerror("%s: the initializer function returned %s, expected a tensor", what, type(value))
  end
  local ok, err = pcall(param.copy_from, param, value)
  if not ok then argerror("%s: the initializer function returned the wrong shape (%s)", what, err) end
end

return initializers
