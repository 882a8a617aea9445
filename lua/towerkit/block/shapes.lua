--- Block methods about shapes: compute_output_shape, build (creates the weights of
-- lazily sized blocks) and compute_call_output_shape. Each runs a forward pass on zeros
-- in a private context with gradients off.
local core = require "towerkit.core"
local util = require "towerkit.util"
local meta = require "towerkit.block.meta"
local block_schema = require "towerkit.block.schema"
local initializers = require "towerkit.block.initializers"
local core_forward = require("towerkit.block.class").core_forward
local Tags = require("towerkit.schema.tags").Tags

local argerror, describe = util.argerror, util.describe

local methods = util.methods("block/shapes.lua")

-- The output shapes of a forward pass of block on input: a shape or {name = shape}.
local function forward_shapes(block, input)
  local ctx = core.Context()
  ctx:grad_enabled(false)
  local out = core_forward(block, input, ctx) -- the C forward: Block:forward builds through here
  if core.is_tensor(out) then return out:shape() end
  local shapes = {}
  for k, v in pairs(out) do shapes[k] = v:shape() end
  return shapes
end

--- Output shapes for given input shapes: a shape table ({B, D}) or a table of
-- name -> shape (ids: {shape, "int64"}). Runs a forward pass on zeros.
function methods:compute_output_shape(input_shapes)
  local function zeros_of(s)
    if core.is_tensor(s) then return s end
    if type(s[1]) == "table" then return core.zeros(s[1], s[2]) end
    return core.zeros(s)
  end
  local input
  if type(input_shapes) == "table" and #input_shapes > 0 then
    input = zeros_of(input_shapes)
  else
    input = {}
    for k, s in pairs(input_shapes) do input[k] = zeros_of(s) end
  end
  return forward_shapes(self, input)
end

local function check_shape(s, what)
  if #s == 0 then argerror("%s must be a non-empty list of dimensions such as {B, D}", what) end
  for i, d in ipairs(s) do
    if type(d) ~= "number" or d < 0 or d % 1 ~= 0 then
      argerror("%s[%d] must be a non-negative integer, got %s", what, i, tostring(d))
    end
  end
end

-- zeros for one shape spec: a tensor, {B, D} (float32) or {{B}, "int64"}
local function zeros_for(s, what)
  if core.is_tensor(s) then return s end
  if type(s) ~= "table" or core.is_block(s) then
    argerror("%s must be a shape such as {B, D}, {{B}, \"int64\"} or a tensor, got %s", what, describe(s))
  end
  if type(s[1]) == "table" then
    check_shape(s[1], what .. "[1]")
    if s[2] ~= nil and type(s[2]) ~= "string" then
      argerror("%s[2] must be a dtype name such as \"int64\", got %s", what, describe(s[2]))
    end
    return core.zeros(s[1], s[2])
  end
  check_shape(s, what)
  return core.zeros(s)
end

-- A batch of one row of zeros for the features of a schema (targets and untagged
-- columns skipped): int64 ids for categorical columns, float32 for continuous ones.
local function zeros_from_schema(schema)
  local batch = {}
  for _, col in ipairs(schema:remove_by_tag(Tags.TARGET)) do
    if col:has_tag(Tags.CATEGORICAL) then
      batch[col.name] = core.zeros({ 1 }, "int64")
    elseif col:has_tag(Tags.CONTINUOUS) then
      batch[col.name] = core.zeros({ 1 })
    end
  end
  return batch
end

-- The input of a forward pass for input_shapes (see build); nil uses the schema.
local function input_for(self, input_shapes, what)
  if input_shapes == nil then
    local schema = block_schema.find(self)
    if not schema then
      argerror("%s: input_shapes is required (%s has no schema to take them from)", what, meta.label(self))
    end
    return zeros_from_schema(schema)
  end
  if core.is_tensor(input_shapes) then return input_shapes end
  if type(input_shapes) ~= "table" or core.is_block(input_shapes) then
    argerror("%s: input_shapes must be a shape such as {B, D} or a table of feature name -> shape, got %s",
      what, describe(input_shapes))
  end
  if #input_shapes > 0 then return zeros_for(input_shapes, what .. ": input_shapes") end
  if next(input_shapes) == nil then argerror("%s: input_shapes is empty", what) end
  local input = {}
  for k, s in pairs(input_shapes) do
    if type(k) ~= "string" then
      argerror("%s: input_shapes keys must be feature names, got %s", what, describe(k))
    end
    input[k] = zeros_for(s, ("%s: input_shapes['%s']"):format(what, k))
  end
  return input
end

-- forward_shapes with the errors of the forward pass named by `what`.
local function run_shapes(block, input, what)
  local ok, shapes = pcall(forward_shapes, block, input)
  if not ok then argerror("%s: %s", what, util.strip_position(shapes)) end
  return shapes
end

--- block:build([input_shapes]) -> block: creates the weights of lazily sized blocks
-- (Dense without input_dim, ...) by a forward pass on zeros. input_shapes as
-- compute_output_shape takes them: {B, D}, a tensor, or a table of feature name ->
-- shape (ids: {{B}, "int64"}). Without input_shapes the block's schema gives them (one
-- row: int64 ids for categorical columns, float32 for continuous ones). Initializer
-- functions that waited for the shapes (an MLPBlock's first kernel without input_dim)
-- are applied then.
function methods:build(input_shapes)
  run_shapes(self, input_for(self, input_shapes, "build"), "build")
  initializers.flush(self)
  return self
end

-- The block without its pre, post and aggregation: a container over the same children,
-- else a clone.
local function bare(self)
  if self:pre() == nil and self:post() == nil and self:aggregation() == nil then return self end
  local kind = self:kind()
  if kind == "parallel" or kind == "sequential" then
    local names, blocks = {}, {}
    for i, c in ipairs(self:children()) do names[i], blocks[i] = c.name, c.block end
    -- the aggregation argument is passed (nil): the binding reads a 4th argument
    if kind == "parallel" then return core.parallel(self:name(), names, blocks, nil) end
    return core.sequential(self:name(), blocks)
  end
  local c = self:clone()
  c:set_pre(nil)
  c:set_post(nil)
  c:set_aggregation(nil)
  return c
end

--- block:compute_call_output_shape(input_shapes) -> shape or {name = shape}: the
-- output shape of the block's own computation, without its pre, post and aggregation
-- (input_shapes are those after pre). Like compute_output_shape, it runs a forward pass
-- on zeros; input_shapes as build takes them.
function methods:compute_call_output_shape(input_shapes)
  local input = input_for(self, input_shapes, "compute_call_output_shape")
  return run_shapes(bare(self), input, "compute_call_output_shape")
end

return { methods = methods, zeros_from_schema = zeros_from_schema }
