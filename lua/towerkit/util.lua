--- Small helpers shared by the Lua modules.
local util = {}

--- The keys of a table, sorted (by their string form).
function util.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

--- Raises "<what>: unknown option 'x'; known: a, b, c" for the first key of opts that is
-- not in the set `known`. level is passed to error (default: the caller's caller).
function util.check_options(opts, known, what, level)
  for k in pairs(opts) do
    if not known[k] then
      error(("%s: unknown option '%s'; known: %s"):format(what, tostring(k),
        table.concat(util.sorted_keys(known), ", ")), (level or 2) + 1)
    end
  end
end

return util
