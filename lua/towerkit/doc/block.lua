--- help entries: the methods of Block (lua/binding/block.c, lua/towerkit/block/*.lua).
local D = require("towerkit.doc").define

-- B(name, signature, summary, merlin, example [, options])
local function B(name, sig, summary, merlin, example, options)
  D("Block:" .. name) { "block:" .. sig, summary, merlin = merlin, example = example, options = options }
end

-- Calling and inspecting
B("forward", "forward(input [, ctx]) -> output", "Runs the block on a tensor or a table of tensors in ctx\n" ..
  "(default: the current context); block(input) is the same. Initializer functions waiting for\n" ..
  "the input width (an MLPBlock's first layer without input_dim) run first.", "Block.__call__ / call",
  "tk.Dense(2)(tk.ones{1, 3})")
B("trace", "trace(input [, ctx]) -> output, events",
  "A forward pass that also returns one event per block run: {depth, name, kind, params, shape}.", nil,
  "local _, ev = tk.MLPBlock { 4 }:trace(tk.ones{1, 3})")
B("summary", "summary([input [, {quiet = false}]]) -> text when quiet",
  "Prints a table of the blocks of a forward pass on input (name, kind, output shape, parameter\n" ..
  "count), indented by depth; without input, the blocks with unknown shapes. With quiet = true\n" ..
  "prints nothing and returns the text.", "Model.summary",
  "tk.MLPBlock { 8, 4 }:summary(tk.ones{2, 3})")
B("name", "name() -> string", "The block's name.", "Layer.name", "tk.Dense(2):name()")
B("kind", "kind() -> string", "The block's kind (\"dense\", \"sequential\", \"parallel\", ...).", "type(layer).__name__",
  "tk.Dense(2):kind()")
B("id", "id() -> lightuserdata", "Names the C block: equal for every Lua handle of one block.", nil,
  "b:id() == b:layers()[1]:id()")
B("same", "same(other) -> boolean", "Whether two handles are the same C block.", "is", "b:same(b)")
B("children", "children() -> {{name =, block =}, ...}", "The direct children with their names.", "Layer._flatten_layers",
  "tk.MLPBlock { 4, 2 }:children()")
B("layers", "layers() -> {block, ...}", "The direct children (a sequential block's layers, a parallel block's\nbranches), in order.",
  "Block.layers", "#tk.MLPBlock { 4, 2 }:layers()")
B("submodules", "submodules() -> {block, ...}", "Every block below this one (pre, children, post, recursively,\nin forward order), each once.",
  "tf.Module.submodules", "#tk.MLPBlock { 4, 2 }:submodules()")
B("find", "find(name) -> block or nil", "The first block below (or equal to) this one with that name.", "Block.select_by_name",
  "tk.MLPBlock { 4 }:find(\"mlp/dense_0\")")
B("select_by_name", "select_by_name(name) -> block or nil", "The block with that name (find).", "Block.select_by_name",
  "m.block:select_by_name(\"query\")")
B("is_built", "is_built() -> boolean", "Whether the block's weights exist (lazily sized blocks build on first call).",
  "Layer.built", "tk.Dense(2):is_built()")
B("is_input", "is_input() -> boolean", "True for an input block (tk.InputBlock).", "Block.is_input", "b:is_input()")
B("is_tabular", "is_tabular() -> boolean", "Whether the block outputs a table of tensors (parallel, two-tower, input\nblocks, ...).",
  "Block.is_tabular", "tk.ParallelBlock{ a = tk.Dense(1) }:is_tabular()")
B("registry", "registry() -> tk.registry", "The table of named blocks that post = \"l2-norm\", parse and set_post\nresolve.",
  "Block.registry", "tk.Dense(2):registry()[\"l2-norm\"]")
B("compute_output_shape", "compute_output_shape(input_shapes) -> shape or {name = shape}",
  "Output shapes for input shapes ({B, D}, or name -> shape; ids as {shape, \"int64\"}), by a\nforward pass on zeros.",
  "Layer.compute_output_shape", "tk.Dense(5):compute_output_shape{ 2, 3 }")
B("compute_call_output_shape", "compute_call_output_shape(input_shapes) -> shape",
  "The output shape of the block's own computation, without pre, post and aggregation.",
  "Block.compute_call_output_shape", "tk.Dense(5):compute_call_output_shape{ 2, 3 }")
B("build", "build([input_shapes]) -> block", "Creates the weights of lazily sized blocks by a forward pass on zeros;\n" ..
  "without input_shapes the block's schema gives them. Initializer functions waiting for the\n" ..
  "shapes then run.", "Layer.build", "tk.Dense(4):build{ 1, 3 }")
B("count_params", "count_params() -> n", "The number of parameters (after build).", "Layer.count_params",
  "tk.Dense(4, { input_dim = 3 }):count_params()")

-- Weights
B("parameters", "parameters([skip_root [, trainable_only]]) -> {{path, tensor, trainable =}, ...}",
  "Every parameter with its block path.", "Layer.weights", "tk.Dense(2, { input_dim = 2 }):parameters()")
B("named_parameters", "named_parameters() -> {{name, tensor}, ...}", "Parameters as {name, tensor} pairs, named by\nblock path.",
  "[(w.name, w) for w in layer.weights]", "tk.Dense(2, { input_dim = 2 }):named_parameters()")
B("param", "param(name) -> Tensor or nil", "The block's own parameter called name (\"kernel\", \"bias\", ...).",
  "layer.kernel", "tk.Dense(2, { input_dim = 2 }):param(\"kernel\")")
B("weights", "weights() -> {tensor, ...}", "Every parameter (the live tensors) in named_parameters order.", "Layer.weights",
  "#tk.Dense(2, { input_dim = 2 }):weights()")
B("variables", "variables() -> {tensor, ...}", "The same as weights() (Keras' alias).", "Layer.variables", "b:variables()")
B("trainable_weights", "trainable_weights() -> {tensor, ...}", "The parameters the optimizer updates.",
  "Layer.trainable_weights", "b:trainable_weights()")
B("trainable_variables", "trainable_variables() -> {tensor, ...}", "The same as trainable_weights().",
  "Layer.trainable_variables", "b:trainable_variables()")
B("non_trainable_weights", "non_trainable_weights() -> {tensor, ...}", "The parameters no optimizer updates\n(batch-norm moving statistics).",
  "Layer.non_trainable_weights", "tk.BatchNorm { dim = 2 }:non_trainable_weights()")
B("non_trainable_variables", "non_trainable_variables() -> {tensor, ...}", "The same as non_trainable_weights().",
  "Layer.non_trainable_variables", "b:non_trainable_variables()")
B("trainable", "trainable() -> boolean", "True unless the block has parameters and none is trainable.", "Layer.trainable",
  "tk.Dense(2):trainable()")
B("get_weights", "get_weights() -> {tensor, ...}", "Copies of the weights, in named_parameters order.", "Layer.get_weights",
  "local w = b:get_weights()")
B("set_weights", "set_weights(weights)", "Sets every weight from a list in named_parameters order.", "Layer.set_weights",
  "b:set_weights(w)")
B("losses", "losses([ctx]) -> {tensor} or {}", "The regularisation losses forward passes in ctx added since its last\n" ..
  "reset (kernel_regularizer, embeddings_l2_reg in training), as one summed scalar.", "Layer.losses", "b:losses()")
B("dtype", "dtype() -> \"float32\"", "The dtype of the block's weights.", "Layer.dtype", "b:dtype()")
B("variable_dtype", "variable_dtype() -> \"float32\"", "The same as dtype().", "Layer.variable_dtype", "b:variable_dtype()")
B("compute_dtype", "compute_dtype() -> \"float32\"", "Blocks compute in float32 (ids are int64 inputs).", "Layer.compute_dtype",
  "b:compute_dtype()")

-- Copies and configs
B("copy", "copy([seed]) -> block", "The same graph with new weights from the initialisers.", "Block.copy",
  "tk.Dense(2):copy(7)")
B("clone", "clone() -> block", "The same graph with copies of the current weights.", "tf.keras.models.clone_model + set_weights",
  "b:clone()")
B("config_json", "config_json() -> text", "The block's graph and options as JSON (no weights).", "json.dumps(layer.get_config())",
  "tk.Dense(2):config_json()")
B("get_config", "get_config() -> table", "config_json() decoded: a table tk.from_config rebuilds the block from.",
  "Layer.get_config", "tk.Dense(2):get_config()")
B("from_config", "from_config(config [, seed]) -> block", "tk.from_config, callable on any block.", "Layer.from_config",
  "tk.Block.from_config(cfg)")
B("meta_json", "meta_json() -> text or nil", "The JSON stored with the block (tk.get_meta decodes it).", nil, "b:meta_json()")
B("set_meta_json", "set_meta_json(text or nil)", "Stores JSON with the block (tk.set_meta encodes it).", nil,
  "b:set_meta_json('{\"v\": 1}')")

-- Pre, post, aggregation
B("pre", "pre() -> block or nil", "The block run on the inputs first.", "Block.pre", "b:pre()")
B("post", "post() -> block or nil", "The block run on the outputs.", "Block.post", "b:post()")
B("set_pre", "set_pre(pre) -> block", "As set_post, for the inputs.", "Block(pre = ...)", "b:set_pre(\"relu\")")
B("set_post", "set_post(post) -> block", "post is a block, a function, a registered name or a list of names (nil\nremoves it).",
  "Block(post = ...)", "b:set_post(\"l2-norm\")")
B("aggregation", "aggregation() -> name or nil", "The aggregation of a tabular block's outputs.", "TabularBlock.aggregation",
  "b:aggregation()")
B("set_aggregation", "set_aggregation(name or nil) -> block", "Merges the outputs of a tabular block (\"concat\", \"stack\",\n" ..
  "\"element-wise-sum\", ...).", "TabularBlock(aggregation = ...)", "p:set_aggregation(\"concat\")")
B("pre_call", "pre_call(inputs [, transformations]) -> value", "Applies transformations (else the block's pre) to inputs.",
  "TabularBlock.pre_call", "b:pre_call(x)")
B("post_call", "post_call(inputs [, transformations [, merge_with [, aggregation]]]) -> value",
  "Merlin's post-processing: merges merge_with into inputs, then applies transformations (else the\n" ..
  "block's post) and aggregation.", "TabularBlock.post_call", "b:post_call({ a = x }, nil, nil, \"concat\")")
B("as_tabular", "as_tabular(name) -> block", "The block with its output wrapped as {name = tensor}.", "Block.as_tabular",
  "tk.Dense(2):as_tabular(\"x\")")

-- Composition
B("connect", "connect(b1, b2, ... [, {block_name =}]) -> SequentialBlock", "This block then the others; a table of\n" ..
  "blocks becomes a ParallelBlock, a function a LuaBlock.", "Block.connect",
  "tk.Dense(4):connect(tk.Activation(\"relu\"), tk.Dense(2))")
B("connect_branch", "connect_branch(b1, b2, ... [, {post =, aggregation =, add_rest =}]) -> block",
  "This block then the branches in parallel.", "Block.connect_branch",
  "inputs:connect_branch(tk.Dense(2), tk.Dense(3), { aggregation = \"concat\" })")
B("connect_with_residual", "connect_with_residual(b [, {activation =}]) -> block", "This block then ResidualBlock(b).",
  "Block.connect_with_residual", "tk.Dense(3):connect_with_residual(tk.Dense(3))")
B("connect_with_shortcut", "connect_with_shortcut(b [, {shortcut_filter =, post =, aggregation =, block_outputs_name =}]) -> block",
  "This block then WithShortcut(b).", "Block.connect_with_shortcut", "inputs:connect_with_shortcut(tk.MLPBlock { 4 })")
B("connect_debug_block", "connect_debug_block([append = true]) -> SequentialBlock",
  "The block followed (append) or preceded by a tk.Debug block; also {append =, hook =, name =}.",
  "Block.connect_debug_block", "tk.Dense(2):connect_debug_block()")
B("prepare", "prepare([block [, post [, aggregation]]]) -> SequentialBlock",
  "Transforms this block's inputs first: block, then post, then aggregation.", "Block.prepare",
  "tk.Dense(2):prepare(nil, nil, \"concat\")")
B("rep", "rep(num) -> SequentialBlock", "num copies in sequence (new weights).", "Block.repeat",
  "tk.Dense(4, { input_dim = 4 }):rep(3)")
B("repeat", "repeat(num) -> SequentialBlock", "The same as rep (`repeat` is a Lua keyword: call b[\"repeat\"](b, n)).",
  "Block.repeat", "b[\"repeat\"](b, 2)")
B("repeat_in_parallel", "repeat_in_parallel(num [, opts]) -> ParallelBlock", "num copies as parallel branches.",
  "Block.repeat_in_parallel", "tk.Dense(2):repeat_in_parallel(3, { aggregation = \"concat\" })",
  { { "prefix", "\"\"", "branch name prefix" }, { "names", "nil", "the branch names" }, { "post", "nil", "applied after" },
    { "aggregation", "nil", "how branches merge" }, { "copies", "true", "new weights per branch (false: shared)" },
    { "residual", "false", "each branch as a ResidualBlock" } })

-- Parallel blocks
B("parallel_dict", "parallel_dict() -> {name = block}", "The branches of a parallel block.", "ParallelBlock.parallel_dict",
  "p:parallel_dict()")
B("parallel_layers", "parallel_layers() -> {name = block}", "The same as parallel_dict().", "ParallelBlock.parallel_layers",
  "p:parallel_layers()")
B("parallel_values", "parallel_values() -> {block, ...}", "The branches of a parallel block, in order.",
  "ParallelBlock.parallel_values", "p:parallel_values()")
B("add_branch", "add_branch(name, block) -> parallel block", "A parallel block like this one with the branch added or\n" ..
  "replaced; the block itself is unchanged.", "ParallelBlock[name] = block", "p:add_branch(\"c\", tk.Dense(1))")
B("apply_to_branch", "apply_to_branch(name, b1, b2, ... [, {block_name =}]) -> parallel block",
  "A parallel block like this one whose branch name is branch:connect(b1, ...).", "ParallelBlock.apply_to_branch",
  "p:apply_to_branch(\"a\", tk.Activation(\"relu\"))")
B("apply_to_all", "apply_to_all(inputs [, columns_to_filter]) -> outputs",
  "Calls the block on each tensor of inputs (nested tables kept), or only on columns_to_filter.",
  "TabularBlock.apply_to_all", "tk.Activation(\"relu\"):apply_to_all({ a = tk.ones{2, 1} })")

-- Embeddings
B("add_feature", "add_feature(feature, {table =, cardinality =, dim =, combiner =, initializer =, seed =})",
  "Adds a categorical feature to an embeddings block (its own table, or a shared one by name).",
  "EmbeddingFeatures", "emb:add_feature(\"item_id\", { cardinality = 50, dim = 8 })")
B("set_row_part", "set_row_part(part, parts)",
  "The tables added from now on hold rows [floor(part V / parts), floor((part + 1) V / parts)) of their V\n" ..
  "rows only, the values the whole table has there (row-sharded builds: part = rank, parts = size).",
  nil, "emb:set_row_part(0, 2)")
B("add_continuous", "add_continuous(feature)", "Adds a continuous feature (passed on as [B, 1]) to an embeddings block.",
  "ContinuousFeatures", "emb:add_continuous(\"user_activity\")")

-- Schemas
B("schema", "schema() -> Schema", "The block's schema (its own, else its first child's or its branches'); an error\nwhen there is none.",
  "Block.schema", "m.block:schema()")
B("has_schema", "has_schema() -> boolean", "Whether schema() finds one.", "Block.has_schema", "b:has_schema()")
B("set_schema", "set_schema([schema [, {overwrite = false}]]) -> block",
  "Stores the schema with the block; a schema it has is kept unless overwrite.", "Block.set_schema",
  "b:set_schema(schema)")
B("check_schema", "check_schema([schema]) -> block", "Raises \"<class> '<name>' requires a schema\" when the block needs\none and has none.",
  "Block.check_schema", "b:check_schema()")
B("REQUIRES_SCHEMA", "REQUIRES_SCHEMA() -> boolean", "True for blocks built from a schema and blocks marked\nwith tk.requires_schema.",
  "Block.REQUIRES_SCHEMA", "tk.InputBlock(schema):REQUIRES_SCHEMA()")
B("from_schema", "from_schema(schema [, tags [, allow_none = true]] [, {pre =, post =, aggregation =, name =}]) -> block or nil",
  "from_features over the columns of schema (with tags: those that have any).", "TabularBlock.from_schema",
  "tk.Block.from_schema(schema, tk.Tags.USER)")
B("from_features", "from_features(features [, {pre =, post =, aggregation =, name =, schema =}]) -> block",
  "A block whose pre keeps only features (names or a Schema); passes its input on.", "TabularBlock.from_features",
  "tk.Block.from_features { \"user_id\" }")
B("from_layer", "from_layer(layer) -> block", "A Lua function becomes a LuaBlock; a block is returned as it is.",
  "Block.from_layer", "tk.Block.from_layer(function(x) return x end)")
B("parse", "parse(b1 [, b2, ...]) -> block", "Blocks, registered names, functions or tables of named blocks, connected\nin order.",
  "Block.parse", "tk.Block.parse(\"relu\", tk.Dense(2))")
B("parse_block", "parse_block(input) -> block", "A block as it is, a function as a LuaBlock.", "Block.parse_block",
  "tk.Block.parse_block(function(x) return x end)")
B("parse_config", "parse_config(config) -> branches, options", "Splits a parallel block's get_config() into branches and\noptions for tk.ParallelBlock.",
  "ParallelBlock.parse_config", "local br, o = tk.Block.parse_config(p:get_config())")
B("get_item_ids_from_inputs", "get_item_ids_from_inputs(inputs) -> ids [, offsets]",
  "The input column of the first item_id-tagged feature of the block's schema.", "Block.get_item_ids_from_inputs",
  "m.block:get_item_ids_from_inputs(batch)")

-- Two-tower blocks
B("query_block", "query_block() -> block", "A two-tower block's query tower with its inputs.", "TwoTowerBlock.query_block",
  "m.block:query_block()")
B("item_block", "item_block() -> block", "A two-tower block's item tower with its inputs.", "TwoTowerBlock.item_block",
  "m.block:item_block()")
