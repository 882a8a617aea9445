--- Class-level helpers of Block, called with a dot (tk.Block.parse(...)); a block
-- before the arguments (a call with a colon) is ignored, except by parse, where it
-- comes first. Merlin's TabularBlock.from_features and from_schema, Block.parse,
-- parse_block, from_layer, ParallelBlock.parse_config, and from_config.
local core = require "towerkit.core"
local util = require "towerkit.util"
local meta = require "towerkit.block.meta"
local layers = require "towerkit.block.layers"
local combinators = require "towerkit.block.combinators"
local configuration = require "towerkit.block.configuration"
local name_list = require("towerkit.block.calls").name_list
local Schema = require "towerkit.schema.schema"

local argerror, describe = util.argerror, util.describe
local as_block, resolve_post = combinators.as_block, combinators.resolve_post

local methods = util.methods("block/construction.lua")

local function is_list(v)
  return type(v) == "table" and not core.is_block(v) and not core.is_tensor(v) and #v > 0
end

local function drop_self(first, ...)
  if core.is_block(first) then return ... end
  return first, ...
end

--- block:from_config(config [, seed]): tk.from_config.
function methods.from_config(_, config, seed)
  return configuration.from_config(config, seed)
end

local FEATURES_OPTS = { pre = true, post = true, aggregation = true, name = true, schema = true }

local function from_features(features, opts)
  local names = name_list(features, "from_features: features")
  opts = util.known_options(opts, FEATURES_OPTS, "from_features")
  if opts.schema ~= nil and not Schema.is_schema(opts.schema) then
    argerror("from_features: schema must be a Schema, got %s", describe(opts.schema))
  end
  if opts.aggregation ~= nil and type(opts.aggregation) ~= "string" then
    argerror("from_features: aggregation must be a name such as \"concat\", got %s", describe(opts.aggregation))
  end
  local name = opts.name or "tabular_block"
  if type(name) ~= "string" then argerror("from_features: name must be a string, got %s", describe(name)) end
  local block = core.sequential(name, {})
  local pre = layers.Filter(names)
  if opts.pre ~= nil then pre = combinators.SequentialBlock({ pre, resolve_post(opts.pre) }, { name = "pre" }) end
  block:set_pre(pre)
  if opts.post ~= nil then block:set_post(opts.post) end
  if opts.aggregation ~= nil then block:set_aggregation(opts.aggregation) end
  meta.set(block, { class = "TabularBlock", schema = opts.schema and opts.schema:to_table() or nil })
  return block
end

--- tk.Block.from_features(features [, {pre =, post =, aggregation =, name =, schema =}])
-- -> block: Merlin's TabularBlock.from_features: a block whose pre keeps only
-- `features` (names or a Schema) then runs `pre`; it passes its input on, then applies
-- post and aggregation.
function methods.from_features(...)
  local features, opts = drop_self(...)
  return from_features(features, opts)
end

local SCHEMA_OPTS = { tags = true, allow_none = true, pre = true, post = true, aggregation = true, name = true }

--- tk.Block.from_schema(schema [, tags [, allow_none = true]] [, {pre =, post =,
-- aggregation =, name =}]) -> block or nil: from_features over the columns of `schema`
-- (with `tags`, those that have any of them), storing the schema. No column gives nil,
-- or with allow_none = false the error "No features with tags: ... found".
function methods.from_schema(...)
  local schema, tags, allow_none, opts = drop_self(...)
  if not Schema.is_schema(schema) then
    argerror("from_schema: schema must be a Schema, got %s", describe(schema))
  end
  -- the options table may come second or third
  if opts == nil and allow_none == nil and type(tags) == "table" and not is_list(tags) then
    opts, tags = tags, nil
  elseif opts == nil and type(allow_none) == "table" then
    opts, allow_none = allow_none, nil
  end
  opts = util.known_options(opts, SCHEMA_OPTS, "from_schema")
  if tags == nil then tags = opts.tags end
  if allow_none == nil then allow_none = opts.allow_none end
  if allow_none ~= nil and type(allow_none) ~= "boolean" then
    argerror("from_schema: allow_none must be a boolean, got %s", describe(allow_none))
  end
  local selected = schema
  if tags ~= nil then
    if type(tags) ~= "string" and type(tags) ~= "table" then
      argerror("from_schema: tags must be a tag or a list of tags, got %s", describe(tags))
    end
    selected = schema:select_by_tag(tags)
    if #selected == 0 and allow_none == false then
      local list = type(tags) == "table" and table.concat(tags, ", ") or tags
      argerror("from_schema: No features with tags: %s found", list)
    end
  end
  if #selected == 0 then return nil end
  return from_features(selected:column_names(), {
    schema = selected, pre = opts.pre, post = opts.post, aggregation = opts.aggregation, name = opts.name,
  })
end

local function parse_one(b, what)
  if type(b) == "string" then return resolve_post(b) end
  if core.is_block(b) or type(b) == "function" or (type(b) == "table" and not is_list(b)) then
    return as_block(b, what)
  end
  argerror("%s: a block, a registered name, a function or a table of blocks expected, got %s", what, describe(b))
end

--- tk.Block.parse(b1 [, b2, ...]) or tk.Block.parse({b1, b2, ...}) -> block: Merlin's
-- Block.parse. Each entry is a block, a registered name ("l2-norm", "relu", ...), a
-- function (LuaBlock) or a table of named blocks (ParallelBlock); several are
-- connected in order. Called with a colon on a block, that block comes first.
function methods.parse(...)
  local n = select("#", ...)
  local args = { ... }
  if n == 1 and is_list(args[1]) then
    args = args[1]
    n = #args
  end
  if n == 0 then argerror("parse: at least one block expected") end
  local blocks = {}
  for i = 1, n do
    if args[i] == nil then argerror("parse: entry %d is nil", i) end
    blocks[i] = parse_one(args[i], "parse")
  end
  if n == 1 then return blocks[1] end
  return blocks[1]:connect(unpack(blocks, 2, n))
end

local function block_or_function(input, what)
  if core.is_block(input) then return input end
  if type(input) == "function" then return layers.LuaBlock(input) end
  argerror("%s: a block or a function expected, got %s", what, describe(input))
end

--- tk.Block.parse_block(input) -> block: a block as it is, a function as a LuaBlock.
function methods.parse_block(input)
  return block_or_function(input, "parse_block")
end

--- tk.Block.from_layer(layer) -> block: Merlin turns a Keras layer into a block; here a
-- Lua function becomes a LuaBlock (a block is returned as it is).
function methods.from_layer(layer)
  return block_or_function(layer, "from_layer")
end

-- tk.from_config(config), with its error named by `what`.
local function build(config, what)
  local ok, res = pcall(configuration.from_config, config)
  if not ok then argerror("parse_config: %s: %s", what, util.strip_position(res)) end
  return res
end

--- tk.Block.parse_config(config) -> branches, options: splits the get_config() table
-- of a parallel block into its branches (name -> block, built with fresh weights) and
-- its options {name =, aggregation =, pre =, post =, schema =, meta =}, so
-- tk.ParallelBlock(branches, options) rebuilds it (Merlin's ParallelBlock.parse_config).
function methods.parse_config(...)
  local config = drop_self(...)
  if type(config) ~= "table" then argerror("parse_config: config must be a table, got %s", describe(config)) end
  if config.kind ~= "parallel" then
    argerror("parse_config: config must be a parallel block's config, got kind '%s'", tostring(config.kind))
  end
  local children, names = config.children or {}, config.child_names or {}
  local branches = {}
  for i, child in ipairs(children) do
    local name = names[i] or child.name
    branches[name] = build(child, ("branch '%s'"):format(tostring(name)))
  end
  local options = { name = config.name, aggregation = config.aggregation, meta = config.meta }
  for _, k in ipairs { "pre", "post" } do
    if config[k] ~= nil then options[k] = build(config[k], k) end
  end
  if type(config.meta) == "table" and type(config.meta.schema) == "table" then
    options.schema = Schema.from_table(config.meta.schema, "parse_config: meta.schema")
  end
  return branches, options
end

return { methods = methods }
