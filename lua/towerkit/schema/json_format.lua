--- Merlin's schema.json, the TF-Metadata JSON mapping that NVTabular writes: a column as
-- a feature object and back, and the checks of a file's structure. Errors name the file
-- and the feature or key: "schema.json: feature 'userId': intDomain.max is not an
-- integer string: \"abc\"". This module works on plain values (a column's fields, the
-- options that build one); towerkit.schema.column and .schema make the objects.
local json = require "towerkit.json"
local common = require "towerkit.schema.common"
local is_integer = require("towerkit.util").is_integer

local abs = math.abs
local concat = table.concat
local raise, repr = common.raise, common.repr
local deep_copy, as_array, is_null = common.deep_copy, common.as_array, common.is_null
local is_array, is_object, int_string = common.is_array, common.is_object, common.int_string
local DTYPES = common.DTYPES

local format = {}

-- Writing ------------------------------------------------------------------------------

--- The column as a schema.json feature object (plain tables, ready for json.encode).
function format.feature_table(col)
  local extra = col._extra or {}
  local f = deep_copy(extra.feature) or {}
  f.name = col.name
  f.type = DTYPES[col.dtype].type
  local d = col.int_domain
  if d then
    local t = deep_copy(extra.int_domain) or {}
    t.name = d.name
    if d.min ~= 0 then t.min = int_string(d.min) end
    if d.max ~= nil then t.max = int_string(d.max) end
    if d.is_categorical then t.isCategorical = true end
    f.intDomain = t
  end
  local vc = col.value_count
  if vc then
    local t = deep_copy(extra.value_count) or {}
    if vc.min ~= 0 then t.min = int_string(vc.min) end
    if vc.max ~= nil then t.max = int_string(vc.max) end
    f.valueCount = t
  end
  local a = deep_copy(extra.annotation) or {}
  if #col.tags > 0 then a.tag = as_array(deep_copy(col.tags)) end
  local meta = deep_copy(col.properties)
  meta.is_list = col.is_list
  meta.is_ragged = col.is_ragged
  meta.dtype_item_size = extra.item_size or DTYPES[col.dtype].bits
  local metas = as_array { meta }
  for _, m in ipairs(extra.more_metadata or {}) do metas[#metas + 1] = deep_copy(m) end
  a.extraMetadata = metas
  f.annotation = a
  return f
end

-- Decoding -------------------------------------------------------------------------------
-- tk.json.decode gives an empty JSON array as a plain empty table, which encodes back
-- as {}. To keep `[]` in properties and unknown keys through a round trip, empty
-- arrays are swapped for a marker before decoding and restored as marked arrays.
local EMPTY_ARRAY = "\1towerkit:empty-array"
local EMPTY_ARRAY_JSON = '["\\u0001towerkit:empty-array"]'

local function mark_empty_arrays(text)
  local out, pos, i, n = {}, 1, 1, #text
  while i <= n do
    local j = text:find('[%["]', i)
    if not j then break end
    if text:byte(j) == 34 then -- a string: skip to its closing quote
      local k = j + 1
      i = n + 1
      while k <= n do
        local q = text:find('["\\]', k)
        if not q then break end
        if text:byte(q) == 92 then
          k = q + 2
        else
          i = q + 1
          break
        end
      end
    else
      local after = text:match("^%s*%]()", j + 1)
      if after then
        out[#out + 1] = text:sub(pos, j - 1)
        out[#out + 1] = EMPTY_ARRAY_JSON
        pos = after
        i = after
      else
        i = j + 1
      end
    end
  end
  if pos == 1 then return text, false end
  out[#out + 1] = text:sub(pos)
  return concat(out), true
end

local function restore_empty_arrays(v)
  if type(v) ~= "table" then return v end
  if v[1] == EMPTY_ARRAY and v[2] == nil and next(v, next(v)) == nil then return as_array {} end
  for k, x in pairs(v) do v[k] = restore_empty_arrays(x) end
  return v
end

--- Decodes schema.json text; errors name source.
function format.decode(text, source)
  local marked, changed = mark_empty_arrays(text)
  local ok, value, err = pcall(json.decode, marked)
  if ok and value ~= nil then
    return changed and restore_empty_arrays(value) or value
  end
  if changed then -- report the position in the original text
    ok, value, err = pcall(json.decode, text)
  end
  if not ok then raise("%s: %s", source, tostring(value)) end
  raise("%s: %s", source, tostring(err))
end

-- Reading schema.json --------------------------------------------------------------
local FEATURE_KEYS = { name = true, type = true, intDomain = true, valueCount = true, annotation = true }
local INT_DOMAIN_KEYS = { name = true, min = true, max = true, isCategorical = true }
local VALUE_COUNT_KEYS = { min = true, max = true }
local ANNOTATION_KEYS = { tag = true, extraMetadata = true }
local INT_BITS = { [8] = "int8", [16] = "int16", [32] = "int32", [64] = "int64" }
local FLOAT_BITS = { [16] = "float16", [32] = "float32", [64] = "float64" }

-- The entries of t that are not in known (nil when there are none).
local function unknown_keys(t, known)
  local out
  for k, v in pairs(t) do
    if not known[k] then
      out = out or {}
      out[k] = deep_copy(v)
    end
  end
  return out
end

local function absent(v) return v == nil or is_null(v) end

-- An int64 field of the file: a decimal string (or an integral number).
local function read_int64(v, where, key)
  if absent(v) then return nil end
  if type(v) == "string" and v:match("^%-?%d+$") then
    local n = tonumber(v)
    if abs(n) > 2 ^ 53 then raise("%s: %s is out of range (beyond 2^53): %s", where, key, repr(v)) end
    return n
  end
  if is_integer(v) then return v end
  raise("%s: %s is not an integer string: %s", where, key, repr(v))
end

local function read_range(t, where, field, known)
  if not is_object(t) then raise("%s: %s is not an object: %s", where, field, repr(t)) end
  local lo = read_int64(t.min, where, field .. ".min") or 0
  local hi = read_int64(t.max, where, field .. ".max")
  if hi ~= nil and lo > hi then
    raise("%s: %s.min (%s) is greater than %s.max (%s)", where, field, int_string(lo), field, int_string(hi))
  end
  return lo, hi, unknown_keys(t, known)
end

local function read_feature(f, i, file, seen)
  if not is_object(f) then raise("%s: feature[%d] is not an object: %s", file, i - 1, repr(f)) end
  local name = f.name
  if type(name) ~= "string" or name == "" then
    if absent(name) then raise("%s: feature[%d] has no name", file, i - 1) end
    raise("%s: feature[%d] has a name that is not a non-empty string: %s", file, i - 1, repr(name))
  end
  local where = ("%s: feature '%s'"):format(file, name)
  if seen[name] then raise("%s: the name appears twice (features %d and %d)", where, seen[name] - 1, i - 1) end
  seen[name] = i

  local extra = { feature = unknown_keys(f, FEATURE_KEYS) }
  local opts = {}

  local ftype = f.type
  if absent(ftype) then raise("%s: missing type (INT, FLOAT or BYTES)", where) end
  if ftype ~= "INT" and ftype ~= "FLOAT" and ftype ~= "BYTES" then
    raise("%s: unknown type %s (expected INT, FLOAT or BYTES)", where, repr(ftype))
  end

  if not absent(f.intDomain) then
    if ftype ~= "INT" then raise("%s: intDomain on a %s feature (only INT features have one)", where, ftype) end
    local d = f.intDomain
    local lo, hi, unknown = read_range(d, where, "intDomain", INT_DOMAIN_KEYS)
    local dname = d.name
    if absent(dname) then dname = nil end
    if dname ~= nil and (type(dname) ~= "string" or dname == "") then
      raise("%s: intDomain.name is not a non-empty string: %s", where, repr(dname))
    end
    local cat = d.isCategorical
    if absent(cat) then cat = false end
    if type(cat) ~= "boolean" then raise("%s: intDomain.isCategorical is not a boolean: %s", where, repr(cat)) end
    opts.int_domain = { min = lo, max = hi, name = dname, is_categorical = cat }
    extra.int_domain = unknown
  end

  if not absent(f.valueCount) then
    local lo, hi, unknown = read_range(f.valueCount, where, "valueCount", VALUE_COUNT_KEYS)
    opts.value_count = { min = lo, max = hi }
    extra.value_count = unknown
  end

  local meta = {}
  local tags = {}
  if not absent(f.annotation) then
    local a = f.annotation
    if not is_object(a) then raise("%s: annotation is not an object: %s", where, repr(a)) end
    extra.annotation = unknown_keys(a, ANNOTATION_KEYS)
    if not absent(a.tag) then
      if not is_array(a.tag) then raise("%s: annotation.tag is not a list of strings: %s", where, repr(a.tag)) end
      for j, t in ipairs(a.tag) do
        if type(t) ~= "string" or t == "" then
          raise("%s: annotation.tag[%d] is not a non-empty string: %s", where, j - 1, repr(t))
        end
        tags[#tags + 1] = t
      end
    end
    local metas = a.extraMetadata
    if not absent(metas) then
      if not is_array(metas) then raise("%s: annotation.extraMetadata is not a list: %s", where, repr(metas)) end
      if metas[1] ~= nil and not is_object(metas[1]) then
        raise("%s: annotation.extraMetadata[0] is not an object: %s", where, repr(metas[1]))
      end
      meta = deep_copy(metas[1] or {})
      if #metas > 1 then
        extra.more_metadata = {}
        for j = 2, #metas do extra.more_metadata[j - 1] = deep_copy(metas[j]) end
      end
    end
  end
  opts.tags = tags

  -- is_list, is_ragged and dtype_item_size live in extraMetadata[0] but are fields.
  local mkey = "annotation.extraMetadata[0]."
  for _, k in ipairs { "is_list", "is_ragged" } do
    if is_null(meta[k]) then meta[k] = nil end
    if meta[k] ~= nil and type(meta[k]) ~= "boolean" then
      raise("%s: %s%s is not a boolean: %s", where, mkey, k, repr(meta[k]))
    end
  end
  local item_size = meta.dtype_item_size
  if is_null(item_size) then item_size = nil end
  if item_size ~= nil and type(item_size) ~= "number" then
    raise("%s: %sdtype_item_size is not a number: %s", where, mkey, repr(item_size))
  end
  if opts.value_count then
    -- as Merlin: a valueCount makes a list, ragged when min != max
    opts.is_list = true
  else
    opts.is_list = meta.is_list or false
    opts.is_ragged = meta.is_ragged or false
    if opts.is_ragged and not opts.is_list then
      raise("%s: %sis_ragged is true but is_list is false", where, mkey)
    end
  end
  meta.is_list, meta.is_ragged, meta.dtype_item_size = nil, nil, nil
  opts.properties = meta

  -- dtype: the feature type and dtype_item_size, with Merlin's defaults
  local dtype
  if ftype == "INT" then
    dtype = INT_BITS[item_size] or "int64"
  elseif ftype == "FLOAT" then
    dtype = FLOAT_BITS[item_size] or "float64"
  else
    dtype = "string"
  end
  opts.dtype = dtype
  if item_size ~= nil and item_size ~= DTYPES[dtype].bits then extra.item_size = item_size end

  return { name = name, opts = opts, where = where, extra = extra }
end

--- read_table(t, file) -> features, extra: checks a decoded schema.json table; features
-- lists {name =, opts =, where =, extra =}, what builds each column (where prefixes its
-- error messages, extra keeps the file's unknown keys); extra holds the unknown
-- top-level keys.
function format.read_table(t, file)
  if not is_object(t) then raise("%s: the top level is not a JSON object", file) end
  local features = t.feature
  if absent(features) then raise("%s: missing \"feature\" array", file) end
  if not is_array(features) then raise("%s: \"feature\" is not an array", file) end
  -- an empty table is an array only when marked one (json.decode marks every array):
  -- {"feature": {}} is an object, and not an empty schema
  local mt = getmetatable(features)
  if next(features) == nil and not (mt and mt.__jsontype == "array") then
    raise("%s: \"feature\" is an object, not an array", file)
  end
  local out, seen = {}, {}
  for i, f in ipairs(features) do out[i] = read_feature(f, i, file, seen) end
  return out, unknown_keys(t, { feature = true })
end

return format
