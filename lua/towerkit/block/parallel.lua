--- Block methods of parallel blocks: parallel_dict, parallel_values, parallel_layers,
-- add_branch, apply_to_branch.
--
-- Blocks cannot get new children from Lua (the binding adds children only when it builds
-- a block), so add_branch and apply_to_branch return a new parallel block over the same
-- branch blocks (the weights are shared) instead of changing the block in place.
local core = require "towerkit.core"
local util = require "towerkit.util"
local combinators = require "towerkit.block.combinators"

local argerror, describe = util.argerror, util.describe

local methods = util.methods("block/parallel.lua")

local function check_parallel(self, what)
  if self:kind() ~= "parallel" then
    argerror("%s: block '%s' is a %s block, not a parallel block", what, self:name(), self:kind())
  end
end

--- block:parallel_dict() -> {branch name = block}: the branches of a parallel block.
function methods:parallel_dict()
  check_parallel(self, "parallel_dict")
  local out = {}
  for _, c in ipairs(self:children()) do out[c.name] = c.block end
  return out
end

--- block:parallel_layers(): the same as parallel_dict() (branches always have names).
function methods:parallel_layers()
  check_parallel(self, "parallel_layers")
  return self:parallel_dict()
end

--- block:parallel_values() -> {block, ...}: the branches of a parallel block in order.
function methods:parallel_values()
  check_parallel(self, "parallel_values")
  return self:layers()
end

-- A parallel block like self (name, pre, post, aggregation, meta) over other branches.
local function rebuild_parallel(self, names, blocks)
  local par = core.parallel(self:name(), names, blocks, self:aggregation())
  local pre, post = self:pre(), self:post()
  if pre then par:set_pre(pre) end
  if post then par:set_post(post) end
  local meta = self:meta_json()
  if meta then par:set_meta_json(meta) end
  return par
end

--- block:add_branch(name, block) -> parallel block: a parallel block like this one with
-- the branch `name` added last, or replaced in place when it exists (Merlin's dict
-- assignment). The block itself is unchanged; the branches are shared, not copied.
function methods:add_branch(name, block)
  check_parallel(self, "add_branch")
  if type(name) ~= "string" or name == "" then
    argerror("add_branch: name must be a non-empty string, got %s", describe(name))
  end
  if block == nil then argerror("add_branch: block is required") end
  block = combinators.as_block(block, "add_branch: block")
  local names, blocks, replaced = {}, {}, false
  for i, c in ipairs(self:children()) do
    names[i] = c.name
    if c.name == name then
      blocks[i], replaced = block, true
    else
      blocks[i] = c.block
    end
  end
  if not replaced then
    names[#names + 1] = name
    blocks[#blocks + 1] = block
  end
  return rebuild_parallel(self, names, blocks)
end

--- block:apply_to_branch(branch_name, b1, b2, ... [, {block_name =}]) -> parallel
-- block: a parallel block like this one whose branch `branch_name` is
-- branch:connect(b1, b2, ...). The block itself is unchanged.
function methods:apply_to_branch(branch_name, ...)
  check_parallel(self, "apply_to_branch")
  if type(branch_name) ~= "string" then
    argerror("apply_to_branch: branch_name must be a string, got %s", describe(branch_name))
  end
  if select("#", ...) == 0 then argerror("apply_to_branch: at least one block expected") end
  local names, blocks, found = {}, {}, false
  for i, c in ipairs(self:children()) do
    names[i] = c.name
    blocks[i] = c.block
    if c.name == branch_name then
      local ok, res = pcall(c.block.connect, c.block, ...)
      if not ok then argerror("apply_to_branch: %s", util.strip_position(res)) end
      blocks[i], found = res, true
    end
  end
  if not found then
    argerror("apply_to_branch: parallel block '%s' has no branch '%s' (branches: %s)", self:name(),
      branch_name, table.concat(names, ", "))
  end
  return rebuild_parallel(self, names, blocks)
end

return { methods = methods }
