--- Debug: Merlin's Debug block, the identity that shows what passes through.
local core = require "towerkit.core"
local util = require "towerkit.util"
local layers = require "towerkit.block.layers"

local argerror, describe = util.argerror, util.describe

local DEBUG_OPTS = { name = true, hook = true }

-- The shapes of a value: "float32 [2, 3]" or "{a = [2], b = [2, 4]}".
local function value_text(v)
  if core.is_tensor(v) then return ("%s [%s]"):format(v:dtype(), table.concat(v:shape(), ", ")) end
  local parts = {}
  for _, k in ipairs(util.sorted_keys(v)) do
    parts[#parts + 1] = ("%s = [%s]"):format(k, table.concat(v[k]:shape(), ", "))
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

--- tk.Debug({name = "debug", hook = fn}) -> block: the identity, which first calls
-- hook(value, text) (text describes the shapes), or prints "<name>: <text>" without a
-- hook. A Lua block: it runs only in this Lua state and is not restored by from_config.
local function Debug(opts)
  opts = util.known_options(opts, DEBUG_OPTS, "Debug")
  if opts.hook ~= nil and type(opts.hook) ~= "function" then
    argerror("Debug: hook must be a function, got %s", describe(opts.hook))
  end
  local name = opts.name or "debug"
  if type(name) ~= "string" then argerror("Debug: name must be a string, got %s", describe(name)) end
  local hook = opts.hook or function(_, text) print(name .. ": " .. text) end
  return layers.LuaBlock(function(x)
    hook(x, value_text(x))
    return x
  end, { name = name })
end

return { Debug = Debug }
