--- Dataset: a set of named columns of equal length, held as heap tensors: int64 [N] ids,
-- float32 [N] values, and ragged lists as two entries `f__values` and `f__offsets`
-- (N + 1), the layout blocks read (named by towerkit.ragged). Batches are tables of the
-- same shape. CSV files (towerkit.data.csv) and synthetic interactions
-- (towerkit.data.synthetic) are read into Datasets; towerkit.data assembles `tk.data`.
local core = require "towerkit.core"
local util = require "towerkit.util"
local ragged = require "towerkit.ragged"
local Tags = require("towerkit.schema.tags").Tags

local argerror, sorted_keys = util.argerror, util.sorted_keys

local dataset = {}

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
    -- the first value that is not an integer (or not a number: the loop below names it)
    want_int = true
    for i = 1, #values do
      local v = values[i]
      if type(v) ~= "number" or v % 1 ~= 0 then want_int = false break end
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
function dataset.Dataset(columns, opts)
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

function dataset.is_dataset(x) return getmetatable(x) == Dataset end
dataset.methods = Dataset -- the method table (help, completion)

--- wrap(columns, schema) -> Dataset: columns already in the layout above (tensors, as the
-- core's readers and Dataset:rows give them), checked like Dataset's.
function dataset.wrap(columns, schema)
  local ds = setmetatable({ columns = columns, schema = schema }, Dataset)
  ds:_check()
  return ds
end
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
  return dataset.wrap(self:rows(idx), self.schema)
end

-- A new dataset of the rows at order[first], ..., order[first + count - 1].
local function take(self, order, first, count)
  return dataset.wrap(self:rows(order, first, count), self.schema)
end

--- slice(first, count) -> Dataset: the rows [first, first + count) (0-based), in order.
function Dataset:slice(first, count)
  if type(first) ~= "number" or first < 0 or first % 1 ~= 0 or type(count) ~= "number" or count < 0 or count % 1 ~= 0 then
    argerror("slice: first and count must be non-negative integers, got %s and %s", tostring(first), tostring(count))
  end
  if first + count > self.n then
    argerror("slice: rows [%d, %d) are past the dataset's %d rows", first, first + count, self.n)
  end
  return take(self, core.arange(self.n), first, count)
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
  return take(self, order, 0, k), take(self, order, k, self.n - k)
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

return dataset
