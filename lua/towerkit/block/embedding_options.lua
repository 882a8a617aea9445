--- EmbeddingOptions (Merlin's): the sizes, initializers, regularisation and list
-- combiner of the embedding tables of an input block.
local util = require "towerkit.util"

local argerror = util.argerror

local EmbeddingOptions = {}
EmbeddingOptions.__index = EmbeddingOptions

local DEFAULTS = {
  embedding_dim_default = 64,
  infer_embedding_sizes = false,
  infer_embedding_sizes_multiplier = 2.0,
  infer_embeddings_ensure_dim_multiple_of_8 = false,
  embeddings_l2_reg = 0.0,
  combiner = "mean",
}
local FIELDS = {
  embedding_dims = "table", embedding_dim_default = "number", infer_embedding_sizes = "boolean",
  infer_embedding_sizes_multiplier = "number", infer_embeddings_ensure_dim_multiple_of_8 = "boolean",
  embeddings_initializers = "any", embeddings_l2_reg = "number", combiner = "string",
  embedding_sharding = "string",
}
local COMBINERS = { sum = true, mean = true, sqrtn = true }

--- check_sharding(v, what) -> v: an embedding_sharding setting (nil, "replicated" or
-- "row"); anything else is an error naming `what` (EmbeddingOptions, TwoTowerModel,
-- compile: the three places that take it).
local function check_sharding(v, what)
  if v ~= nil and v ~= "replicated" and v ~= "row" then
    argerror('%s: embedding_sharding must be "replicated" or "row", got %s', what,
      type(v) == "string" and ('"%s"'):format(v) or util.describe(v))
  end
  return v
end

--- EmbeddingOptions{embedding_dims =, embedding_dim_default = 64,
-- infer_embedding_sizes = false, infer_embedding_sizes_multiplier = 2.0,
-- infer_embeddings_ensure_dim_multiple_of_8 = false, embeddings_initializers =,
-- embeddings_l2_reg = 0.0, combiner = "mean", embedding_sharding = "replicated"}.
-- embedding_sharding = "row": under mpirun with N > 1 ranks, InputBlock builds each table
-- as this rank's 1/N of its rows only (docs/distributed.md).
local function new(opts)
  if opts ~= nil and type(opts) ~= "table" then argerror("EmbeddingOptions: options must be a table") end
  opts = opts or {}
  local self = setmetatable({}, EmbeddingOptions)
  util.check_options(opts, FIELDS, "EmbeddingOptions")
  for k, v in pairs(opts) do
    local want = FIELDS[k]
    if want ~= "any" and type(v) ~= want then
      argerror("EmbeddingOptions: '%s' must be a %s, got %s", k, want, type(v))
    end
    self[k] = v
  end
  for k, v in pairs(DEFAULTS) do
    if self[k] == nil then self[k] = v end
  end
  if self.embedding_dim_default < 1 or self.embedding_dim_default % 1 ~= 0 then
    argerror("EmbeddingOptions: 'embedding_dim_default' must be a positive integer, got %s", self.embedding_dim_default)
  end
  if not (self.infer_embedding_sizes_multiplier > 0) then
    argerror("EmbeddingOptions: 'infer_embedding_sizes_multiplier' must be positive")
  end
  if self.embeddings_l2_reg < 0 then argerror("EmbeddingOptions: 'embeddings_l2_reg' must not be negative") end
  check_sharding(self.embedding_sharding, "EmbeddingOptions")
  if not COMBINERS[self.combiner] then
    argerror("EmbeddingOptions: unknown combiner '%s'; known: mean, sqrtn, sum", self.combiner)
  end
  for name, dim in pairs(self.embedding_dims or {}) do
    if type(name) ~= "string" or type(dim) ~= "number" or dim < 1 or dim % 1 ~= 0 then
      argerror("EmbeddingOptions: embedding_dims['%s'] must be a positive integer", tostring(name))
    end
  end
  return self
end

function EmbeddingOptions.is(x) return getmetatable(x) == EmbeddingOptions end

--- Merlin's heuristic: int(ceil(cardinality ^ 0.25 * multiplier)), rounded up to a
-- multiple of 8 when asked.
local function infer_embedding_dim(cardinality, multiplier, multiple_of_8)
  local dim = math.ceil(cardinality ^ 0.25 * (multiplier or 2.0))
  if multiple_of_8 then dim = math.ceil(dim / 8) * 8 end
  return dim
end

--- The dimension of the table of a column with a given cardinality: an explicit
-- embedding_dims entry (by feature name, then table name) wins over an inferred one,
-- which wins over the default.
function EmbeddingOptions:dim_for(name, cardinality, table_name)
  local dims = self.embedding_dims or {}
  local dim = dims[name] or (table_name and dims[table_name])
  if dim then return dim end
  if self.infer_embedding_sizes then
    return infer_embedding_dim(cardinality, self.infer_embedding_sizes_multiplier,
      self.infer_embeddings_ensure_dim_multiple_of_8)
  end
  return self.embedding_dim_default
end

--- The initializer of a table: per feature (by feature or table name) or one for all.
-- Default: truncated normal with stddev 0.05.
function EmbeddingOptions:initializer_for(name, table_name)
  local inits = self.embeddings_initializers
  if inits == nil then return { kind = "truncated_normal", a = 0.05 } end
  if type(inits) == "string" or type(inits) == "function" then return inits end
  if type(inits) == "table" and inits.kind then return inits end
  if type(inits) == "table" then
    return inits[name] or (table_name and inits[table_name]) or { kind = "truncated_normal", a = 0.05 }
  end
  argerror("EmbeddingOptions: embeddings_initializers must be a name, a function or a table, got %s", type(inits))
end

function EmbeddingOptions:to_table()
  local t = {}
  for k in pairs(FIELDS) do
    local v = self[k]
    if type(v) ~= "function" then t[k] = v end
  end
  if type(t.embeddings_initializers) == "table" then
    local clean = {}
    for k, v in pairs(t.embeddings_initializers) do
      if type(v) ~= "function" then clean[k] = v end
    end
    t.embeddings_initializers = clean
  end
  return t
end

--- tk.EmbeddingOptions(opts) builds one; the class (tk.EmbeddingOptionsClass) is
-- EmbeddingOptions itself.
return { new = new, class = EmbeddingOptions, infer_embedding_dim = infer_embedding_dim,
  check_sharding = check_sharding }
