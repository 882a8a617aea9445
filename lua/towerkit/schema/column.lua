--- ColumnSchema: one column (feature) of a schema: name, dtype, tags, integer domain
-- (whose `max + 1` is the cardinality of an embedding table), list value counts and
-- free-form properties. Columns are values: treat them as immutable and derive new ones
-- with the `with_*` methods.
local common = require "towerkit.schema.common"
local tags = require "towerkit.schema.tags"
local format = require "towerkit.schema.json_format"

local concat = table.concat
local raise, repr, sorted_keys = common.raise, common.repr, common.sorted_keys
local is_integer = require("towerkit.util").is_integer
local deep_copy, deep_equal, int_string = common.deep_copy, common.deep_equal, common.int_string
local DTYPES = common.DTYPES
local COLLISIONS = tags.COLLISIONS
local tag_list, atomic_set, set_to_list, check_collisions, has_all_parts =
  tags.list, tags.atomic_set, tags.set_to_list, tags.check_collisions, tags.has_all_parts
local feature_table = format.feature_table

local DTYPE_NAMES = concat(sorted_keys(DTYPES), ", ")
local RESERVED_PROPERTIES = { is_list = true, is_ragged = true, dtype_item_size = true }
local OPTIONS = {
  tags = true, dtype = true, properties = true, is_list = true, is_ragged = true,
  int_domain = true, value_count = true,
}

local Column = {}
local ColumnMT = { __index = Column }

local function is_column(v) return getmetatable(v) == ColumnMT end

local function check_range(t, field, where, allowed)
  if t == nil then return nil end
  if type(t) ~= "table" then raise("%s: %s must be a table, got %s", where, field, repr(t)) end
  for _, k in ipairs(sorted_keys(t)) do
    if not allowed[k] then
      raise("%s: %s has no field %s (known: %s)", where, field, repr(k), concat(sorted_keys(allowed), ", "))
    end
  end
  local lo, hi = t.min, t.max
  if lo == nil then lo = 0 end
  if not is_integer(lo) then raise("%s: %s.min must be an integer, got %s", where, field, repr(lo)) end
  if hi ~= nil and not is_integer(hi) then
    raise("%s: %s.max must be an integer, got %s", where, field, repr(hi))
  end
  if hi ~= nil and lo > hi then
    raise("%s: %s.min (%s) is greater than %s.max (%s)", where, field, int_string(lo), field, int_string(hi))
  end
  return lo, hi
end

-- Builds a column; where prefixes error messages; extra holds what a schema file had
-- beyond the known fields, kept so that writing the file back loses nothing.
local function new_column(name, opts, where, extra)
  if type(name) ~= "string" or name == "" then
    raise("ColumnSchema: name must be a non-empty string, got %s", repr(name))
  end
  where = where or ("ColumnSchema '" .. name .. "'")
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then raise("%s: options must be a table, got %s", where, repr(opts)) end
  for _, k in ipairs(sorted_keys(opts)) do
    if not OPTIONS[k] then
      raise("%s: unknown option %s (known: %s)", where, repr(k), concat(sorted_keys(OPTIONS), ", "))
    end
  end

  -- tags
  local tags = opts.tags
  if tags == nil then tags = {} end
  local set = atomic_set(tag_list(tags, where))

  -- int_domain
  local int_domain
  if opts.int_domain ~= nil then
    local d = opts.int_domain
    local lo, hi = check_range(d, "int_domain", where,
      { min = true, max = true, name = true, is_categorical = true })
    local dname = d.name
    if dname == nil then dname = name end
    if type(dname) ~= "string" or dname == "" then
      raise("%s: int_domain.name must be a non-empty string, got %s", where, repr(dname))
    end
    local cat = d.is_categorical
    if cat == nil then cat = false end
    if type(cat) ~= "boolean" then
      raise("%s: int_domain.is_categorical must be a boolean, got %s", where, repr(cat))
    end
    if cat then set.categorical = true end
    int_domain = { min = lo, max = hi, name = dname, is_categorical = set.categorical or false }
  end
  check_collisions(set, where)

  -- dtype
  local dtype = opts.dtype
  if dtype == nil then
    dtype = (int_domain or set.categorical) and "int64" or "float32"
  end
  if type(dtype) ~= "string" or not DTYPES[dtype] then
    raise("%s: dtype must be one of %s, got %s", where, DTYPE_NAMES, repr(dtype))
  end
  if int_domain and DTYPES[dtype].type ~= "INT" then
    raise("%s: int_domain needs an integer dtype, got %s", where, dtype)
  end

  -- properties
  local properties = opts.properties
  if properties == nil then properties = {} end
  if type(properties) ~= "table" then
    raise("%s: properties must be a table, got %s", where, repr(properties))
  end
  for _, k in ipairs(sorted_keys(RESERVED_PROPERTIES)) do
    if properties[k] ~= nil then
      raise("%s: properties.%s is reserved (it is written from the column's fields)", where, k)
    end
  end

  -- value_count, is_list, is_ragged
  local value_count
  if opts.value_count ~= nil then
    local lo, hi = check_range(opts.value_count, "value_count", where, { min = true, max = true })
    value_count = { min = lo, max = hi }
  end
  local is_list, is_ragged = opts.is_list, opts.is_ragged
  if is_list ~= nil and type(is_list) ~= "boolean" then
    raise("%s: is_list must be a boolean, got %s", where, repr(is_list))
  end
  if is_ragged ~= nil and type(is_ragged) ~= "boolean" then
    raise("%s: is_ragged must be a boolean, got %s", where, repr(is_ragged))
  end
  if is_list == nil then is_list = value_count ~= nil end
  if value_count then
    if not is_list then raise("%s: value_count is set but is_list is false", where) end
    local ragged = value_count.max == nil or value_count.min ~= value_count.max
    if is_ragged == nil then
      is_ragged = ragged
    elseif is_ragged ~= ragged then
      raise("%s: is_ragged is %s but value_count has min %s and max %s", where, tostring(is_ragged),
        int_string(value_count.min), value_count.max and int_string(value_count.max) or "unbounded")
    end
  end
  if is_ragged == nil then is_ragged = false end
  if is_ragged and not is_list then raise("%s: is_ragged is true but is_list is false", where) end

  return setmetatable({
    name = name,
    tags = set_to_list(set),
    properties = deep_copy(properties),
    dtype = dtype,
    is_list = is_list,
    is_ragged = is_ragged,
    int_domain = int_domain,
    value_count = value_count,
    _extra = extra and next(extra) and deep_copy(extra) or nil,
  }, ColumnMT)
end

-- The constructor options that rebuild col, with changes applied.
local function column_opts(col, changes)
  local opts = {
    tags = col.tags,
    dtype = col.dtype,
    properties = col.properties,
    is_list = col.is_list,
    is_ragged = col.is_ragged,
    int_domain = col.int_domain,
    value_count = col.value_count,
  }
  for k, v in pairs(changes or {}) do opts[k] = v end
  return opts
end

local function check_self(col, method)
  if not is_column(col) then
    raise("ColumnSchema:%s: call it with a colon on a ColumnSchema, got %s", method, repr(col))
  end
end

--- The cardinality of the column's integer domain: `int_domain.max + 1`, or nil when
-- the column has no domain or its domain has no max.
function Column:cardinality()
  check_self(self, "cardinality")
  local d = self.int_domain
  if d and d.max then return d.max + 1 end
  return nil
end

--- True when the column has tag; a compound tag (user_id) needs all of its parts.
function Column:has_tag(tag)
  check_self(self, "has_tag")
  if type(tag) ~= "string" or tag == "" then
    raise("has_tag: tag must be a non-empty string, got %s", repr(tag))
  end
  return has_all_parts(self.tags, tag)
end

--- A copy of the column with more tags: `col:with_tags(tk.Tags.USER, "x")` or
-- `col:with_tags{...}`. As in Merlin, existing tags that collide with a new one
-- (categorical and continuous, ...) are removed.
function Column:with_tags(...)
  check_self(self, "with_tags")
  local where = "ColumnSchema '" .. self.name .. "': with_tags"
  local tags = ...
  if select("#", ...) ~= 1 or type(tags) ~= "table" then tags = { ... } end
  local added = atomic_set(tag_list(tags, where))
  local set = {}
  for _, t in ipairs(self.tags) do
    local collides = false
    for _, c in ipairs(COLLISIONS[t] or {}) do
      if added[c] then collides = true end
    end
    if not collides then set[t] = true end
  end
  for t in pairs(added) do set[t] = true end
  local changes = { tags = set_to_list(set) }
  if not set.categorical and self.int_domain and self.int_domain.is_categorical then
    local d = deep_copy(self.int_domain)
    d.is_categorical = false
    changes.int_domain = d
  end
  return new_column(self.name, column_opts(self, changes), nil, self._extra)
end

--- A copy of the column with properties merged into its own (new values win).
function Column:with_properties(properties)
  check_self(self, "with_properties")
  if type(properties) ~= "table" then
    raise("ColumnSchema '%s': with_properties: properties must be a table, got %s", self.name, repr(properties))
  end
  local merged = deep_copy(self.properties)
  for k, v in pairs(properties) do merged[k] = deep_copy(v) end
  return new_column(self.name, column_opts(self, { properties = merged }), nil, self._extra)
end

--- A copy of the column with another name.
function Column:with_name(name)
  check_self(self, "with_name")
  return new_column(name, column_opts(self), nil, self._extra)
end

--- A copy of the column with another dtype; opts {is_list =, is_ragged =} as Merlin's
-- with_dtype. A non-integer dtype drops the integer domain.
function Column:with_dtype(dtype, opts)
  check_self(self, "with_dtype")
  opts = opts or {}
  if type(opts) ~= "table" then
    raise("ColumnSchema '%s': with_dtype: options must be a table, got %s", self.name, repr(opts))
  end
  for k in pairs(opts) do
    if k ~= "is_list" and k ~= "is_ragged" then
      raise("ColumnSchema '%s': with_dtype: unknown option %s (known: is_list, is_ragged)", self.name, repr(k))
    end
  end
  local changes = { dtype = dtype }
  if DTYPES[dtype] and DTYPES[dtype].type ~= "INT" then changes.int_domain = false end
  local is_list = opts.is_list
  if is_list == nil then is_list = self.is_list end
  changes.is_list = is_list
  if is_list then
    changes.is_ragged = opts.is_ragged
    if changes.is_ragged == nil then changes.is_ragged = self.is_ragged end
  else
    changes.is_ragged, changes.value_count = false, false
  end
  local o = column_opts(self, changes)
  if o.int_domain == false then o.int_domain = nil end
  if o.value_count == false then o.value_count = nil end
  if o.value_count and o.is_ragged ~= self.is_ragged then o.value_count = nil end
  local extra = deep_copy(self._extra)
  if extra then extra.item_size = nil end
  return new_column(self.name, o, nil, extra)
end

--- A deep copy of the column.
function Column:copy()
  check_self(self, "copy")
  return new_column(self.name, column_opts(self), nil, self._extra)
end

--- The column as the feature object of Merlin's schema.json (a plain Lua table,
-- ready for tk.json.encode): name, type, intDomain, valueCount, annotation.
function Column:to_table()
  check_self(self, "to_table")
  return feature_table(self)
end

ColumnMT.__eq = function(a, b)
  return is_column(a) and is_column(b) and deep_equal(feature_table(a), feature_table(b))
end
ColumnMT.__tostring = function(col)
  local parts = { col.name, col.dtype }
  if #col.tags > 0 then parts[#parts + 1] = "tags={" .. concat(col.tags, ",") .. "}" end
  local card = col.int_domain and col.int_domain.max and col.int_domain.max + 1
  if card then parts[#parts + 1] = "cardinality=" .. int_string(card) end
  if col.is_list then parts[#parts + 1] = col.is_ragged and "ragged list" or "list" end
  return "ColumnSchema(" .. concat(parts, ", ") .. ")"
end


local ColumnClass = {
  methods = Column,
  --- True when v is a ColumnSchema.
  is_column_schema = is_column,
}
setmetatable(ColumnClass, {
  --- tk.ColumnSchema(name, {tags =, dtype =, properties =, is_list =, is_ragged =,
  -- int_domain = {min =, max =, name =, is_categorical =}, value_count = {min =, max =}}).
  -- dtype is one of int8, int16, int32, int64, float16, float32, float64, string
  -- (default int64 with an int_domain or the categorical tag, else float32).
  __call = function(_, name, opts) return new_column(name, opts) end,
})

-- class: tk.ColumnSchema; new and options serve towerkit.schema.schema (see new_column
-- and column_opts).
return { class = ColumnClass, new = new_column, options = column_opts }
