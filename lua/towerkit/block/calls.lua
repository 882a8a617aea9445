--- Block methods that call a block in Merlin's ways: apply_to_all (on every tensor of a
-- table), pre_call and post_call (the pre and post processing on their own), and forward.
local core = require "towerkit.core"
local util = require "towerkit.util"
local ragged = require "towerkit.ragged"
local Schema = require "towerkit.schema.schema"
local layers = require "towerkit.block.layers"
local combinators = require "towerkit.block.combinators"
local class = require "towerkit.block.class"
local initializers = require "towerkit.block.initializers"
local is_opts = require("towerkit.block.composition").is_opts

local argerror, describe = util.argerror, util.describe

local methods = util.methods("block/calls.lua")

-- Feature names from a name, a list of names or a Schema; errors name `what`.
local function name_list(v, what)
  if type(v) == "string" then return { v } end
  if Schema.is_schema(v) then return v:column_names() end
  if type(v) ~= "table" or core.is_block(v) or core.is_tensor(v) then
    argerror("%s must be a feature name, a list of names or a Schema, got %s", what, describe(v))
  end
  local names = {}
  for i, n in ipairs(v) do
    if type(n) ~= "string" then argerror("%s[%d] must be a feature name (string), got %s", what, i, describe(n)) end
    names[i] = n
  end
  if #names == 0 and next(v) ~= nil then argerror("%s must be a list of feature names, got a table with keys", what) end
  return names
end

local function check_inputs(inputs, what)
  if not core.is_tensor(inputs) and (type(inputs) ~= "table" or core.is_block(inputs)) then
    argerror("%s: inputs must be a tensor or a table of tensors, got %s", what, describe(inputs))
  end
end

--- block:forward(inputs [, ctx]) -> outputs (block(inputs [, ctx]) too): the block's
-- computation in ctx (default: the context of the inputs, else the current one). A block
-- holding initializer functions that wait for its shape (the first kernel of an MLPBlock
-- without input_dim) is built on the shapes of inputs first and they are applied.
function methods:forward(inputs, ctx)
  if initializers.waiting() and initializers.has_pending(self) then self:build(inputs) end -- build flushes them
  return class.core_forward(self, inputs, ctx)
end

--- block:apply_to_all(inputs [, columns_to_filter]) -> outputs: calls the block on each
-- tensor of `inputs` (a tensor, or a table of tensors, nested tables included), keeping
-- the structure; with columns_to_filter (names or a Schema) only those columns (a list
-- feature's values and offsets with it, as the core's filter matches).
function methods:apply_to_all(inputs, columns_to_filter)
  check_inputs(inputs, "apply_to_all")
  local keep
  if columns_to_filter ~= nil then
    keep = {}
    for _, n in ipairs(name_list(columns_to_filter, "apply_to_all: columns_to_filter")) do keep[n] = true end
  end
  local function map(v, path)
    if core.is_tensor(v) then return self:forward(v) end
    if type(v) ~= "table" or core.is_block(v) then
      argerror("apply_to_all: inputs%s must be a tensor or a table of tensors, got %s", path, describe(v))
    end
    local out = {}
    for k, x in pairs(v) do out[k] = map(x, path .. "['" .. tostring(k) .. "']") end
    return out
  end
  if core.is_tensor(inputs) then return self:forward(inputs) end
  local out = {}
  for k, v in pairs(inputs) do
    if not keep or (type(k) == "string" and (keep[k] or keep[ragged.feature_of(k)])) then
      out[k] = map(v, "['" .. tostring(k) .. "']")
    end
  end
  return out
end

--- block:pre_call(inputs [, transformations]) -> value: applies `transformations` (a
-- block, a registered name or a list of names) or else the block's pre, to inputs;
-- returns inputs when there is neither.
function methods:pre_call(inputs, transformations)
  check_inputs(inputs, "pre_call")
  local t = transformations ~= nil and combinators.resolve_post(transformations) or self:pre()
  if t == nil then return inputs end
  return t:forward(inputs)
end

local POST_CALL_OPTS = { transformations = true, merge_with = true, aggregation = true }

--- block:post_call(inputs [, transformations [, merge_with [, aggregation]]]), or
-- block:post_call(inputs, {transformations =, merge_with =, aggregation =}): Merlin's
-- post-processing. The tables of merge_with (a block, or a list of blocks called on
-- inputs, or tables of tensors) are merged into inputs, then `transformations` (else
-- the block's post) and `aggregation` (a name; else the block's) are applied.
function methods:post_call(inputs, transformations, merge_with, aggregation)
  check_inputs(inputs, "post_call")
  if is_opts(transformations, POST_CALL_OPTS) and merge_with == nil and aggregation == nil then
    local o = transformations
    transformations, merge_with, aggregation = o.transformations, o.merge_with, o.aggregation
  end
  if aggregation ~= nil and type(aggregation) ~= "string" then
    argerror("post_call: aggregation must be a name such as \"concat\", got %s", describe(aggregation))
  end
  local outputs = inputs
  if merge_with ~= nil then
    if core.is_tensor(inputs) then argerror("post_call: merge_with needs tabular inputs, got a tensor") end
    local list = (type(merge_with) == "table" and not core.is_block(merge_with) and #merge_with > 0)
      and merge_with or { merge_with }
    outputs = {}
    for k, v in pairs(inputs) do outputs[k] = v end
    for i, m in ipairs(list) do
      local add = m
      if core.is_block(m) or type(m) == "function" then add = combinators.as_block(m, "post_call: merge_with"):forward(inputs) end
      if type(add) ~= "table" or core.is_tensor(add) or core.is_block(add) then
        argerror("post_call: merge_with[%d] must give a table of tensors, got %s", i, describe(add))
      end
      for k, v in pairs(add) do outputs[k] = v end
    end
  end
  local t = transformations ~= nil and combinators.resolve_post(transformations) or self:post()
  if t then outputs = t:forward(outputs) end
  local agg = aggregation or self:aggregation()
  if agg then outputs = layers.Aggregation(agg):forward(outputs) end
  return outputs
end

return { methods = methods, name_list = name_list }
