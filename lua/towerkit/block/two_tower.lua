--- TwoTowerBlock (Merlin's merlin.models.tf.TwoTowerBlock): a ParallelBlock of a query
-- tower and an item tower, each an input block over the features of its tag followed by
-- the tower, with an optional post block applied to both outputs. Its methods
-- query_block and item_block give the two branches.
local util = require "towerkit.util"
local meta = require "towerkit.block.meta"
local combinators = require "towerkit.block.combinators"
local embedding_options = require "towerkit.block.embedding_options"
local mlp = require "towerkit.block.mlp"
local InputBlock = require("towerkit.block.inputs").InputBlock
local Schema = require "towerkit.schema.schema"
local Tags = require("towerkit.schema.tags").Tags

local argerror = util.argerror

local M = { methods = util.methods("block/two_tower.lua") }

local KNOWN = {
  item_tower = true, query_tower_tag = true, item_tower_tag = true, embedding_options = true,
  post = true, name = true,
}

local function tower_with_inputs(name, schema, tag, tower, eo)
  local selected = schema:select_by_tag(tag)
  if #selected == 0 then
    argerror("TwoTower: no feature of the schema has the %s tag '%s' (columns: %s)", name, tostring(tag),
      table.concat(schema:column_names(), ", "))
  end
  local inputs = InputBlock(selected, { embedding_options = eo })
  return combinators.SequentialBlock({ inputs, tower }, { name = name })
end

--- TwoTowerBlock(schema, query_tower, {item_tower =, query_tower_tag = Tags.USER,
-- item_tower_tag = Tags.ITEM, embedding_options =, post =}). Without item_tower the
-- item tower is a copy of the query tower with its own weights (an MLPBlock with
-- input_dim is made anew without it, for the width of the item features). The towers
-- are built from the schema when the block is made (an error then if a tower cannot
-- take its features). Called on a batch it returns {query = [B, d], item = [B, d]}.
function M.TwoTowerBlock(schema, query_tower, opts)
  if schema == nil then argerror("The schema is required by TwoTower") end
  if not Schema.is_schema(schema) then argerror("TwoTower: schema must be a Schema, got %s", type(schema)) end
  if query_tower == nil then argerror("The query_tower is required by TwoTower") end
  query_tower = combinators.as_block(query_tower, "TwoTower: query_tower")
  if opts ~= nil and type(opts) ~= "table" then argerror("TwoTower: options must be a table") end
  opts = opts or {}
  util.check_options(opts, KNOWN, "TwoTower")
  local qtag = opts.query_tower_tag or Tags.USER
  local itag = opts.item_tower_tag or Tags.ITEM
  for _, t in ipairs { qtag, itag } do
    if type(t) ~= "string" or t == "" then argerror("TwoTower: tags must be non-empty strings") end
  end
  -- Without item_tower, a copy of the query tower; an MLPBlock with input_dim or with
  -- options a copy cannot redo (initializer functions, blocks) is made anew from its
  -- options without input_dim (its first layer then takes the width of the item features)
  local copied = opts.item_tower == nil
  local item_tower
  if not copied then
    item_tower = combinators.as_block(opts.item_tower, "TwoTower: item_tower")
  else
    local info = meta.get(query_tower)
    item_tower = (type(info) == "table" and info.class == "MLPBlock" and (info.input_dim ~= nil or info.source ~= nil)
      and mlp.without_input_dim(query_tower)) or query_tower:copy()
  end
  local eo = opts.embedding_options
  if eo ~= nil and not embedding_options.class.is(eo) then eo = embedding_options.new(eo) end
  local query = tower_with_inputs("query", schema, qtag, query_tower, eo)
  local item = tower_with_inputs("item", schema, itag, item_tower, eo)
  local block = combinators.ParallelBlock({ query = query, item = item }, { name = opts.name or "two_tower" })
  if opts.post ~= nil then block:set_post(opts.post) end
  meta.set(block, {
    class = "TwoTowerBlock",
    query_tower_tag = qtag,
    item_tower_tag = itag,
    schema = schema:to_table(),
    embedding_options = eo and eo:to_table() or nil,
  })
  -- Built now from the schema (one row of zeros): a tower that cannot take its features
  -- says so here rather than inside fit, and initializer functions that waited for the
  -- towers' input widths are applied (fit, evaluate and export run in C and build
  -- nothing in Lua).
  local ok, err = pcall(block.build, block)
  if not ok then
    err = util.strip_position(tostring(err)):gsub("^build: ", "")
    argerror("TwoTower: the towers cannot take the features of the schema: %s%s", err, copied and
      " (the item tower is a copy of the query tower; a tower of fixed input width needs item_tower = a tower for the item features)"
      or "")
  end
  return block
end

local function branch(self, name, what)
  for _, c in ipairs(self:children()) do
    if c.name == name then return c.block end
  end
  argerror("%s: block '%s' has no '%s' branch (it is not a two-tower block)", what, self:name(), name)
end

--- The query tower with its inputs (the "query" branch).
function M.methods:query_block() return branch(self, "query", "query_block") end
--- The item tower with its inputs (the "item" branch).
function M.methods:item_block() return branch(self, "item", "item_block") end

return M
