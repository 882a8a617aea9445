--- Combinators: blocks of blocks. SequentialBlock (in order), ParallelBlock (branches
-- on one input), ResidualBlock (block(x) + x) and WithShortcut ({block(x), x}), and the
-- conversions every API taking "a block" uses (as_block, resolve_post).
local core = require "towerkit.core"
local util = require "towerkit.util"
local layers = require "towerkit.block.layers"
local registry = require "towerkit.block.registry"

local argerror, opts_table, sorted_keys = util.argerror, util.opts_table, util.sorted_keys
local blocks = registry.blocks

local combinators = {}

--- Turns a block, a Lua function or a table of named blocks into a block.
function combinators.as_block(x, what)
  if core.is_block(x) then return x end
  if type(x) == "function" then return layers.LuaBlock(x) end
  if type(x) == "table" and next(x) ~= nil then return combinators.ParallelBlock(x) end
  argerror("%s: a block, a function or a table of blocks expected, got %s", what, type(x))
end
local as_block = combinators.as_block

--- Resolves a post value: a block, a function, a registered name or a list of
-- names chained in order.
function combinators.resolve_post(post)
  if type(post) == "string" then
    local f = blocks[post]
    if not f then
      argerror("unknown block name '%s'; known: %s", post, table.concat(sorted_keys(blocks), ", "))
    end
    return f()
  end
  if type(post) == "table" and not core.is_block(post) and #post > 0 then
    local list = {}
    for i, p in ipairs(post) do list[i] = combinators.resolve_post(p) end
    if #list == 1 then return list[1] end
    return combinators.SequentialBlock(list, { name = "post" })
  end
  return as_block(post, "post")
end

-- The pre and post options of a container.
local function set_pre_post(block, opts)
  if opts.pre then block:set_pre(as_block(opts.pre, "pre")) end
  if opts.post then block:set_post(combinators.resolve_post(opts.post)) end
  return block
end

--- SequentialBlock(blocks, {name =, pre =, post =}): connect, in order.
function combinators.SequentialBlock(list, opts)
  opts = opts_table(opts, "SequentialBlock")
  if type(list) ~= "table" or core.is_block(list) then list = { list } end
  local children = {}
  for i, b in ipairs(list) do children[i] = as_block(b, "SequentialBlock") end
  return set_pre_post(core.sequential(opts.name or opts.block_name or "sequential", children), opts)
end

--- ParallelBlock(branches, {aggregation =, post =, pre =, name =}): branches is a
-- table name -> block (in sorted name order) or a list (named "0", "1", ...).
function combinators.ParallelBlock(branches, opts)
  opts = opts_table(opts, "ParallelBlock")
  if type(branches) ~= "table" or core.is_block(branches) then
    argerror("ParallelBlock: a table of branches expected")
  end
  local names, children = {}, {}
  if #branches > 0 then
    for i, b in ipairs(branches) do
      names[i] = core.is_block(b) and b:name() or tostring(i - 1)
      children[i] = as_block(b, "ParallelBlock")
    end
    -- Merlin keys a list of branches by their names; make duplicates unique.
    local seen = {}
    for i, n in ipairs(names) do
      if seen[n] then names[i] = n .. "_" .. (i - 1) end
      seen[names[i]] = true
    end
  else
    for _, k in ipairs(sorted_keys(branches)) do
      if type(k) ~= "string" then argerror("ParallelBlock: branch names must be strings") end
      names[#names + 1] = k
      children[#children + 1] = as_block(branches[k], "ParallelBlock")
    end
  end
  if #names == 0 then argerror("ParallelBlock: at least one branch expected") end
  return set_pre_post(core.parallel(opts.name or "parallel", names, children, opts.aggregation), opts)
end

--- ResidualBlock(block, {activation =}): activation(block(x) + x).
function combinators.ResidualBlock(block, opts)
  opts = opts_table(opts, "ResidualBlock")
  return core.residual(opts.name or "residual", as_block(block, "ResidualBlock"), opts.activation)
end

--- WithShortcut(block, {shortcut_filter =, aggregation = "concat", post =,
-- block_outputs_name =}): {block_outputs_name: block(x), shortcut: filter(x) or x},
-- aggregated; aggregation = false keeps the two outputs by name.
function combinators.WithShortcut(block, opts)
  opts = opts_table(opts, "WithShortcut")
  local filter = opts.shortcut_filter
  if filter ~= nil and not core.is_block(filter) then filter = layers.Filter(filter) end
  local b = core.shortcut(opts.name or "with_shortcut", as_block(block, "WithShortcut"), filter,
    opts.block_outputs_name, opts.aggregation == nil and "concat" or opts.aggregation)
  if opts.post then b:set_post(combinators.resolve_post(opts.post)) end
  return b
end

return combinators
