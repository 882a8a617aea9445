--- Blocks: the Block class and the block constructors.
--
-- A block is a `towerkit.core` userdata; Block (tk.Block) is the method table of every
-- block, built here, in C, or restored from a config. Its methods come from the binding
-- (lua/binding/block.c) and from one file per topic below, each defined once: a second
-- definition of a name is an error when the modules load (util.define).
local util = require "towerkit.util"
local Block = require("towerkit.block.class").Block

local layers = require "towerkit.block.layers"
local combinators = require "towerkit.block.combinators"
local registry = require "towerkit.block.registry"
local meta = require "towerkit.block.meta"
local configuration = require "towerkit.block.configuration"
local block_schema = require "towerkit.block.schema"
local mlp = require "towerkit.block.mlp"
local inputs = require "towerkit.block.inputs"
local embedding_options = require "towerkit.block.embedding_options"
local initializers = require "towerkit.block.initializers"
local two_tower = require "towerkit.block.two_tower"

-- The methods, by topic.
for _, topic in ipairs {
  "composition",   -- connect, connect_branch, repeat, prepare, ...
  "configuration", -- copy, get_config, set_pre, set_post
  "construction",  -- class-level: from_features, from_schema, parse, parse_config, ...
  "weights",       -- get_weights, set_weights, trainable_weights, losses, dtype, ...
  "schema",        -- set_schema, schema, check_schema, get_item_ids_from_inputs, ...
  "introspection", -- layers, submodules, is_tabular, summary, ...
  "parallel",      -- parallel_dict, add_branch, apply_to_branch, ...
  "calls",         -- apply_to_all, pre_call, post_call
  "shapes",        -- compute_output_shape, build, compute_call_output_shape
  "two_tower",     -- query_block, item_block
} do
  util.register(Block, require("towerkit.block." .. topic).methods)
end

return {
  Block = Block,
  -- layers
  Dense = layers.Dense,
  Activation = layers.Activation,
  L2Norm = layers.L2Norm,
  Dropout = layers.Dropout,
  BatchNormalization = layers.BatchNormalization,
  Filter = layers.Filter,
  AsTabular = layers.AsTabular,
  Aggregation = layers.Aggregation,
  LuaBlock = layers.LuaBlock,
  Debug = require("towerkit.block.debug").Debug,
  check_activation = layers.check_activation,
  -- combinators
  SequentialBlock = combinators.SequentialBlock,
  ParallelBlock = combinators.ParallelBlock,
  ResidualBlock = combinators.ResidualBlock,
  WithShortcut = combinators.WithShortcut,
  as_block = combinators.as_block,
  resolve_post = combinators.resolve_post,
  -- towers and inputs
  MLPBlock = mlp.MLPBlock,
  DenseResidualBlock = mlp.DenseResidualBlock,
  InputBlock = inputs.InputBlock,
  EmbeddingOptions = embedding_options.new,
  EmbeddingOptionsClass = embedding_options.class,
  infer_embedding_dim = embedding_options.infer_embedding_dim,
  apply_initializer = initializers.apply,
  TwoTowerBlock = two_tower.TwoTowerBlock,
  -- registry, meta, configs, schemas
  registry = registry.blocks,
  register_block = registry.register,
  set_meta = meta.set,
  get_meta = meta.get,
  from_config = configuration.from_config,
  requires_schema = block_schema.requires_schema,
  rest_branch = block_schema.rest_branch,
}
