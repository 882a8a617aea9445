--- CSV files: read_csv and csv_chunks read a CSV file with a header row into Datasets,
-- each column typed by the schema (the CSV specs of a schema below), through the core's
-- reader (core.csv_open).
local core = require "towerkit.core"
local util = require "towerkit.util"
local ragged = require "towerkit.ragged"
local dataset = require "towerkit.data.dataset"
local Schema = require "towerkit.schema.schema"
local Tags = require("towerkit.schema.tags").Tags

local argerror = util.argerror

local csv = {}

-- The CSV column specs of a schema: lists as int64_list (at most the value count max
-- ids per cell), int dtypes (and categorical columns) as int64, floats as float32;
-- string columns are not read.
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
      if t then
        -- a list cell longer than the schema's value count max is an error of the reader
        local max = t == "int64_list" and col.value_count and col.value_count.max or nil
        specs[#specs + 1] = { name = col.name, type = t, max_count = max and tonumber(max) or nil }
      end
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

local function check_file_and_schema(path, schema, what)
  if type(path) ~= "string" then argerror("%s: a file path expected, got %s", what, type(path)) end
  if not Schema.is_schema(schema) then argerror("%s: a Schema expected, got %s", what, type(schema)) end
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
function csv.read_csv(path, schema, opts)
  check_file_and_schema(path, schema, "read_csv")
  opts = util.known_options(opts, { columns = true }, "read_csv")
  local specs = csv_specs(schema, columns_filter(opts, "read_csv"))
  if #specs == 0 then argerror("read_csv: the schema selects no column to read") end
  local reader = core.csv_open(path, specs)
  local cols = reader:next(2 ^ 52)
  reader:close()
  check_csv_ids(path, schema, specs, cols, 0)
  return dataset.wrap(cols, schema)
end

--- csv_chunks(path, schema [, {chunk_rows = 1048576, columns =}]): iterates the file
-- as Datasets of at most chunk_rows rows, for files larger than memory.
function csv.csv_chunks(path, schema, opts)
  check_file_and_schema(path, schema, "csv_chunks")
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
    return dataset.wrap(cols, schema)
  end
end

return csv
