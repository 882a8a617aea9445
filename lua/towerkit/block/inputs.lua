--- InputBlock (Merlin's): the block that turns the features of a schema into tensors.
-- It is one core `embeddings` block: a table per categorical feature (shared by features
-- whose domain has the same name) and the continuous features passed through as [B, 1].
-- Its output is tabular; the first dense layer after it concatenates the entries in
-- sorted key order.
local core = require "towerkit.core"
local util = require "towerkit.util"
local seeds = require "towerkit.seed"
local meta = require "towerkit.block.meta"
local initializers = require "towerkit.block.initializers"
local embedding_options = require "towerkit.block.embedding_options"
local Schema = require "towerkit.schema.schema"
local Tags = require("towerkit.schema.tags").Tags

local argerror = util.argerror

--- InputBlock(schema, {embedding_options =, name = "embeddings"}): target columns are
-- dropped; each continuous feature becomes [B, 1]; each categorical feature is
-- embedded (multi-hot lists combined with the options' combiner).
local function InputBlock(schema, opts)
  if not Schema.is_schema(schema) then argerror("InputBlock: a Schema expected, got %s", type(schema)) end
  opts = util.known_options(opts, { embedding_options = true, name = true }, "InputBlock")
  local eo = opts.embedding_options or embedding_options.new()
  if not embedding_options.class.is(eo) then eo = embedding_options.new(eo) end
  local features = schema:remove_by_tag(Tags.TARGET)

  -- tables: one per domain name, sized for the largest cardinality that shares it
  local tables, order = {}, {}
  local categorical, continuous = {}, {}
  for _, col in ipairs(features) do
    if col:has_tag(Tags.CATEGORICAL) then
      local card = col:cardinality()
      if not card then
        argerror("InputBlock: categorical feature '%s' has no int_domain (its cardinality is unknown)", col.name)
      end
      local tname = (col.int_domain and col.int_domain.name) or col.name
      local t = tables[tname]
      if not t then
        t = { name = tname, cardinality = card, features = {} }
        tables[tname] = t
        order[#order + 1] = tname
      elseif card > t.cardinality then
        t.cardinality = card
      end
      t.features[#t.features + 1] = col
      categorical[#categorical + 1] = col
    elseif col:has_tag(Tags.CONTINUOUS) then
      continuous[#continuous + 1] = col
    end
  end
  if #categorical == 0 and #continuous == 0 then
    argerror("InputBlock: the schema has no categorical or continuous feature (columns: %s)",
      table.concat(features:column_names(), ", "))
  end

  local emb = core.embeddings(opts.name or "embeddings", eo.embeddings_l2_reg)
  local row_sharded = eo.embedding_sharding == "row"
  if row_sharded then
    -- each table made as this rank's rows only (the values the whole table has there)
    require("towerkit.distributed").need_ranks("InputBlock", "builds each table as one rank's rows")
    emb:set_row_part(core.dist_rank(), core.dist_size())
  end
  local function_inits = {}
  for _, tname in ipairs(order) do
    local t = tables[tname]
    local dim
    for _, col in ipairs(t.features) do
      local d = eo:dim_for(col.name, t.cardinality, tname)
      if dim and d ~= dim then
        argerror("InputBlock: features sharing table '%s' ask for dims %d and %d", tname, dim, d)
      end
      dim = d
    end
    local init = eo:initializer_for(t.features[1].name, tname)
    local seed = seeds.take()
    for _, col in ipairs(t.features) do
      emb:add_feature(col.name, {
        table = tname, cardinality = t.cardinality, dim = dim,
        -- the options' combiner for every feature: a one-hot id is its own row under any
        -- combiner, and a column that comes with offsets (a list the schema did not tag)
        -- is combined as the options say, not summed
        combiner = eo.combiner,
        initializer = type(init) ~= "function" and init or nil,
        seed = seed,
      })
    end
    if type(init) == "function" then
      if row_sharded then
        argerror('InputBlock: table \'%s\' has an initializer function, which fills a whole table; with embedding_sharding = "row" give it by name or as {kind =, ...}', tname)
      end
      function_inits[tname] = { init, seed }
    end
  end
  for tname, fi in pairs(function_inits) do
    initializers.apply(emb:param(tname), fi[1], fi[2], "embeddings_initializers['" .. tname .. "']")
  end
  for _, col in ipairs(continuous) do emb:add_continuous(col.name) end
  -- the parameters become the shards (a forward reads its rows from their owners)
  if row_sharded then core.dist_tables_shard(emb) end
  meta.set(emb, { class = "InputBlock", schema = features:to_table() })
  return emb
end

return { InputBlock = InputBlock }
