--- Schema: Merlin's Schema, the list of the columns (features) of a dataset. Schemas
-- are read from and written to Merlin's schema.json (towerkit.schema.json_format), or
-- built in Lua:
--
--     local schema = tk.Schema.read_json("schema.json")
--     local user = schema:select_by_tag(tk.Tags.USER)
--     print(user:column("userId"):cardinality())          -- 944
--
-- A schema keeps its columns in its array part (so `#schema` and ipairs work in
-- LuaJIT, where `#` ignores __len on tables); methods live in the metatable.
local json = require "towerkit.json"
local write_atomic = require("towerkit.util").write_atomic
local strip_position = require("towerkit.util").strip_position
local common = require "towerkit.schema.common"
local tags = require "towerkit.schema.tags"
local format = require "towerkit.schema.json_format"
local column = require "towerkit.schema.column"

local concat = table.concat
local raise, repr = common.raise, common.repr
local deep_copy, deep_equal, is_array = common.deep_copy, common.deep_equal, common.is_array
local as_array, DTYPES = common.as_array, common.DTYPES
local tag_list, has_all_parts = tags.list, tags.has_all_parts
local new_column, column_opts, is_column = column.new, column.options, column.class.is_column_schema
local feature_table = format.feature_table

local Schema = {}
local SchemaMT = { __index = Schema }
local schema_extra = setmetatable({}, { __mode = "k" }) -- schema -> top-level keys

local function is_schema(v) return getmetatable(v) == SchemaMT end

local function make_schema(columns, extra)
  local s = setmetatable({}, SchemaMT)
  local seen = {}
  for i, col in ipairs(columns) do
    if seen[col.name] then raise("Schema: duplicate column '%s'", col.name) end
    seen[col.name] = true
    s[i] = col
  end
  if extra and next(extra) then schema_extra[s] = deep_copy(extra) end
  return s
end

local function new_schema(columns)
  if columns == nil then columns = {} end
  if is_schema(columns) then return make_schema(columns, schema_extra[columns]) end
  if not is_array(columns) then
    raise("Schema: columns must be a list of ColumnSchema, got %s", repr(columns))
  end
  local list = {}
  for i, col in ipairs(columns) do
    if type(col) == "string" then col = new_column(col) end
    if not is_column(col) then
      raise("Schema: column %d is not a ColumnSchema, got %s", i, repr(col))
    end
    list[i] = col
  end
  return make_schema(list)
end

local function schema_from_table(t, file)
  file = file or "schema"
  local features, extra = format.read_table(t, file)
  local columns = {}
  for i, f in ipairs(features) do columns[i] = new_column(f.name, f.opts, f.where, f.extra) end
  return make_schema(columns, extra)
end

local function check_schema(s, method)
  if not is_schema(s) then
    raise("Schema:%s: call it with a colon on a Schema, got %s", method, repr(s))
  end
end

local function by_name(s, name)
  for _, col in ipairs(s) do
    if col.name == name then return col end
  end
  return nil
end

local function name_list(names, method)
  if type(names) == "string" then names = { names } end
  if is_schema(names) then names = names:column_names() end
  if not is_array(names) then raise("%s: names must be a name or a list of names, got %s", method, repr(names)) end
  for i, n in ipairs(names) do
    if type(n) ~= "string" then raise("%s: names[%d] must be a string, got %s", method, i, repr(n)) end
  end
  return names
end

-- The columns of s that have any of tags (a compound tag needs all of its parts).
local function filter_by_tag(s, tags, method, keep)
  tags = tag_list(tags, method)
  local out = {}
  for _, col in ipairs(s) do
    local match = false
    for _, t in ipairs(tags) do
      if has_all_parts(col.tags, t) then
        match = true
        break
      end
    end
    if match == keep then out[#out + 1] = col end
  end
  return make_schema(out, schema_extra[s])
end

--- The names of the columns, in order.
function Schema:column_names()
  check_schema(self, "column_names")
  local names = {}
  for i, col in ipairs(self) do names[i] = col.name end
  return names
end

--- The columns that have any of tags (a tag or a list of tags), in schema order.
-- A compound tag (tk.Tags.USER_ID) matches a column that has all of its parts.
function Schema:select_by_tag(tags)
  check_schema(self, "select_by_tag")
  return filter_by_tag(self, tags, "select_by_tag", true)
end

--- The columns that have none of tags (a tag or a list of tags).
function Schema:remove_by_tag(tags)
  check_schema(self, "remove_by_tag")
  return filter_by_tag(self, tags, "remove_by_tag", false)
end

--- The columns named in names (a name or a list), in the order of names. As in
-- Merlin, names that are not in the schema are skipped.
function Schema:select_by_name(names)
  check_schema(self, "select_by_name")
  names = name_list(names, "select_by_name")
  local out, taken = {}, {}
  for _, n in ipairs(names) do
    local col = by_name(self, n)
    if col and not taken[n] then
      taken[n] = true
      out[#out + 1] = col
    end
  end
  return make_schema(out, schema_extra[self])
end

--- The schema without the columns named in names (a name or a list).
function Schema:without(names)
  check_schema(self, "without")
  names = name_list(names, "without")
  local drop = {}
  for _, n in ipairs(names) do drop[n] = true end
  local out = {}
  for _, col in ipairs(self) do
    if not drop[col.name] then out[#out + 1] = col end
  end
  return make_schema(out, schema_extra[self])
end

--- The column called name, or nil.
function Schema:get(name)
  check_schema(self, "get")
  return by_name(self, name)
end

--- The column called name; an error naming it (and the known columns) when absent.
function Schema:column(name)
  check_schema(self, "column")
  local col = by_name(self, name)
  if not col then
    raise("Schema has no column %s (columns: %s)", repr(name), concat(self:column_names(), ", "))
  end
  return col
end

--- An iterator over (index, column): `for i, col in schema:columns() do ... end`.
function Schema:columns()
  check_schema(self, "columns")
  return ipairs(self)
end

--- The first column (an error when the schema is empty), as Merlin's `first`.
function Schema:first()
  check_schema(self, "first")
  if not self[1] then raise("Schema:first: the schema has no columns") end
  return self[1]
end

--- A deep copy of the schema (columns copied too).
function Schema:copy()
  check_schema(self, "copy")
  local cols = {}
  for i, col in ipairs(self) do cols[i] = new_column(col.name, column_opts(col), nil, col._extra) end
  return make_schema(cols, schema_extra[self])
end

--- The schema as Merlin's schema.json structure: `{ feature = {...}, ... }` with
-- the top-level keys of the file it was read from. Plain tables, ready for
-- tk.json.encode; two schemas are equal when their to_table() are.
function Schema:to_table()
  check_schema(self, "to_table")
  local t = deep_copy(schema_extra[self]) or {}
  local features = as_array {}
  for i, col in ipairs(self) do features[i] = feature_table(col) end
  t.feature = features
  return t
end

--- The schema as schema.json text (pretty-printed unless pretty is false).
function Schema:to_json(pretty)
  check_schema(self, "to_json")
  return json.encode(self:to_table(), pretty ~= false) .. "\n"
end

--- Writes the schema to path as Merlin's schema.json, atomically (util.write_atomic:
-- on an error the old file is left as it was). Returns path.
function Schema:write_json(path)
  check_schema(self, "write_json")
  if type(path) ~= "string" or path == "" then
    raise("write_json: path must be a non-empty string, got %s", repr(path))
  end
  local ok, text = pcall(function() return json.encode(self:to_table(), true) .. "\n" end)
  if not ok then raise("%s: cannot encode the schema: %s", path, tostring(text)) end
  write_atomic(path, text)
  return path
end

--- True when both schemas have the same columns, in the same order, with the same
-- fields (compares to_table()).
function Schema:equals(other)
  check_schema(self, "equals")
  return is_schema(other) and deep_equal(self:to_table(), other:to_table())
end

-- Merlin's merge of two columns with the same name: tags added (overriding collisions),
-- properties merged, dtype and list flags from b.
local function merge_columns(a, b)
  local c = a:with_tags(b.tags):with_properties(b.properties)
  local o = column_opts(c)
  o.dtype, o.is_list, o.is_ragged, o.value_count = b.dtype, b.is_list, b.is_ragged, b.value_count
  o.int_domain = b.int_domain or (DTYPES[b.dtype].type == "INT" and c.int_domain or nil)
  local extra = deep_copy(a._extra) or {}
  for k, v in pairs(b._extra or {}) do extra[k] = deep_copy(v) end
  if b._extra == nil or b._extra.item_size == nil then extra.item_size = nil end
  return new_column(b.name, o, nil, extra)
end

local function as_schema(v, op)
  if is_schema(v) then return v end
  if is_column(v) then return make_schema { v } end
  if v == nil then return make_schema {} end
  raise("Schema %s: both operands must be schemas (or columns), got %s", op, repr(v))
end

--- `a + b`: the union of two schemas. Columns of a keep their order, columns only in
-- b follow; a column in both is merged (tags added, properties merged, dtype and
-- list flags from b), as Merlin's Schema.__add__.
SchemaMT.__add = function(a, b)
  a, b = as_schema(a, "+"), as_schema(b, "+")
  local out = {}
  for i, col in ipairs(a) do
    local other = by_name(b, col.name)
    out[i] = other and merge_columns(col, other) or col
  end
  for _, col in ipairs(b) do
    if not by_name(a, col.name) then out[#out + 1] = col end
  end
  local extra = deep_copy(schema_extra[b]) or {}
  for k, v in pairs(schema_extra[a] or {}) do extra[k] = deep_copy(v) end
  return make_schema(out, extra)
end

--- `a - b`: the columns of a whose names are not in b.
SchemaMT.__sub = function(a, b)
  a, b = as_schema(a, "-"), as_schema(b, "-")
  return a:without(b:column_names())
end

SchemaMT.__eq = function(a, b)
  return is_schema(a) and is_schema(b) and deep_equal(a:to_table(), b:to_table())
end
SchemaMT.__len = function(s) -- for Lua 5.2 and LuaJIT built with 5.2 compatibility
  local n = 0
  while rawget(s, n + 1) ~= nil do n = n + 1 end
  return n
end
-- a table of the columns: name, tags, dtype, domain (towerkit.pretty)
SchemaMT.__tostring = function(s) return require("towerkit.pretty").schema(s) end

-- Public constructors ----------------------------------------------------------------
local SchemaClass = {
  methods = Schema,
  --- True when v is a Schema.
  is_schema = is_schema,
}

--- Reads Merlin's schema.json at path. Errors name the file and the feature or key:
-- "schema.json: feature 'userId': intDomain.max is not an integer string: \"abc\"".
function SchemaClass.read_json(path)
  if type(path) ~= "string" or path == "" then
    raise("read_json: path must be a non-empty string, got %s", repr(path))
  end
  -- the core's reader: a FIFO or a device named schema.json is an error, not a wait
  local ok, text = pcall(require("towerkit.core").read_file, path)
  if not ok then raise("%s", strip_position(text)) end
  return schema_from_table(format.decode(text, path), path)
end

--- Parses schema.json text; source names it in error messages (default "schema").
function SchemaClass.from_json(text, source)
  if type(text) ~= "string" then raise("from_json: text must be a string, got %s", repr(text)) end
  source = source or "schema"
  return schema_from_table(format.decode(text, source), source)
end

--- Builds a schema from a decoded schema.json table (as to_table() returns);
-- source names it in error messages (default "schema").
function SchemaClass.from_table(t, source)
  return schema_from_table(t, source)
end

setmetatable(SchemaClass, {
  --- tk.Schema(columns): a schema of a list of ColumnSchema (or of column names).
  __call = function(_, columns) return new_schema(columns) end,
})

return SchemaClass
