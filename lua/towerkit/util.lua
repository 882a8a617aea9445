--- Small helpers shared by the Lua modules: sorted keys, ranges, the one way to raise an error,
-- option checks, the one way to write a file, and `define`, the one way to add a method to a class.
local util = {}

--- The keys of a table, sorted (by their string form).
function util.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

--- Lua array {a, a+1, ..., b} (tk.data.range).
function util.range(a, b)
  local t = {}
  for i = a, b do t[#t + 1] = i end
  return t
end

--- is_integer(v) -> whether v is a number that is an integer of magnitude at most 2^53
-- (converts to int64 exactly; NaN and infinities are not): the Lua side of the
-- binding's tkl_is_int53.
function util.is_integer(v)
  return type(v) == "number" and v % 1 == 0 and math.abs(v) <= 2 ^ 53
end

-- Errors -------------------------------------------------------------------------------
-- Every error of the Lua layer is raised by util.argerror, at the level of the first
-- function outside lua/towerkit/ (the caller's line), however deep in the library it was
-- found: no level counting, no pcall wrappers. The message names the argument or the
-- feature it concerns; specs match it by substring.

-- "@<dir>/towerkit/": the source prefix of every module of the library
local LIBRARY = debug.getinfo(1, "S").source:match("^(@.*towerkit/)util%.lua$")

--- argerror(fmt, ...): raises fmt:format(...) at the caller's level (the first frame
-- that is not a module of the library; a C function there gives no position).
function util.argerror(fmt, ...)
  local msg = select("#", ...) > 0 and fmt:format(...) or fmt
  local level = 2
  while LIBRARY do
    local info = debug.getinfo(level, "S")
    if not info then break end
    if info.source:sub(1, #LIBRARY) ~= LIBRARY then break end
    level = level + 1
  end
  error(msg, level)
end
local argerror = util.argerror

--- An error message without its "file:line: " prefix, to be raised again with context.
function util.strip_position(msg)
  return (tostring(msg):gsub("^[^%s:]+:%d+: ", ""))
end

--- Raises "<what>: unknown option 'x'; known: a, b, c" for the first key of opts that is
-- not in the set `known`.
function util.check_options(opts, known, what)
  for k in pairs(opts) do
    if not known[k] then
      argerror("%s: unknown option '%s'; known: %s", what, tostring(k), table.concat(util.sorted_keys(known), ", "))
    end
  end
end

--- An options table: nil gives {}, anything but a table is an error naming `what`.
function util.opts_table(opts, what)
  if opts == nil then return {} end
  if type(opts) ~= "table" then argerror("%s: options must be a table, got %s", what, type(opts)) end
  return opts
end

--- An options table checked against the set `known` (opts_table, then check_options).
function util.known_options(opts, known, what)
  opts = util.opts_table(opts, what)
  util.check_options(opts, known, what)
  return opts
end

--- A short description of a value for error messages.
function util.describe(v)
  local core = require "towerkit.core"
  if core.is_block(v) then return ("%s block '%s'"):format(v:kind(), v:name()) end
  if core.is_tensor(v) then return "a tensor" end
  -- required here: towerkit.schema uses this module
  if require("towerkit.schema").Schema.is_schema(v) then return "a Schema" end
  return type(v)
end

-- Files --------------------------------------------------------------------------------

--- write_atomic(path, text): text (a string, any bytes) as the file at path, through the
-- core's atomic files (towerkit.h, "Files"): a temporary file beside path, checked
-- writes, fsync, rename over path, fsync of the directory. Every file the Lua layer
-- writes goes through here. On failure (a missing directory, a full disk) raises an
-- error naming the path and the system error; the temporary file is removed and the old
-- file at path is left as it was.
function util.write_atomic(path, text)
  if type(path) ~= "string" or path == "" then
    argerror("write_atomic: path must be a non-empty string, got %s", type(path))
  end
  if type(text) ~= "string" then argerror("write_atomic: %s: text must be a string, got %s", path, type(text)) end
  local ok, err = pcall(require("towerkit.core").write_atomic, path, text)
  if not ok then argerror("%s", util.strip_position(err)) end
end

-- Classes ------------------------------------------------------------------------------
-- A method is defined once. `define` records where each method of a class comes from, so
-- that a second definition is an error at load time naming both places, instead of a
-- silent override that depends on the order the modules load in.

local origins = setmetatable({}, { __mode = "k" }) -- class -> {name -> where}

--- class(methods, name, where): makes `methods` (a method table, possibly filled in C) a
-- class named `name` for define; its present entries count as defined in `where`.
function util.class(methods, name, where)
  local o = { [0] = name }
  for k in pairs(methods) do o[k] = where end
  origins[methods] = o
  return methods
end

--- define(class, name, fn, where): adds the method `name` to class (a table made a
-- class by util.class). Raises "Block:copy is defined twice (block.c and
-- block/weights.lua)" when it has one already.
function util.define(class, name, fn, where)
  local o = assert(origins[class], "define: not a class (see util.class)")
  if o[name] ~= nil or rawget(class, name) ~= nil then
    error(("%s:%s is defined twice (%s and %s)"):format(o[0], name, o[name] or "?", where), 2)
  end
  o[name] = where
  rawset(class, name, fn)
end

--- take(class, name) -> fn: removes a method from class so that a wrapper can be
-- defined in its place (the caller keeps fn under a private name). Explicit, so that
-- wrapping a method is never mistaken for defining it twice.
function util.take(class, name)
  local o = assert(origins[class], "take: not a class (see util.class)")
  local fn = assert(rawget(class, name), "take: no such method")
  o[name] = nil
  rawset(class, name, nil)
  return fn
end

--- methods(where) -> a table that collects the methods of one file: assigning a name
-- twice is an error; util.register adds them all to a class.
function util.methods(where)
  local list, set = {}, {}
  return setmetatable({}, {
    __newindex = function(_, name, fn)
      if set[name] then error(("%s is defined twice in %s"):format(name, where), 2) end
      set[name] = fn
      list[#list + 1] = name
    end,
    __index = function(_, name) return set[name] end,
    __call = function() return list, set, where end,
  })
end

--- register(class, methods): defines every method of a util.methods table on class.
function util.register(class, methods)
  local list, set, where = methods()
  for _, name in ipairs(list) do util.define(class, name, set[name], where) end
  return class
end

return util
