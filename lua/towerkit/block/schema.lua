--- Block methods about schemas: set_schema, schema, has_schema, check_schema,
-- REQUIRES_SCHEMA, get_item_ids_from_inputs. The schema lives in the block's meta, as
-- TwoTowerBlock and InputBlock store it (`meta.schema = schema:to_table()`), and
-- travels with configs and copies.
local core = require "towerkit.core"
local util = require "towerkit.util"
local ragged = require "towerkit.ragged"
local meta = require "towerkit.block.meta"
local layers = require "towerkit.block.layers"
local Schema = require "towerkit.schema.schema"
local Tags = require("towerkit.schema.tags").Tags

local argerror, describe, label = util.argerror, util.describe, meta.label

local M = { methods = util.methods("block/schema.lua") }
local methods = M.methods

--- The schema stored in the block's own meta, or nil.
local function own_schema(block)
  local t = meta.get(block)
  if t and type(t.schema) == "table" then
    return Schema.from_table(t.schema, ("block '%s' meta.schema"):format(block:name()))
  end
  return nil
end

--- find(block) -> Schema or nil: the block's own schema, else (as Merlin's constructors
-- propagate it) the first child's for a sequential block and the union of the
-- branches' for a parallel block whose branches all have one.
function M.find(block)
  local s = own_schema(block)
  if s then return s end
  local kind, children = block:kind(), block:children()
  if #children == 0 then return nil end
  if kind == "sequential" then return M.find(children[1].block) end
  if kind == "parallel" then
    local union
    for _, c in ipairs(children) do
      local cs = M.find(c.block)
      if not cs then return nil end
      union = union and (union + cs) or cs
    end
    return union
  end
  return nil
end
local find = M.find

local SCHEMA_CLASSES = { InputBlock = true, TwoTowerBlock = true }

--- block:REQUIRES_SCHEMA() -> boolean. True for blocks built from a schema
-- (InputBlock, TwoTowerBlock) and for blocks marked with tk.requires_schema(block).
function methods:REQUIRES_SCHEMA()
  local t = meta.get(self)
  if t == nil then return false end
  if t.requires_schema ~= nil then return t.requires_schema == true end
  return SCHEMA_CLASSES[t.class] == true
end

--- tk.requires_schema(block [, flag]): marks a block as needing a schema (Merlin's
-- `requires_schema` class decorator); with flag false, as not needing one (even an
-- InputBlock). Returns the block.
function M.requires_schema(block, flag)
  if not core.is_block(block) then
    argerror("requires_schema: block must be a block, got %s", describe(block))
  end
  if flag ~= nil and type(flag) ~= "boolean" then
    argerror("requires_schema: flag must be a boolean, got %s", type(flag))
  end
  meta.update(block, function(t) t.requires_schema = flag ~= false end)
  return block
end

--- block:has_schema() -> boolean: whether schema() finds one.
function methods:has_schema()
  return find(self) ~= nil
end

--- The block's schema, or an error "<what>: <class> '<name>' does not have a schema".
function M.need(block, what)
  local s = find(block)
  if not s then argerror("%s: %s does not have a schema (set one with set_schema)", what, label(block)) end
  return s
end

--- block:schema() -> Schema: the block's schema (its own, else inherited from its
-- first child (sequential) or all its branches (parallel)). Errors when there is none.
function methods:schema()
  return M.need(self, "schema")
end

--- block:check_schema([schema]): raises "<class> '<name>' requires a schema" when the
-- block REQUIRES_SCHEMA, has none and none is given. Returns the block.
function methods:check_schema(schema)
  if schema ~= nil and not Schema.is_schema(schema) then
    argerror("check_schema: schema must be a Schema, got %s", describe(schema))
  end
  if self:REQUIRES_SCHEMA() and schema == nil and not find(self) then
    argerror("check_schema: %s requires a schema", label(self))
  end
  return self
end

local SET_SCHEMA_OPTS = { overwrite = true }

--- block:set_schema([schema [, {overwrite = false}]]): stores the schema in the block's
-- meta (it travels with configs and copies). As in Merlin, a schema the block already
-- has is kept unless overwrite is true; set_schema(nil, {overwrite = true}) removes it.
-- Returns the block.
function methods:set_schema(schema, opts)
  if schema ~= nil and not Schema.is_schema(schema) then
    argerror("set_schema: schema must be a Schema, got %s", describe(schema))
  end
  opts = util.known_options(opts, SET_SCHEMA_OPTS, "set_schema")
  if schema == nil and not opts.overwrite then
    if self:REQUIRES_SCHEMA() and not find(self) then
      argerror("set_schema: %s requires a schema", label(self))
    end
    return self
  end
  local t = meta.get(self) or {}
  if schema == nil then
    if self:REQUIRES_SCHEMA() then
      argerror("set_schema: %s requires a schema; it cannot be removed", label(self))
    end
    t.schema = nil
  elseif t.schema == nil or opts.overwrite then
    t.schema = schema:to_table()
  end
  meta.set(self, next(t) ~= nil and t or nil)
  return self
end

--- block:get_item_ids_from_inputs(inputs) -> ids [, offsets]: the input column of the
-- first feature with the item_id tag in the block's schema ("movieId" for movielens).
-- A ragged column gives its values and offsets tensors.
function methods:get_item_ids_from_inputs(inputs)
  if type(inputs) ~= "table" or core.is_block(inputs) or core.is_tensor(inputs) then
    argerror("get_item_ids_from_inputs: inputs must be a table of feature name -> tensor, got %s",
      describe(inputs))
  end
  local schema = M.need(self, "get_item_ids_from_inputs")
  local selected = schema:select_by_tag(Tags.ITEM_ID)
  if #selected == 0 then
    argerror("get_item_ids_from_inputs: the schema of %s has no column with the item_id tag (columns: %s)",
      label(self), table.concat(schema:column_names(), ", "))
  end
  local col = selected:first()
  local ids = inputs[col.name]
  if ids ~= nil then return ids end
  local values, offsets = inputs[ragged.values_name(col.name)], inputs[ragged.offsets_name(col.name)]
  if values ~= nil and offsets ~= nil then return values, offsets end
  argerror("get_item_ids_from_inputs: the inputs have no '%s' column (the item id of the schema)", col.name)
end

-- connect_branch(..., {add_rest = true}) ---------------------------------------------

-- The features a branch keeps with a filter first (a filter, its pre, or the first
-- block of a sequential branch), as Merlin's SequentialBlock.filter_features.
local function filter_features(b)
  if not core.is_block(b) then return {} end
  if b:kind() == "filter" then
    local cfg = b:get_config()
    if cfg.exclude then return {} end
    return cfg.features or {}
  end
  local pre = b:pre()
  if pre then
    local got = filter_features(pre)
    if #got > 0 then return got end
  end
  if b:kind() == "sequential" then
    local first = b:children()[1]
    if first then return filter_features(first.block) end
  end
  return {}
end

--- tk.rest_branch(block, branches) -> branches: for connect_branch's add_rest, the
-- branches plus a "rest" branch keeping the columns of the block's schema that no
-- branch's filter selects (Merlin's `schema.without(filter features)`).
function M.rest_branch(block, branches)
  local schema = find(block)
  if not schema then
    argerror("connect_branch: add_rest needs a schema; %s has none (see set_schema)", label(block))
  end
  local used, out = {}, {}
  local list = #branches > 0
  for k, b in pairs(branches) do
    out[k] = b
    for _, f in ipairs(filter_features(b)) do used[#used + 1] = f end
  end
  local rest = schema:without(used)
  if #rest == 0 then return out end
  local filter = layers.Filter(rest:column_names(), { name = "rest" })
  if list then
    out[#out + 1] = filter
  else
    if out.rest ~= nil then argerror("connect_branch: add_rest: a branch is named 'rest' already") end
    out.rest = filter
  end
  return out
end

return M
