--- Data: datasets of named columns, batching, CSV files and synthetic interactions.
--
-- A dataset is a set of columns of equal length, held as heap tensors: int64 [N] ids,
-- float32 [N] values, and ragged lists as two entries `f__values` and `f__offsets`
-- (N + 1), the layout blocks read (named by towerkit.ragged). Batches are tables of the same shape.
local bit = require "bit"
local core = require "towerkit.core"
local util = require "towerkit.util"
local ragged = require "towerkit.ragged"
local Schema = require "towerkit.schema.schema"
local Tags = require("towerkit.schema.tags").Tags

local argerror, sorted_keys = util.argerror, util.sorted_keys


local data = {}

local Dataset = {}
Dataset.__index = Dataset

local function is_list_table(v)
  return type(v) == "table" and not core.is_tensor(v) and (v[1] == nil or type(v[1]) == "table")
end

-- Converts a Lua array of numbers to a tensor, int64 when every value is an integer
-- (or the schema says the column is categorical), float32 otherwise.
local function column_tensor(name, values, col)
  local want_int
  if col then
    want_int = col:has_tag(Tags.CATEGORICAL) or (col.dtype or ""):match("^int") ~= nil
  else
    want_int = true
    for i = 1, #values do
      local v = values[i]
      if type(v) ~= "number" then
        argerror("Dataset: column '%s' row %d is a %s, expected a number", name, i, type(v))
      end
      if v % 1 ~= 0 then want_int = false break end
    end
  end
  for i = 1, #values do
    if type(values[i]) ~= "number" then
      argerror("Dataset: column '%s' row %d is a %s, expected a number", name, i, type(values[i]))
    end
    if want_int and values[i] % 1 ~= 0 then
      argerror("Dataset: column '%s' row %d is %s, expected an integer id", name, i, tostring(values[i]))
    end
  end
  return core.tensor(values, want_int and "int64" or "float32")
end

-- A list column from a Lua array of arrays of ids.
local function list_tensors(name, lists)
  local flat, offsets = {}, { 0 }
  for i, l in ipairs(lists) do
    if type(l) ~= "table" then argerror("Dataset: list column '%s' row %d is not a list", name, i) end
    for _, v in ipairs(l) do
      if type(v) ~= "number" or v % 1 ~= 0 then
        argerror("Dataset: list column '%s' row %d holds %s, expected integer ids", name, i, tostring(v))
      end
      flat[#flat + 1] = v
    end
    offsets[#offsets + 1] = #flat
  end
  return core.tensor(flat, "int64"), core.tensor(offsets, "int64")
end

--- Dataset(columns [, {schema =}]): columns maps names to tensors, Lua arrays of
-- numbers, or (lists) Lua arrays of arrays of ids, or the pair `f__values` and
-- `f__offsets`. All columns must have the same number of rows.
function data.Dataset(columns, opts)
  if type(columns) ~= "table" then argerror("Dataset: a table of columns expected, got %s", type(columns)) end
  opts = util.known_options(opts, { schema = true }, "Dataset")
  local schema = opts.schema
  local self = setmetatable({ columns = {}, schema = schema, n = nil }, Dataset)
  for _, name in ipairs(sorted_keys(columns)) do
    local v = columns[name]
    if type(name) ~= "string" then argerror("Dataset: column names must be strings") end
    local col = schema and schema:get(name)
    if core.is_tensor(v) then
      self.columns[name] = v
    elseif is_list_table(v) and #v > 0 then
      self.columns[ragged.values_name(name)], self.columns[ragged.offsets_name(name)] = list_tensors(name, v)
    elseif type(v) == "table" then
      self.columns[name] = column_tensor(name, v, col)
    else
      argerror("Dataset: column '%s' must be a tensor or a Lua array, got %s", name, type(v))
    end
  end
  self:_check()
  return self
end

function Dataset:_check()
  local n, first
  for _, name in ipairs(sorted_keys(self.columns)) do
    local t = self.columns[name]
    local rows
    local base, part = ragged.part(name)
    if part == "offsets" then
      rows = t:numel() - 1
      if not self.columns[ragged.values_name(base)] then
        argerror("Dataset: list column '%s' has offsets but no '%s'", base, ragged.values_name(base))
      end
    elseif part == "values" then
      rows = nil
      if not self.columns[ragged.offsets_name(base)] then
        argerror("Dataset: list column '%s' has values but no '%s'", base, ragged.offsets_name(base))
      end
    else
      if t:dim() < 1 then argerror("Dataset: column '%s' is a scalar", name) end
      rows = t:size(1)
    end
    if rows then
      if n and rows ~= n then
        argerror("Dataset: column '%s' has %d rows but '%s' has %d", name, rows, first, n)
      end
      n, first = rows, first or name
    end
  end
  self.n = n or 0
end

function data.is_dataset(x) return getmetatable(x) == Dataset end
data.methods = Dataset -- the method table (help, completion)
-- rows, columns and the first rows (towerkit.pretty)
Dataset.__tostring = function(d) return require("towerkit.pretty").dataset(d) end

--- Number of rows.
function Dataset:size() return self.n end

--- Feature names (list columns by their base name), sorted.
function Dataset:column_names()
  local names = {}
  for name in pairs(self.columns) do
    local base, part = ragged.part(name)
    if part ~= "offsets" then names[#names + 1] = base or name end
  end
  table.sort(names)
  return names
end

function Dataset:has_column(name)
  return self.columns[name] ~= nil or self.columns[ragged.values_name(name)] ~= nil
end

--- The tensor of a (non-list) column; an error names the known columns.
function Dataset:column(name)
  local t = self.columns[name]
  if not t then
    argerror("Dataset: no column '%s' (columns: %s)", tostring(name), table.concat(self:column_names(), ", "))
  end
  return t
end

--- The rows at 0-based indices idx (an int64 tensor) [first, first + count), as a
-- table of tensors (a batch).
function Dataset:rows(idx, first, count)
  first = first or 0
  count = count or (idx:numel() - first)
  local out = {}
  for name, t in pairs(self.columns) do
    local base, part = ragged.part(name)
    if part == "offsets" then
      local values = ragged.values_name(base)
      out[values], out[name] = core.ragged_select(self.columns[values], t, idx, first, count)
    elseif part ~= "values" then
      out[name] = core.index_select(t, idx, first, count)
    end
  end
  return out
end

--- A new dataset of the rows at idx.
function Dataset:select(idx)
  local ds = setmetatable({ columns = self:rows(idx), schema = self.schema }, Dataset)
  ds:_check()
  return ds
end

--- Iterates batches: for batch, i in ds:batches{batch_size = 1024, shuffle = true,
-- seed = 0, drop_last = false} do ... end. A shuffle draws a new order per call from
-- seed (pass the epoch as seed for a new order each epoch).
function Dataset:batches(opts)
  opts = util.known_options(opts, { batch_size = true, shuffle = true, seed = true, drop_last = true }, "batches")
  local bs = opts.batch_size or 1024
  if type(bs) ~= "number" or bs < 1 or bs % 1 ~= 0 then
    argerror("batches: batch_size must be a positive integer, got %s", tostring(bs))
  end
  local order = core.arange(self.n)
  if opts.shuffle then core.shuffle(order, opts.seed or 0) end
  local nb = self:num_batches(bs, opts.drop_last)
  local i = 0
  return function()
    if i >= nb then return nil end
    local first = i * bs
    i = i + 1
    return self:rows(order, first, math.min(bs, self.n - first)), i
  end
end

function Dataset:num_batches(bs, drop_last)
  if drop_last then return math.floor(self.n / bs) end
  return math.ceil(self.n / bs)
end

--- Splits into two datasets: a shuffled `fraction` of the rows, then the rest.
function Dataset:split(fraction, seed)
  if type(fraction) ~= "number" or fraction <= 0 or fraction >= 1 then
    argerror("split: fraction must be in (0, 1), got %s", tostring(fraction))
  end
  local order = core.shuffle(core.arange(self.n), seed or 0)
  local k = math.floor(self.n * fraction + 0.5)
  local all = core.arange(self.n)
  return self:select(core.index_select(order, all, 0, k)),
    self:select(core.index_select(order, all, k, self.n - k))
end

--- The first row of each distinct value of an int64 column (e.g. the item corpus of a
-- set of interactions), in order of first appearance.
function Dataset:unique_by(name)
  local ids = self:column(name)
  if ids:dtype() ~= "int64" then argerror("unique_by: column '%s' must hold int64 ids", name) end
  local keep = core.unique_first(ids)
  if keep:numel() == self.n then return self end -- every id once: the rows themselves
  return self:select(keep)
end

-- The CSV column specs of a schema: lists as int64_list, int dtypes (and categorical
-- columns) as int64, floats as float32; string columns are not read.
local function csv_specs(schema, only)
  local specs = {}
  for _, col in ipairs(schema) do
    if not only or only[col.name] then
      local dtype = col.dtype or "float32"
      local t
      if col.is_list then
        t = "int64_list"
      elseif dtype:match("^int") or dtype:match("^uint") or col:has_tag(Tags.CATEGORICAL) then
        t = "int64"
      elseif dtype:match("^float") then
        t = "float32"
      end
      if t then specs[#specs + 1] = { name = col.name, type = t } end
    end
  end
  return specs
end

local function columns_filter(opts, what)
  if opts.columns == nil then return nil end
  if type(opts.columns) ~= "table" then argerror("%s: columns must be a list of names", what) end
  local only = {}
  for _, name in ipairs(opts.columns) do only[name] = true end
  return only
end

-- Categorical ids outside [0, cardinality) are an error naming the file, the row
-- (1-based, the header is row 1; `before` data rows came in earlier chunks) and the
-- column (DESIGN §4).
local function check_csv_ids(path, schema, specs, cols, before)
  for _, spec in ipairs(specs) do
    local col = schema:column(spec.name)
    local card = col:has_tag(Tags.CATEGORICAL) and col:cardinality()
    if card then
      local row, id
      if spec.type == "int64_list" then
        row, id = core.check_ids(cols[ragged.values_name(spec.name)], card, cols[ragged.offsets_name(spec.name)])
      elseif spec.type == "int64" then
        row, id = core.check_ids(cols[spec.name], card)
      end
      if row then
        argerror("%s: row %d, column '%s': id %.0f is out of range [0, %.0f)", path, before + row + 1, spec.name,
          id, card)
      end
    end
  end
end

--- read_csv(path, schema [, {columns =}]) -> Dataset: a CSV file with a header row;
-- the schema gives each column's type (list cells hold ids separated by '|'). Columns
-- of the schema that are strings are skipped; a bad cell is an error naming the file,
-- the row and the column.
function data.read_csv(path, schema, opts)
  if type(path) ~= "string" then argerror("read_csv: a file path expected, got %s", type(path)) end
  if not Schema.is_schema(schema) then argerror("read_csv: a Schema expected, got %s", type(schema)) end
  opts = util.known_options(opts, { columns = true }, "read_csv")
  local specs = csv_specs(schema, columns_filter(opts, "read_csv"))
  if #specs == 0 then argerror("read_csv: the schema selects no column to read") end
  local reader = core.csv_open(path, specs)
  local cols = reader:next(2 ^ 52)
  reader:close()
  check_csv_ids(path, schema, specs, cols, 0)
  local ds = setmetatable({ columns = cols, schema = schema }, Dataset)
  ds:_check()
  return ds
end

--- csv_chunks(path, schema [, {chunk_rows = 1048576, columns =}]): iterates the file
-- as Datasets of at most chunk_rows rows, for files larger than memory.
function data.csv_chunks(path, schema, opts)
  if type(path) ~= "string" then argerror("csv_chunks: a file path expected, got %s", type(path)) end
  if not Schema.is_schema(schema) then argerror("csv_chunks: a Schema expected, got %s", type(schema)) end
  opts = util.known_options(opts, { columns = true, chunk_rows = true }, "csv_chunks")
  local rows = opts.chunk_rows or 1048576
  if type(rows) ~= "number" or rows < 1 then argerror("csv_chunks: chunk_rows must be positive") end
  local specs = csv_specs(schema, columns_filter(opts, "csv_chunks"))
  local reader = core.csv_open(path, specs)
  local before = 0 -- data rows of the earlier chunks
  return function()
    if not reader then return nil end
    local cols, n = reader:next(rows)
    if n == 0 then
      reader:close()
      reader = nil
      return nil
    end
    check_csv_ids(path, schema, specs, cols, before)
    before = before + n
    local ds = setmetatable({ columns = cols, schema = schema }, Dataset)
    ds:_check()
    return ds
  end
end

--- Lua array {a, a+1, ..., b}.
function data.range(a, b)
  local t = {}
  for i = a, b do t[#t + 1] = i end
  return t
end

-- Random numbers for the generator: xorshift32, seeded, independent of math.random.
local Random = {}
Random.__index = Random
function data.Random(seed)
  local s = bit.tobit((seed or 1) * 2654435761 % 4294967296)
  if s == 0 then s = 1 end
  return setmetatable({ s = s }, Random)
end
function Random:next()
  local x = self.s
  x = bit.bxor(x, bit.lshift(x, 13))
  x = bit.bxor(x, bit.rshift(x, 17))
  x = bit.bxor(x, bit.lshift(x, 5))
  self.s = x
  return (x % 4294967296) / 4294967296
end
--- An integer in [0, n).
function Random:int(n) return math.floor(self:next() * n) end
function Random:normal()
  local u1, u2 = 1 - self:next(), self:next()
  return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
end

--- Zipf-like sampler over ranks 0..n-1 with exponent s: P(r) ~ 1 / (r + 1)^s.
function data.zipf_sampler(n, s, rng)
  local cdf, total = {}, 0
  for r = 1, n do
    total = total + 1 / r ^ s
    cdf[r] = total
  end
  return function()
    local u = rng:next() * total
    local lo, hi = 1, n
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if cdf[mid] < u then lo = mid + 1 else hi = mid end
    end
    return lo - 1
  end
end

local function mix(a, b)
  local h = bit.tobit(a * 73856093 % 4294967296)
  h = bit.bxor(h, bit.tobit(b * 19349663 % 4294967296))
  h = bit.bxor(h, bit.rshift(h, 15))
  h = bit.tobit((h % 4294967296) * 2246822519 % 4294967296)
  h = bit.bxor(h, bit.rshift(h, 13))
  return h % 4294967296
end

local function first_with(schema, tag)
  local s = schema:select_by_tag(tag)
  return s[1]
end

--- synthetic(schema, n, {seed = 1, clusters = 20, affinity = 0.9, zipf = 1.1}) ->
-- dataset, items. Interactions with a planted structure: users and items belong to
-- latent clusters; a user picks an item of its own cluster with probability
-- `affinity` (popular items more often), else any item. Every other feature is derived
-- from the user or item (categorical features lean on the cluster, continuous ones
-- carry a cluster signal plus noise), so a model can learn the clusters from the
-- features as well as from the ids. `items` is the catalogue: one row per item id with
-- its features. The schema needs a user_id and an item_id column with domains.
function data.synthetic(schema, n, opts)
  if not Schema.is_schema(schema) then argerror("synthetic: a Schema expected, got %s", type(schema)) end
  if type(n) ~= "number" or n < 1 or n % 1 ~= 0 then argerror("synthetic: n must be a positive integer") end
  opts = util.known_options(opts, { seed = true, clusters = true, affinity = true, zipf = true }, "synthetic")
  local rng = data.Random(opts.seed or 1)
  local C = opts.clusters or 20
  local affinity = opts.affinity or 0.9
  local zipf = opts.zipf or 1.1
  local ucol = first_with(schema, Tags.USER_ID)
  local icol = first_with(schema, Tags.ITEM_ID)
  if not ucol or not icol then argerror("synthetic: the schema needs a user_id and an item_id column (tags user_id, item_id)") end
  local U, I = ucol:cardinality(), icol:cardinality()
  if not U or not I then argerror("synthetic: the user_id and item_id columns need int domains") end
  if I < C then C = I end

  -- items by cluster, each cluster's items in a popularity order
  local item_cluster, cluster_items = {}, {}
  for c = 0, C - 1 do cluster_items[c] = {} end
  for i = 0, I - 1 do
    local c = mix(i, 7) % C
    item_cluster[i] = c
    local list = cluster_items[c]
    list[#list + 1] = i
  end
  for c = 0, C - 1 do
    if #cluster_items[c] == 0 then cluster_items[c] = { c % I } end
  end
  local cluster_pick, global_pick = {}, data.zipf_sampler(I, zipf, rng)
  for c = 0, C - 1 do cluster_pick[c] = data.zipf_sampler(#cluster_items[c], zipf, rng) end
  local function user_cluster(u) return mix(u, 3) % C end
  local user_pick = data.zipf_sampler(U, 0.8, rng)

  -- per-entity feature values, derived once
  local function derived(col, entity, cluster)
    local name = col.name
    local salt = #name * 131 + name:byte(1)
    if col:has_tag(Tags.CATEGORICAL) then
      local K = col:cardinality() or 2
      local function one(j)
        if mix(entity, salt + j) % 10 < 7 then return (cluster * 7 + j) % K end
        return mix(entity, salt + 17 * j + 1) % K
      end
      if col.is_list then
        local vc = col.value_count or {}
        local lo, hi = vc.min or 1, vc.max or 3
        if lo < 1 and hi >= 1 then lo = 1 end
        local len = lo + mix(entity, salt + 5) % (hi - lo + 1)
        local l = {}
        for j = 1, len do l[j] = one(j) end
        return l
      end
      return one(0)
    end
    -- continuous: a cluster signal and noise in [-0.5, 0.5]
    return (cluster % 5) / 4 - 0.5 + (mix(entity, salt) % 1000) / 1000 - 0.5
  end

  local features = schema:remove_by_tag(Tags.TARGET)
  local cols = {}
  local user_cols, item_cols = {}, {}
  for _, col in ipairs(features) do
    if col.name ~= ucol.name and col.name ~= icol.name and
        (col:has_tag(Tags.CATEGORICAL) or col:has_tag(Tags.CONTINUOUS)) then
      if col:has_tag(Tags.ITEM) then
        item_cols[#item_cols + 1] = col
      else
        user_cols[#user_cols + 1] = col
      end
    end
  end

  local users, items = {}, {}
  for r = 1, n do
    local u = user_pick()
    local c = user_cluster(u)
    local i
    if rng:next() < affinity then
      local list = cluster_items[c]
      i = list[cluster_pick[c]() + 1]
    else
      i = global_pick()
    end
    users[r], items[r] = u, i
  end
  cols[ucol.name], cols[icol.name] = users, items
  local item_values = {}
  for _, col in ipairs(item_cols) do
    local per_item = {}
    for i = 0, I - 1 do per_item[i] = derived(col, i, item_cluster[i]) end
    item_values[col.name] = per_item
    local v = {}
    for r = 1, n do v[r] = per_item[items[r]] end
    cols[col.name] = v
  end
  for _, col in ipairs(user_cols) do
    local cache, v = {}, {}
    for r = 1, n do
      local u = users[r]
      local x = cache[u]
      if x == nil then
        x = derived(col, u, user_cluster(u))
        cache[u] = x
      end
      v[r] = x
    end
    cols[col.name] = v
  end
  for _, col in ipairs(schema:select_by_tag(Tags.TARGET)) do
    local v = {}
    for r = 1, n do v[r] = 1 end
    cols[col.name] = v
  end
  local ds = data.Dataset(cols, { schema = schema })

  local catalogue = { [icol.name] = data.range(0, I - 1) }
  for _, col in ipairs(item_cols) do
    local v = {}
    for i = 0, I - 1 do v[i + 1] = item_values[col.name][i] end
    catalogue[col.name] = v
  end
  return ds, data.Dataset(catalogue, { schema = schema })
end

return data
