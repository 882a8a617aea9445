--- Helpers of the schema modules: values as schema.json holds them (int64 strings,
-- arrays, null), deep copies and comparisons, and values as error messages show them.
local json = require "towerkit.json"
local util = require "towerkit.util"

local common = {}

local function is_null(v) return v ~= nil and v == json.null end

-- Tables that encode as JSON arrays even when empty.
local ARRAY_MT = { __jsontype = "array" }
local function as_array(t) return setmetatable(t, ARRAY_MT) end
local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = deep_copy(x) end
  return setmetatable(t, getmetatable(v))
end

local function deep_equal(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, x in pairs(a) do
    if not deep_equal(x, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

local function is_array(t)
  if type(t) ~= "table" then return false end
  local n, count = #t, 0
  for k in pairs(t) do
    if type(k) ~= "number" then return false end
    count = count + 1
  end
  return count == n
end

local function is_object(t)
  if type(t) ~= "table" or getmetatable(t) == ARRAY_MT then return false end
  for k in pairs(t) do
    if type(k) ~= "string" then return false end
  end
  return true
end

-- An integer as Merlin's JSON writes an int64: a decimal string.
local function int_string(n)
  if n == 0 then return "0" end
  return ("%.0f"):format(n)
end

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' or c == "\\" then return "\\" .. c end
    return ("\\u%04x"):format(c:byte())
  end) .. '"'
end

-- A value as it reads in an error message: JSON-like, cut short when long.
local function repr(v)
  local t = type(v)
  if t == "string" then return quote(v) end
  if t == "number" then return util.is_integer(v) and int_string(v) or tostring(v) end
  if v == nil then return "nil" end
  if is_null(v) then return "null" end
  if t == "table" then
    local ok, s = pcall(json.encode, v)
    if ok then return #s > 60 and s:sub(1, 57) .. "..." or s end
    return "a table"
  end
  if t == "boolean" then return tostring(v) end
  return "a " .. t
end

-- dtype -> TF-Metadata feature type and the dtype_item_size Merlin writes for it.
common.DTYPES = {
  int8 = { type = "INT", bits = 8 }, int16 = { type = "INT", bits = 16 },
  int32 = { type = "INT", bits = 32 }, int64 = { type = "INT", bits = 64 },
  float16 = { type = "FLOAT", bits = 16 }, float32 = { type = "FLOAT", bits = 32 },
  float64 = { type = "FLOAT", bits = 64 },
  string = { type = "BYTES", bits = 64 },
}

common.is_null = is_null
common.as_array = as_array
common.ARRAY_MT = ARRAY_MT
common.deep_copy = deep_copy
common.deep_equal = deep_equal
common.is_array = is_array
common.is_object = is_object
common.int_string = int_string
common.repr = repr
common.sorted_keys = util.sorted_keys
common.raise = util.argerror

return common
