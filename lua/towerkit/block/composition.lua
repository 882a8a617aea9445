--- Block methods that compose blocks into new ones: connect, connect_with_residual,
-- connect_with_shortcut, connect_branch, repeat, repeat_in_parallel, as_tabular,
-- prepare, connect_debug_block. The block itself is never changed.
local core = require "towerkit.core"
local util = require "towerkit.util"
local layers = require "towerkit.block.layers"
local combinators = require "towerkit.block.combinators"
local block_schema = require "towerkit.block.schema"
local Debug = require("towerkit.block.debug").Debug
local Schema = require "towerkit.schema.schema"

local argerror, describe = util.argerror, util.describe
local as_block, SequentialBlock, ParallelBlock = combinators.as_block, combinators.SequentialBlock,
  combinators.ParallelBlock

local methods = util.methods("block/composition.lua")

-- The arguments of a variadic method and its trailing options table (a table holding no
-- block or function).
local function split_opts(...)
  local n = select("#", ...)
  local args = { ... }
  local last = args[n]
  if n > 0 and type(last) == "table" and not core.is_block(last) then
    local has_block = false
    for _, v in pairs(last) do
      if core.is_block(v) or type(v) == "function" then has_block = true end
    end
    if not has_block then
      args[n] = nil
      return args, n - 1, last
    end
  end
  return args, n, {}
end

-- An options table: a plain table whose keys are all among `known` (so a list of
-- names or a table of blocks is not taken for one).
local function is_opts(v, known)
  if type(v) ~= "table" or core.is_block(v) or core.is_tensor(v) or Schema.is_schema(v) then
    return false
  end
  for k in pairs(v) do
    if not known[k] then return false end
  end
  return true
end

--- block:connect(b1, b2, ..., {block_name =}): a SequentialBlock of self then the
-- others. A table of blocks becomes a ParallelBlock, a function a LuaBlock.
function methods:connect(...)
  local args, n, opts = split_opts(...)
  if n == 0 then argerror("connect: at least one block expected") end
  local list = { self }
  for i = 1, n do list[#list + 1] = as_block(args[i], "connect") end
  return SequentialBlock(list, { name = opts.block_name })
end

--- block:connect_with_residual(b, {activation =})
function methods:connect_with_residual(block, opts)
  return self:connect(combinators.ResidualBlock(block, opts))
end

--- block:connect_with_shortcut(b, {shortcut_filter =, post =, aggregation =,
-- block_outputs_name =})
function methods:connect_with_shortcut(block, opts)
  return self:connect(combinators.WithShortcut(block, opts))
end

--- block:connect_branch(b1, b2, ..., {post =, aggregation =, add_rest =})
function methods:connect_branch(...)
  local args, n, opts = split_opts(...)
  if n == 0 then argerror("connect_branch: at least one branch expected") end
  local branches = {}
  if n == 1 and type(args[1]) == "table" and not core.is_block(args[1]) then
    branches = args[1]
  else
    for i = 1, n do branches[i] = args[i] end
  end
  if opts.add_rest then branches = block_schema.rest_branch(self, branches) end
  return self:connect(ParallelBlock(branches, { post = opts.post, aggregation = opts.aggregation }))
end

--- block:rep(num): a SequentialBlock of num copies (new weights); Merlin's repeat.
function methods:rep(num, opts)
  num = num or 1
  if type(num) ~= "number" or num < 1 or num % 1 ~= 0 then argerror("repeat: num must be a positive integer") end
  opts = util.opts_table(opts, "repeat")
  local list = {}
  for i = 1, num do list[i] = self:copy() end
  return SequentialBlock(list, { name = opts.block_name })
end
methods["repeat"] = methods.rep

--- block:repeat_in_parallel(num, {prefix =, names =, post =, aggregation =,
-- copies = true, residual = false})
function methods:repeat_in_parallel(num, opts)
  opts = util.opts_table(opts, "repeat_in_parallel")
  num = num or 1
  local names = opts.names
  if not names then
    names = {}
    for i = 0, num - 1 do names[#names + 1] = (opts.prefix or "") .. i end
  end
  local branches = {}
  for _, name in ipairs(names) do
    branches[tostring(name)] = (opts.copies == false) and self or self:copy()
  end
  if opts.residual then branches.shortcut = layers.Activation("linear", { name = "shortcut" }) end
  return ParallelBlock(branches, { post = opts.post, aggregation = opts.aggregation })
end

--- block:as_tabular(name): wraps the output tensor as {name = tensor}.
function methods:as_tabular(name)
  return self:connect(layers.AsTabular(name or self:name()))
end

local PREPARE_OPTS = { block = true, post = true, aggregation = true }

--- block:prepare([block [, post [, aggregation]]]), or block:prepare({block =, post =,
-- aggregation =}) -> SequentialBlock: transforms the inputs of this block: `block` (if
-- any) then `post`, then `aggregation` run first, then this block.
function methods:prepare(block, post, aggregation)
  if is_opts(block, PREPARE_OPTS) and post == nil and aggregation == nil then
    local o = block
    block, post, aggregation = o.block, o.post, o.aggregation
  end
  if aggregation ~= nil and type(aggregation) ~= "string" then
    argerror("prepare: aggregation must be a name such as \"concat\", got %s", describe(aggregation))
  end
  local first = core.sequential("prepare", block ~= nil and { as_block(block, "prepare: block") } or {})
  if post ~= nil then first:set_post(post) end
  if aggregation ~= nil then first:set_aggregation(aggregation) end
  return SequentialBlock({ first, self })
end

local DEBUG_BLOCK_OPTS = { append = true, name = true, hook = true }

--- block:connect_debug_block([append = true]), or block:connect_debug_block({append =,
-- hook =, name =}) -> SequentialBlock: the block followed (append) or preceded by a
-- tk.Debug block.
function methods:connect_debug_block(append)
  local opts = {}
  if type(append) == "table" then
    opts = util.known_options(append, DEBUG_BLOCK_OPTS, "connect_debug_block")
    append = opts.append
  end
  if append ~= nil and type(append) ~= "boolean" then
    argerror("connect_debug_block: append must be a boolean, got %s", describe(append))
  end
  local dbg = Debug { name = opts.name, hook = opts.hook }
  if append == false then return SequentialBlock({ dbg, self }) end
  return self:connect(dbg)
end

return { methods = methods, is_opts = is_opts }
