--- Schemas: Merlin's Schema, ColumnSchema and Tags in pure Lua.
--
-- A schema lists the columns (features) of a dataset: their names, dtypes, tags
-- (categorical, user, item, target, ...), integer domains (whose `max + 1` is the
-- cardinality of an embedding table), list value counts and free-form properties.
-- Schemas are read from and written to Merlin's schema.json (the TF-Metadata JSON
-- mapping that NVTabular writes), or built in Lua:
--
--     local schema = tk.Schema.read_json("schema.json")
--     local user = schema:select_by_tag(tk.Tags.USER)
--     print(user:column("userId"):cardinality())          -- 944
--
-- Columns are values: treat them as immutable and derive new ones with the
-- `with_*` methods. This module returns `function(tk)` that installs `tk.Schema`,
-- `tk.ColumnSchema` and `tk.Tags`; it needs `tk.json` (decode, encode, null).
return function(tk)
  local abs = math.abs
  local concat, sort = table.concat, table.sort
  local unpack = unpack or table.unpack

  -- Errors ------------------------------------------------------------------------
  -- Internal code raises a Raised object; the outermost public function turns it into
  -- a string error at level 2, so the message points at the caller's line.
  local Raised = { __tostring = function(e) return e.msg end }
  local function raise(fmt, ...)
    local msg = select("#", ...) > 0 and fmt:format(...) or fmt
    error(setmetatable({ msg = msg }, Raised), 0)
  end

  local depth = 0
  local function pack(...) return { n = select("#", ...), ... } end
  local function guard(fn)
    return function(...)
      depth = depth + 1
      local res = pack(pcall(fn, ...))
      depth = depth - 1
      if res[1] then return unpack(res, 2, res.n) end
      local e = res[2]
      if getmetatable(e) == Raised and depth == 0 then error(e.msg, 2) end
      error(e, 0)
    end
  end

  -- Helpers -----------------------------------------------------------------------
  local function json() return tk.json end
  local function is_null(v) return v ~= nil and v == tk.json.null end

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

  local function is_integer(v)
    return type(v) == "number" and v % 1 == 0 and abs(v) <= 2 ^ 53
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
    if t == "number" then return is_integer(v) and int_string(v) or tostring(v) end
    if v == nil then return "nil" end
    if is_null(v) then return "null" end
    if t == "table" then
      local ok, s = pcall(tk.json.encode, v)
      if ok then return #s > 60 and s:sub(1, 57) .. "..." or s end
      return "a table"
    end
    if t == "boolean" then return tostring(v) end
    return "a " .. t
  end

  local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    sort(keys)
    return keys
  end

  -- Tags --------------------------------------------------------------------------
  local TAG_VALUES = {
    -- feature types
    CATEGORICAL = "categorical", CONTINUOUS = "continuous", LIST = "list",
    SEQUENCE = "sequence", TEXT = "text", TOKENIZED = "tokenized", TIME = "time",
    EMBEDDING = "embedding",
    -- feature context
    ID = "id", USER = "user", ITEM = "item", SESSION = "session", CONTEXT = "context",
    -- targets
    TARGET = "target", REGRESSION = "regression", CLASSIFICATION = "classification",
    BINARY = "binary", MULTI_CLASS = "multi_class",
    -- compound tags: they stand for all of their parts
    USER_ID = "user_id", ITEM_ID = "item_id", SESSION_ID = "session_id",
    TEXT_TOKENIZED = "text_tokenized", BINARY_CLASSIFICATION = "binary_classification",
    MULTI_CLASS_CLASSIFICATION = "multi_class_classification",
  }

  local COMPOUND = {
    user_id = { "user", "id" },
    item_id = { "item", "id" },
    session_id = { "session", "id" },
    text_tokenized = { "text", "tokenized" },
    binary_classification = { "binary", "classification" },
    multi_class_classification = { "multi_class", "classification" },
  }

  -- Tags that cannot be on one column together (Merlin's TAG_COLLISIONS).
  local COLLISIONS = {
    categorical = { "continuous", "embedding" },
    continuous = { "categorical", "embedding", "id" },
    embedding = { "categorical", "continuous", "id" },
    id = { "continuous", "embedding" },
  }

  --- The atomic tags a tag stands for: {"user", "id"} for "user_id", {tag} otherwise.
  local function tag_parts(tag)
    local parts = COMPOUND[tag]
    if not parts then return { tag } end
    return { parts[1], parts[2] }
  end

  local tag_helpers = {
    split = tag_parts,
    --- True when tag is a compound tag (user_id, item_id, ...).
    is_compound = function(tag) return COMPOUND[tag] ~= nil end,
  }

  local Tags = {}
  for k, v in pairs(TAG_VALUES) do Tags[k] = v end
  setmetatable(Tags, {
    __index = function(_, key)
      if tag_helpers[key] then return tag_helpers[key] end
      error(("tk.Tags has no tag %s (known: %s)"):format(repr(key), concat(sorted_keys(TAG_VALUES), ", ")), 2)
    end,
    __newindex = function() error("tk.Tags is read-only", 2) end,
  })

  -- Checks a tag or a list of tags and returns them as a list of strings.
  local function tag_list(tags, where, what)
    what = what or "tags"
    if type(tags) == "string" then tags = { tags } end
    if not is_array(tags) then
      raise("%s: %s must be a tag or a list of tags, got %s", where, what, repr(tags))
    end
    for i, t in ipairs(tags) do
      if type(t) ~= "string" or t == "" then
        raise("%s: %s[%d] must be a non-empty string, got %s", where, what, i, repr(t))
      end
    end
    return tags
  end

  -- The sorted, duplicate-free atomic tags of a list of tags (compound ones split).
  local function atomic_set(tags)
    local set = {}
    for _, t in ipairs(tags) do
      for _, p in ipairs(tag_parts(t)) do set[p] = true end
    end
    return set
  end

  local function set_to_list(set)
    local list = sorted_keys(set)
    return list
  end

  local function check_collisions(set, where)
    for _, t in ipairs(sorted_keys(set)) do
      for _, c in ipairs(COLLISIONS[t] or {}) do
        if set[c] then
          local a, b = t, c
          if b < a then a, b = b, a end
          raise("%s: tags %s and %s cannot be used together", where, a, b)
        end
      end
    end
  end

  -- True when the sorted tag list has every part of tag.
  local function has_all_parts(tags, tag)
    for _, p in ipairs(tag_parts(tag)) do
      local found = false
      for _, t in ipairs(tags) do
        if t == p then
          found = true
          break
        end
      end
      if not found then return false end
    end
    return true
  end

  -- ColumnSchema ------------------------------------------------------------------
  -- dtype -> TF-Metadata feature type and the dtype_item_size Merlin writes for it.
  local DTYPES = {
    int8 = { type = "INT", bits = 8 }, int16 = { type = "INT", bits = 16 },
    int32 = { type = "INT", bits = 32 }, int64 = { type = "INT", bits = 64 },
    float16 = { type = "FLOAT", bits = 16 }, float32 = { type = "FLOAT", bits = 32 },
    float64 = { type = "FLOAT", bits = 64 },
    string = { type = "BYTES", bits = 64 },
  }
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

  -- The column as a schema.json feature (see Column:to_table).
  local function feature_table(col)
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

  for k, fn in pairs(Column) do Column[k] = guard(fn) end

  -- Decoding --------------------------------------------------------------------------
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

  -- Decodes schema.json text; errors name source.
  local function decode(text, source)
    local marked, changed = mark_empty_arrays(text)
    local ok, value, err = pcall(json().decode, marked)
    if ok and value ~= nil then
      return changed and restore_empty_arrays(value) or value
    end
    if changed then -- report the position in the original text
      ok, value, err = pcall(json().decode, text)
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
    if type(v) == "number" and v % 1 == 0 and abs(v) <= 2 ^ 53 then return v end
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

    return new_column(name, opts, where, extra)
  end

  -- Schema ------------------------------------------------------------------------
  -- A schema keeps its columns in its array part (so `#schema` and ipairs work in
  -- LuaJIT, where `#` ignores __len on tables); methods live in the metatable.
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
    if not is_object(t) then raise("%s: the top level is not a JSON object", file) end
    local features = t.feature
    if absent(features) then raise("%s: missing \"feature\" array", file) end
    if not is_array(features) then raise("%s: \"feature\" is not an array", file) end
    local columns, seen = {}, {}
    for i, f in ipairs(features) do columns[i] = read_feature(f, i, file, seen) end
    return make_schema(columns, unknown_keys(t, { feature = true }))
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
    return json().encode(self:to_table(), pretty ~= false) .. "\n"
  end

  --- Writes the schema to path as Merlin's schema.json, atomically (path .. ".tmp"
  -- is written, then renamed). Returns path.
  function Schema:write_json(path)
    check_schema(self, "write_json")
    if type(path) ~= "string" or path == "" then
      raise("write_json: path must be a non-empty string, got %s", repr(path))
    end
    local ok, text = pcall(function() return json().encode(self:to_table(), true) .. "\n" end)
    if not ok then raise("%s: cannot encode the schema: %s", path, tostring(text)) end
    local tmp = path .. ".tmp"
    local f, err = io.open(tmp, "wb")
    if not f then raise("%s: cannot write: %s", path, tostring(err)) end
    local wok, werr = f:write(text)
    local cok, cerr = f:close()
    if not wok or not cok then
      os.remove(tmp)
      raise("%s: cannot write: %s", path, tostring(werr or cerr))
    end
    local rok, rerr = os.rename(tmp, path)
    if not rok then
      os.remove(tmp)
      raise("%s: cannot rename %s into place: %s", path, tmp, tostring(rerr))
    end
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
  SchemaMT.__add = guard(function(a, b)
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
  end)

  --- `a - b`: the columns of a whose names are not in b.
  SchemaMT.__sub = guard(function(a, b)
    a, b = as_schema(a, "-"), as_schema(b, "-")
    return a:without(b:column_names())
  end)

  SchemaMT.__eq = function(a, b)
    return is_schema(a) and is_schema(b) and deep_equal(a:to_table(), b:to_table())
  end
  SchemaMT.__len = function(s) -- for Lua 5.2 and LuaJIT built with 5.2 compatibility
    local n = 0
    while rawget(s, n + 1) ~= nil do n = n + 1 end
    return n
  end
  SchemaMT.__tostring = function(s)
    local names = {}
    for i, col in ipairs(s) do names[i] = col.name end
    return ("Schema(%d columns: %s)"):format(#names, concat(names, ", "))
  end

  for k, fn in pairs(Schema) do Schema[k] = guard(fn) end

  -- Public constructors ----------------------------------------------------------------
  local SchemaClass = {
    methods = Schema,
    --- True when v is a Schema.
    is_schema = is_schema,
  }

  --- Reads Merlin's schema.json at path. Errors name the file and the feature or key:
  -- "schema.json: feature 'userId': intDomain.max is not an integer string: \"abc\"".
  SchemaClass.read_json = guard(function(path)
    if type(path) ~= "string" or path == "" then
      raise("read_json: path must be a non-empty string, got %s", repr(path))
    end
    local f, err = io.open(path, "rb")
    if not f then
      err = tostring(err)
      if err:sub(1, #path + 2) == path .. ": " then err = err:sub(#path + 3) end
      raise("%s: cannot read: %s", path, err)
    end
    local text, rerr = f:read("*a")
    f:close()
    if not text then raise("%s: cannot read: %s", path, tostring(rerr)) end
    return schema_from_table(decode(text, path), path)
  end)

  --- Parses schema.json text; source names it in error messages (default "schema").
  SchemaClass.from_json = guard(function(text, source)
    if type(text) ~= "string" then raise("from_json: text must be a string, got %s", repr(text)) end
    source = source or "schema"
    return schema_from_table(decode(text, source), source)
  end)

  --- Builds a schema from a decoded schema.json table (as to_table() returns);
  -- source names it in error messages (default "schema").
  SchemaClass.from_table = guard(function(t, source)
    return schema_from_table(t, source)
  end)

  setmetatable(SchemaClass, {
    --- tk.Schema(columns): a schema of a list of ColumnSchema (or of column names).
    __call = guard(function(_, columns) return new_schema(columns) end),
  })

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
    __call = guard(function(_, name, opts) return new_column(name, opts) end),
  })

  tk.Tags = Tags
  tk.Schema = SchemaClass
  tk.ColumnSchema = ColumnClass
  return tk
end
