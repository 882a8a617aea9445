--- help entries: the functions and classes of `tk` (see towerkit.doc).
local D = require("towerkit.doc").define

-- Tensors ------------------------------------------------------------------------------

D "tk.tensor" { "tk.tensor(values [, dtype = \"float32\"]) -> Tensor",
  "A heap tensor from a number or a nested Lua table (the shape is read from the nesting).\n" ..
  "dtype is \"float32\" or \"int64\" (ids).",
  merlin = "tf.constant", example = "tk.tensor({{1, 2}, {3, 4}})\ntk.tensor({3, 1, 4}, \"int64\")" }
D "tk.zeros" { "tk.zeros(shape [, dtype = \"float32\"]) -> Tensor", "A tensor of zeros; shape is a table {2, 3} or numbers.",
  merlin = "tf.zeros", example = "tk.zeros{2, 3}" }
D "tk.ones" { "tk.ones(shape [, dtype = \"float32\"]) -> Tensor", "A tensor of ones.", merlin = "tf.ones",
  example = "tk.ones{2, 2}" }
D "tk.full" { "tk.full(shape, value [, dtype = \"float32\"]) -> Tensor", "A tensor filled with value.",
  merlin = "tf.fill", example = "tk.full({2, 2}, 0.5)" }
D "tk.randn" { "tk.randn(shape [, seed = 0 [, stddev = 1]]) -> Tensor",
  "Normal samples with mean 0, deterministic for a seed.", merlin = "tf.random.normal", example = "tk.randn({2, 3}, 7)" }
D "tk.rand" { "tk.rand(shape [, seed = 0 [, low = 0, high = 1]]) -> Tensor",
  "Uniform samples in [low, high), deterministic for a seed.", merlin = "tf.random.uniform",
  example = "tk.rand({4}, 1, -1, 1)" }
D "tk.initialized" { "tk.initialized(shape, initializer [, seed = 0]) -> Tensor",
  "A new tensor filled by a named initializer (\"glorot_uniform\", \"he_normal\", \"zeros\", ...) or\n" ..
  "a table with Keras' argument names: {kind = \"random_normal\" or \"truncated_normal\", mean = 0,\n" ..
  "stddev = 0.05, seed =}, {kind = \"random_uniform\", minval = -0.05, maxval = 0.05, seed =},\n" ..
  "{kind = \"constant\", value =}, {kind = \"glorot_uniform\", seed =}, ... (the core's a and b are\n" ..
  "taken too). An initializer's seed replaces the one given (the block's); an unknown key is\n" ..
  "an error.", merlin = "tf.keras.initializers.get(name)(shape)",
  example = "tk.initialized({4, 8}, { kind = \"truncated_normal\", stddev = 0.5, seed = 1 })" }
D "tk.matmul" { "tk.matmul(a, b [, transpose_a = false [, transpose_b = false]]) -> Tensor",
  "Matrix product of 2-d tensors (on the tape when computed in a context).", merlin = "tf.matmul",
  example = "tk.matmul(tk.ones{2, 3}, tk.ones{3, 4})" }
D "tk.concat" { "tk.concat({t1, t2, ...}) -> Tensor", "Concatenates 2-d tensors along the last dimension.",
  merlin = "tf.concat(..., axis = -1)", example = "tk.concat{tk.ones{2, 1}, tk.zeros{2, 2}}" }
D "tk.stack" { "tk.stack({t1, t2, ...}) -> Tensor", "Stacks tensors of one shape along a new last dimension ([B, D] -> [B, D, n]).",
  merlin = "tf.stack(..., axis = -1)", example = "tk.stack{tk.ones{2, 3}, tk.zeros{2, 3}}" }
D "tk.cosine" { "tk.cosine(a, b) -> Tensor", "Row-wise cosine similarity of two [B, D] tensors: [B, 1].",
  merlin = "tf.keras.losses.cosine_similarity (negated)", example = "tk.cosine(tk.ones{2, 3}, tk.ones{2, 3})" }
D "tk.embedding_lookup" { "tk.embedding_lookup(table, ids [, offsets [, combiner = \"mean\" [, name]]]) -> Tensor",
  "Rows of an embedding table [N, D] for int64 ids; with offsets (a ragged list column) the\n" ..
  "rows of each list are combined (\"mean\", \"sum\" or \"sqrtn\").",
  merlin = "tf.nn.embedding_lookup / embedding_lookup_sparse",
  example = "tk.embedding_lookup(tk.randn{10, 4}, tk.tensor({1, 2}, \"int64\"))" }
D "tk.is_tensor" { "tk.is_tensor(x) -> boolean", "Whether x is a towerkit tensor.", example = "tk.is_tensor(tk.ones{1})" }
D "tk.Tensor" { "tk.Tensor", "The method table of tensors (tk.tensor makes one). Arithmetic operators\n" ..
  "(+ - * / unary -) work on tensors and numbers; printing shows dtype, shape and values.",
  merlin = "tf.Tensor", example = "local t = tk.tensor{{1, 2}, {3, 4}}\nt:matmul(t):sum()" }
D "tk.mse" { "tk.mse(pred, target) -> Tensor", "Mean squared error, a scalar tensor.", alias = "tk.losses.mse",
  merlin = "tf.keras.losses.MeanSquaredError", example = "tk.mse(tk.ones{2, 1}, tk.zeros{2, 1})" }
D "tk.cross_entropy" { "tk.cross_entropy(logits, labels [, weights]) -> Tensor",
  "Softmax cross-entropy of logits [B, C] with int64 class labels [B], averaged (optionally\nweighted per row).",
  alias = "tk.losses.cross_entropy", merlin = "tf.keras.losses.SparseCategoricalCrossentropy(from_logits = True)",
  example = "tk.cross_entropy(tk.randn{4, 3}, tk.tensor({0, 1, 2, 0}, \"int64\"))" }
D "tk.losses" { "tk.losses", "The loss functions: cross_entropy, mse, bce_with_logits.", topic = true,
  merlin = "tf.keras.losses" }
D "tk.losses.mse" { "tk.losses.mse(pred, target) -> Tensor", "Mean squared error, a scalar tensor.",
  merlin = "tf.keras.losses.MeanSquaredError", example = "tk.losses.mse(tk.ones{2, 1}, tk.zeros{2, 1})" }
D "tk.losses.cross_entropy" { "tk.losses.cross_entropy(logits, labels [, weights]) -> Tensor",
  "Softmax cross-entropy with int64 labels, averaged over rows.",
  merlin = "tf.keras.losses.SparseCategoricalCrossentropy(from_logits = True)",
  example = "tk.losses.cross_entropy(tk.randn{4, 3}, tk.tensor({0, 1, 2, 0}, \"int64\"))" }
D "tk.losses.bce_with_logits" { "tk.losses.bce_with_logits(logits, targets) -> Tensor",
  "Binary cross-entropy of logits against 0/1 targets, averaged.",
  merlin = "tf.keras.losses.BinaryCrossentropy(from_logits = True)",
  example = "tk.losses.bce_with_logits(tk.zeros{2, 1}, tk.ones{2, 1})" }

-- Contexts and threads -------------------------------------------------------------------

D "tk.Context" { "tk.Context([seed]) -> Context",
  "A context for ops: the tape of a forward pass, its arena and its training flag\n" ..
  "(ctx:train(on), ctx:run(fn, ...), ctx:num_threads(n), ctx:reset()).",
  merlin = "tf.GradientTape (roughly)", example = "local ctx = tk.Context(1)\nctx:run(function() return tk.ones{2}:exp() end)" }
D "tk.current_context" { "tk.current_context() -> Context", "The context ops run in now.",
  example = "tk.current_context()" }
D "tk.default_context" { "tk.default_context() -> Context", "The context that is current outside any ctx:run.",
  example = "tk.default_context()" }
D "tk.reset" { "tk.reset()", "Frees the intermediates and gradients of the current context's last step.\n" ..
  "Tensors computed before are released (t:clone() keeps one).", example = "tk.reset()" }
D "tk.set_training" { "tk.set_training(on)", "Sets the training flag of the current context (dropout,\n" ..
  "batch-norm statistics).", merlin = "Keras' training= argument", example = "tk.set_training(false)" }
D "tk.no_grad" { "tk.no_grad(fn, ...) -> fn's results", "Runs fn with gradients off in the current context.",
  merlin = "tf.stop_gradient / torch.no_grad", example = "tk.no_grad(function() return tk.ones{2}:exp() end)" }
D "tk.set_num_threads" { "tk.set_num_threads(n)",
  "How many threads (1 to 1024) towerkit's parallel work may use: the trainer, the export,\n" ..
  "top-k and large products; the default is the number of cores. OpenBLAS itself stays\n" ..
  "single-threaded. Results are the same bits on every run for one count.",
  merlin = "tf.config.threading.set_intra_op_parallelism_threads", example = "tk.set_num_threads(2)" }
D "tk.get_num_threads" { "tk.get_num_threads() -> n", "The thread count in force (set_num_threads, or the number of cores).",
  example = "tk.get_num_threads()" }
D "tk.blas_info" { "tk.blas_info() -> {kernel, best, below_best, user_set, threads, blas_threads, cpu, advice}",
  "The OpenBLAS kernel that runs and the best one for this CPU.", example = "tk.blas_info().kernel" }
D "tk.io" { "tk.io.write_atomic(path, text)",
  "Writes a file atomically: a temporary file in the same directory, checked writes, fsync,\n" ..
  "rename over path. On any error the old file stays as it was and the error names the path.",
  example = "tk.io.write_atomic(\"notes.txt\", \"hello\\n\")" }
D "tk.manual_seed" { "tk.manual_seed(n)", "The seeds of the blocks built next start again from n (reproducible\n" ..
  "initial weights).", merlin = "tf.random.set_seed", example = "tk.manual_seed(42)" }

-- Schemas ------------------------------------------------------------------------------

D "tk.Tags" { "tk.Tags", "The column tags of Merlin's schema: USER, ITEM, USER_ID, ITEM_ID, CATEGORICAL,\n" ..
  "CONTINUOUS, LIST, TARGET, ... (compound tags such as USER_ID need all of their parts).",
  merlin = "merlin.schema.Tags", example = "tk.Tags.USER_ID" }
D "tk.Schema" { "tk.Schema({column, ...}) -> Schema",
  "A list of ColumnSchema with Merlin's selection methods; tk.Schema.read_json(path),\n" ..
  "tk.Schema.from_json(text), tk.Schema.from_table(t) read schema.json.",
  merlin = "merlin.schema.Schema",
  example = "tk.Schema { tk.ColumnSchema(\"user_id\", { tags = { tk.Tags.USER_ID, tk.Tags.CATEGORICAL },\n" ..
  "  int_domain = { max = 99 } }) }" }
D "tk.ColumnSchema" { "tk.ColumnSchema(name [, opts]) -> ColumnSchema", "One column of a schema.",
  options = {
    { "tags", "{}", "list of tags (tk.Tags.*)" },
    { "dtype", "\"float32\" (\"int64\" with int_domain)", "the column's type" },
    { "int_domain", "nil", "{min =, max =, name =}: the ids' range; cardinality is max + 1" },
    { "value_count", "nil", "{min =, max =}: a list column's lengths" },
    { "is_list", "false", "a list (multi-hot) column" },
    { "is_ragged", "is_list", "lists of varying length" },
    { "properties", "{}", "free-form properties (domain, embedding sizes, ...)" },
  }, merlin = "merlin.schema.ColumnSchema",
  example = "tk.ColumnSchema(\"item_id\", { tags = { tk.Tags.ITEM_ID, tk.Tags.CATEGORICAL }, int_domain = { max = 49 } })" }

-- Blocks -------------------------------------------------------------------------------

D "tk.Block" { "tk.Block", "The method table of every block (Dense, MLPBlock, TwoTowerBlock, ...). A block\n" ..
  "is called on a tensor or a table of tensors: block(x) -> output.", merlin = "merlin.models.tf.Block",
  example = "local b = tk.MLPBlock { 8, 4 }\nb(tk.ones{2, 3}):shape()" }
D "tk.Dense" { "tk.Dense(units [, opts]) -> Block", "Fully connected layer: activation(x W + b), W [in, units].",
  options = {
    { "activation", "nil (linear)", "activation name: relu, sigmoid, tanh, gelu, selu, elu, softplus, linear" },
    { "use_bias", "true", "add a bias" },
    { "kernel_initializer", "\"glorot_uniform\"", "initializer name or fn(shape, seed)" },
    { "bias_initializer", "\"zeros\"", "initializer of the bias" },
    { "kernel_regularizer", "nil", "an L2 factor added to block:losses() in training" },
    { "input_dim", "nil", "input width; else taken from the first input" },
    { "name", "\"dense\"", "the block's name" },
    { "seed", "next seed", "initializer seed (tk.manual_seed)" },
  }, merlin = "tf.keras.layers.Dense",
  example = "tk.Dense(3, { activation = \"relu\" })(tk.ones{2, 4})" }
D "tk.Activation" { "tk.Activation(name [, {name =}]) -> Block", "Applies an activation function element-wise.",
  merlin = "tf.keras.layers.Activation", example = "tk.Activation(\"relu\")(tk.tensor{-1, 2})" }
D "tk.L2Norm" { "tk.L2Norm([{name =}]) -> Block", "Divides each row by its L2 norm (post = \"l2-norm\").",
  merlin = "mm.L2Norm", example = "tk.L2Norm()(tk.tensor{{3, 4}})" }
D "tk.Dropout" { "tk.Dropout(rate [, {name =, seed =}]) -> Block",
  "Zeroes a fraction rate of values in training (scaling the others by 1 / (1 - rate)); the\n" ..
  "identity otherwise.", merlin = "tf.keras.layers.Dropout", example = "tk.Dropout(0.1)" }
D "tk.BatchNormalization" { "tk.BatchNormalization([opts]) -> Block",
  "Batch normalisation over the batch dimension, with moving statistics for inference.",
  options = {
    { "momentum", "0.99", "weight of the old moving statistics" },
    { "epsilon", "1e-3", "added to the variance" },
    { "dim", "nil", "feature width (else from the first input)" },
    { "name", "\"batch_norm\"", "the block's name" },
  }, merlin = "tf.keras.layers.BatchNormalization", example = "tk.BatchNormalization { momentum = 0.9 }" }
D "tk.BatchNorm" { "tk.BatchNorm([opts]) -> Block", "Batch normalisation.", alias = "tk.BatchNormalization",
  merlin = "tf.keras.layers.BatchNormalization", example = "tk.BatchNorm()" }
D "tk.Filter" { "tk.Filter(names [, {exclude = false, name =}]) -> Block",
  "Keeps (or with exclude = true drops) the named features of a table of tensors; names may be\na Schema.",
  merlin = "mm.Filter", example = "tk.Filter { \"user_id\" }({ user_id = tk.ones{2}, x = tk.ones{2} })" }
D "tk.AsTabular" { "tk.AsTabular(output_name [, {name =}]) -> Block", "Wraps a tensor as {output_name = tensor}.",
  merlin = "mm.AsTabular", example = "tk.AsTabular(\"x\")(tk.ones{2, 2})" }
D "tk.Aggregation" { "tk.Aggregation(name [, {name =}]) -> Block",
  "Merges a table of tensors into one: \"concat\", \"stack\", \"element-wise-sum\", \"sum\", \"cosine\".",
  merlin = "mm.ConcatFeatures / mm.StackFeatures / mm.ElementwiseSum",
  example = "tk.Aggregation(\"concat\")({ a = tk.ones{2, 1}, b = tk.zeros{2, 2} })" }
D "tk.LuaBlock" { "tk.LuaBlock(fn [, {name =}]) -> Block",
  "A block written as a Lua function of a tensor or a table of tensors. It trains like any other\n" ..
  "(its ops are on the tape) but runs only in this Lua state and cannot be restored from a config.",
  merlin = "a custom tf.keras.layers.Layer", example = "tk.LuaBlock(function(x) return x:relu() end)" }
D "tk.Debug" { "tk.Debug([{name = \"debug\", hook =}]) -> Block",
  "The identity, which first calls hook(value, text) (text describes the shapes), or prints\n" ..
  "\"<name>: <text>\" without a hook.", merlin = "mm.Debug", example = "tk.Debug()(tk.ones{2, 3})" }
D "tk.SequentialBlock" { "tk.SequentialBlock(blocks [, {name =, pre =, post =}]) -> Block",
  "Calls blocks in order, each on the previous one's output.", merlin = "mm.SequentialBlock",
  example = "tk.SequentialBlock { tk.Dense(4), tk.Activation(\"relu\") }" }
D "tk.ParallelBlock" { "tk.ParallelBlock(branches [, {aggregation =, pre =, post =, name =}]) -> Block",
  "Calls each branch on the input; the output is {name = branch output} (merged by aggregation).\n" ..
  "branches is a table name -> block (sorted by name) or a list (named \"0\", \"1\", ...).",
  merlin = "mm.ParallelBlock",
  example = "tk.ParallelBlock({ a = tk.Dense(2), b = tk.Dense(3) }, { aggregation = \"concat\" })" }
D "tk.ResidualBlock" { "tk.ResidualBlock(block [, {activation =}]) -> Block", "activation(block(x) + x).",
  merlin = "mm.ResidualBlock", example = "tk.ResidualBlock(tk.Dense(3, { input_dim = 3 }))" }
D "tk.WithShortcut" { "tk.WithShortcut(block [, opts]) -> Block",
  "{block_outputs_name = block(x), shortcut = filter(x) or x}, then aggregation.",
  options = {
    { "shortcut_filter", "nil", "a Filter (or names) applied to the shortcut" },
    { "aggregation", "\"concat\"", "how the two outputs merge" },
    { "post", "nil", "a block applied after" },
    { "block_outputs_name", "\"output\"", "the key of block(x)" },
  }, merlin = "mm.WithShortcut", example = "tk.WithShortcut(tk.Dense(2))" }
D "tk.MLPBlock" { "tk.MLPBlock(dimensions [, opts]) -> Block",
  "A stack of Dense layers with the given widths, each followed by the activation (and dropout,\n" ..
  "normalization when asked).",
  options = {
    { "activation", "\"relu\"", "activation of every layer" },
    { "use_bias", "true", "layers have biases" },
    { "kernel_initializer", "\"glorot_uniform\"", "initializer: name, table or fn(shape, seed) (run at build)" },
    { "bias_initializer", "\"zeros\"", "initializer of the biases" },
    { "kernel_regularizer", "nil", "L2 factor on the kernels" },
    { "dropout", "nil", "dropout rate after each layer" },
    { "normalization", "nil", "\"batch_norm\" after each layer" },
    { "no_activation_last_layer", "false", "the last layer is linear" },
    { "filter", "nil", "features to keep first (names or a Schema)" },
    { "block_name", "\"mlp\"", "the block's name" },
    { "input_dim", "nil", "width of the input (else taken from the first call)" },
  }, merlin = "mm.MLPBlock",
  example = "tk.MLPBlock({ 64, 32 }, { no_activation_last_layer = true })" }
D "tk.DenseResidualBlock" { "tk.DenseResidualBlock([opts]) -> Block",
  "activation(x + dense(x)), the dense layer projecting back to the input width.",
  options = {
    { "low_rank_dim", "nil", "a bottleneck width (needs input_dim)" },
    { "activation", "\"relu\"", "applied to the sum" },
    { "use_bias", "true", "the dense layer has a bias" },
    { "dropout", "nil", "dropout rate" },
    { "normalization", "\"batch_norm\"", "normalization of the output" },
    { "depth", "1", "stacked copies" },
  }, merlin = "mm.DenseResidualBlock", example = "tk.DenseResidualBlock { depth = 2 }" }
D "tk.InputBlock" { "tk.InputBlock(schema [, {embedding_options =, name = \"embeddings\"}]) -> Block",
  "The features of a schema as tensors: target columns dropped, continuous features [B, 1],\n" ..
  "categorical ones embedded (lists combined with the options' combiner).",
  merlin = "mm.InputBlock / mm.InputBlockV2",
  example = "tk.InputBlock(schema, { embedding_options = tk.EmbeddingOptions { embedding_dim_default = 8 } })" }
D "tk.EmbeddingOptions" { "tk.EmbeddingOptions([opts]) -> EmbeddingOptions",
  "How InputBlock sizes and initialises the embedding tables.",
  options = {
    { "embedding_dims", "{}", "column name -> width" },
    { "embedding_dim_default", "64", "the width of other columns" },
    { "infer_embedding_sizes", "false", "width from the cardinality (infer_embedding_dim)" },
    { "infer_embedding_sizes_multiplier", "2.0", "the heuristic's multiplier" },
    { "infer_embeddings_ensure_dim_multiple_of_8", "false", "round inferred widths up to 8" },
    { "embeddings_initializers", "nil", "column name -> initializer (or one for all)" },
    { "embeddings_l2_reg", "0.0", "L2 factor on looked-up rows in training" },
    { "combiner", "\"mean\"", "how list columns combine rows: mean, sum, sqrtn" },
    { "embedding_sharding", "\"replicated\"", "\"row\": under mpirun each rank builds its 1/N of every table's rows only" },
  }, merlin = "mm.EmbeddingOptions", example = "tk.EmbeddingOptions { embedding_dim_default = 16 }" }
D "tk.EmbeddingOptionsClass" { "tk.EmbeddingOptionsClass",
  "The method table of EmbeddingOptions values (tk.EmbeddingOptions makes one).",
  merlin = "mm.EmbeddingOptions", example = "getmetatable(tk.EmbeddingOptions {}) == tk.EmbeddingOptionsClass" }
D "tk.infer_embedding_dim" { "tk.infer_embedding_dim(cardinality [, multiplier = 2.0 [, multiple_of_8 = false]]) -> n",
  "Merlin's heuristic: ceil(cardinality ^ 0.25 * multiplier), rounded up to a multiple of 8 when\nasked.",
  merlin = "mm.embedding.infer_embedding_dim", example = "tk.infer_embedding_dim(10000)" }
D "tk.apply_initializer" { "tk.apply_initializer(param, fn, seed, what)",
  "Fills a parameter from fn(shape, seed), which returns a tensor or a nested table of that shape.",
  example = "tk.apply_initializer(tk.Dense(2, { input_dim = 2 }):param(\"kernel\"), function(s) return tk.ones(s) end, 0, \"kernel\")" }
D "tk.TwoTowerBlock" { "tk.TwoTowerBlock(schema, query_tower [, opts]) -> Block",
  "A query tower and an item tower, each with its InputBlock over its columns; called on a batch\n" ..
  "it returns {query = [B, d], item = [B, d]}. Built from the schema when made: a tower that\n" ..
  "cannot take its features is an error then. The default item tower of an MLPBlock with\n" ..
  "input_dim is made anew without it, sized by the item features.",
  options = {
    { "item_tower", "a copy of query_tower", "the item tower (own weights)" },
    { "query_tower_tag", "tk.Tags.USER", "columns of the query tower" },
    { "item_tower_tag", "tk.Tags.ITEM", "columns of the item tower" },
    { "embedding_options", "tk.EmbeddingOptions()", "the towers' embeddings" },
    { "post", "nil", "applied to both outputs, e.g. \"l2-norm\"" },
  }, merlin = "mm.TwoTowerBlock",
  example = "tk.TwoTowerBlock(schema, tk.MLPBlock { 16, 8 }, { post = \"l2-norm\" })" }
D "tk.as_block" { "tk.as_block(x [, what]) -> Block",
  "A block from a block, a Lua function (LuaBlock) or a table of named blocks (ParallelBlock).",
  merlin = "mm.Block.parse", example = "tk.as_block(function(x) return x:relu() end)" }
D "tk.resolve_post" { "tk.resolve_post(post) -> Block",
  "A post value as a block: a block, a function, a registered name or a list of names chained.",
  example = "tk.resolve_post { \"l2-norm\" }" }
D "tk.register_block" { "tk.register_block(name, factory)", "Registers `name` (for post = name, Block.parse) as factory().",
  merlin = "mm.registry.register", example = "tk.register_block(\"double\", function() return tk.LuaBlock(function(x) return x * 2 end) end)" }
D "tk.set_meta" { "tk.set_meta(block, meta)", "Stores a table with the block (nil removes it); it travels with configs.",
  example = "tk.set_meta(b, { note = \"v1\" })" }
D "tk.get_meta" { "tk.get_meta(block) -> table or nil", "The table stored by set_meta.", example = "tk.get_meta(b)" }
D "tk.from_config" { "tk.from_config(config [, seed]) -> Block", "A block from get_config()'s table, with fresh weights.",
  merlin = "tf.keras.layers.deserialize / Layer.from_config", example = "tk.from_config(tk.Dense(3):get_config())" }
D "tk.requires_schema" { "tk.requires_schema(block [, flag = true]) -> block",
  "Marks a block as needing a schema (false: as not needing one).", merlin = "mm.utils.tf_utils.requires_schema",
  example = "tk.requires_schema(tk.Dense(2))" }
D "tk.rest_branch" { "tk.rest_branch(block, branches) -> branches",
  "The branches plus a \"rest\" branch that keeps the schema columns no branch's filter selects\n" ..
  "(connect_branch's add_rest).", merlin = "schema.without(filter features)",
  example = "tk.rest_branch(inputs, { user = tk.Filter { \"user_id\" } })" }

-- Models, data, training -----------------------------------------------------------------

D "tk.TwoTowerModel" { "tk.TwoTowerModel(two_tower_block [, opts]) or tk.TwoTowerModel(schema, query_tower [, opts]) -> TwoTowerModel",
  "A retrieval model trained with in-batch negatives (softmax over the batch's items). With a\n" ..
  "schema, item_tower, query_tower_tag, item_tower_tag, embedding_options and post are options of\n" ..
  "the TwoTowerBlock it builds.",
  options = {
    { "logits_temperature", "1.0", "logits are divided by it" },
    { "logq", "nil", "\"streaming\" or item probabilities: logQ correction logits - reg * log(p)" },
    { "logq_reg_factor", "1.0", "reg of the logQ correction" },
    { "logq_buckets", "item cardinality", "buckets of the streaming frequency estimate" },
    { "logq_alpha", "0.01", "learning rate of the streaming estimate" },
    { "remove_false_negatives", "true", "mask in-batch copies of a row's positive item" },
    { "negatives", "nil", "{num =, sampler = \"uniform\"|\"popularity\"|\"log_uniform\", corpus = items}" },
    { "num_hard_negatives", "0", "keep only the hardest negatives per row (0: all)" },
    { "embedding_sharding", "\"replicated\"", "\"row\": under mpirun each rank builds its 1/N of every table's rows only" },
    { "sample_weight", "nil", "a column of per-example weights" },
  }, merlin = "mm.TwoTowerModel",
  example = "local m = tk.TwoTowerModel(schema, tk.MLPBlock { 16, 8 }, { post = \"l2-norm\" })\n" ..
  "m:compile { optimizer = tk.optim.Adam { learning_rate = 1e-2 } }\nm:fit(data, { epochs = 2 })" }
D "tk.is_model" { "tk.is_model(x) -> boolean", "Whether x is a TwoTowerModel.", example = "tk.is_model(m)" }
D "tk.load" { "tk.load(dir) -> TwoTowerModel", "The model saved by model:save(dir) (compile it again to train further).",
  merlin = "tf.keras.models.load_model", example = "local m = tk.load(\"model/\")" }
D "tk.popularity_baseline" { "tk.popularity_baseline(train, data, item_col [, opts]) -> {metric = value}",
  "Ranks the items of train by count (ties by id) and scores the rows of data with evaluate's\nmetrics.",
  options = {
    { "metrics", "{RecallAt(10), NDCGAt(10)}", "the metrics (tk.metrics.*)" },
    { "k", "10", "cut-off when metrics is not given" },
    { "exclude_seen", "nil", "a dataset: skip each user's items in it, except the row's own" },
    { "user_id", "the USER_ID column", "the user column for exclude_seen" },
  }, merlin = "mm.PopularityBaseline (roughly)",
  example = "tk.popularity_baseline(train, valid, \"item_id\", { k = 10 })" }
D "tk.History" { "tk.History() -> History",
  "The per-step and per-epoch logs of fit (fit returns one): history.steps = {{step, epoch, loss}},\n" ..
  "history.epochs = {{epoch, loss, seconds, examples_per_second, val_...}}.",
  merlin = "tf.keras.callbacks.History", example = "local h = m:fit(data)\nh:plot(\"history.svg\")" }
D "tk.help" { "tk.help([x])",
  "Prints the entry of x: a function, a class, a method name (\"Block:summary\", \"fit\"), or a value\n" ..
  "(its class and methods). With no argument, lists the topics. The REPL has it as help.",
  example = "help(tk.Dense)\nhelp(\"TwoTowerModel:fit\")\nhelp()" }

D "tk.data.Dataset" { "tk.data.Dataset(columns [, {schema =}]) -> Dataset",
  "A table of columns of equal length: names -> tensors, Lua arrays of numbers, arrays of arrays\n" ..
  "of ids (lists), or the pair f__values / f__offsets.", merlin = "merlin.io.Dataset",
  example = "tk.data.Dataset { user_id = tk.tensor({ 1, 2 }, \"int64\"), item_id = tk.tensor({ 3, 4 }, \"int64\") }" }
D "tk.data.is_dataset" { "tk.data.is_dataset(x) -> boolean", "Whether x is a Dataset.", example = "tk.data.is_dataset(data)" }
D "tk.data.read_csv" { "tk.data.read_csv(path, schema [, {columns =}]) -> Dataset",
  "A CSV file with a header row; the schema gives each column's type (list cells hold ids\n" ..
  "separated by '|'). A bad cell is an error naming the file, row and column.",
  merlin = "merlin.io.Dataset(path, engine = \"csv\")", example = "tk.data.read_csv(\"train.csv\", schema)" }
D "tk.data.csv_chunks" { "tk.data.csv_chunks(path, schema [, {chunk_rows = 1048576, columns =}]) -> iterator",
  "Iterates a CSV file as Datasets of at most chunk_rows rows.", merlin = "merlin.io.Dataset.to_iter",
  example = "for chunk in tk.data.csv_chunks(\"big.csv\", schema) do print(chunk:size()) end" }
D "tk.data.range" { "tk.data.range(a, b) -> {a, ..., b}", "A Lua array of the integers a to b.",
  example = "tk.data.range(0, 4)" }
D "tk.data.Random" { "tk.data.Random(seed) -> Random", "A small deterministic generator: r:next() in [0, 1),\n" ..
  "r:int(n) in [0, n), r:normal().", example = "local r = tk.data.Random(1)\nr:int(10)" }
D "tk.data.zipf_sampler" { "tk.data.zipf_sampler(n, s, rng) -> fn", "A sampler of ranks 0..n-1 with P(r) ~ 1 / (r + 1)^s.",
  example = "local f = tk.data.zipf_sampler(100, 1.1, tk.data.Random(1))\nf()" }
D "tk.data.synthetic" { "tk.data.synthetic(schema, n [, opts]) -> dataset, items",
  "n interactions with a planted structure: users and items belong to latent clusters and a user\n" ..
  "picks an item of its own cluster with probability affinity (popular items more often). Other\n" ..
  "features derive from the user or item. items: one row per item id with its features.",
  options = {
    { "seed", "1", "random seed" },
    { "clusters", "20", "latent clusters" },
    { "affinity", "0.9", "probability of an item from the user's cluster" },
    { "zipf", "1.1", "popularity exponent within a cluster" },
  }, example = "local data, items = tk.data.synthetic(schema, 1000, { seed = 1, clusters = 5 })" }

D "tk.optim.SGD" { "tk.optim.SGD([opts]) -> optimizer", "Stochastic gradient descent.",
  options = { { "learning_rate", "0.01", "step size" }, { "momentum", "0", "momentum factor" },
    { "nesterov", "false", "Nesterov momentum" }, { "weight_decay", "0", "L2 decay added to the gradient" },
    { "lazy", "false", "true: update only the rows of embedding tables a batch touched (as Adam)" } },
  merlin = "tf.keras.optimizers.SGD", example = "tk.optim.SGD { learning_rate = 0.1, momentum = 0.9 }" }
D "tk.optim.Adam" { "tk.optim.Adam([opts]) -> optimizer", "Adam.",
  options = { { "learning_rate", "0.001", "step size" }, { "beta_1", "0.9", "first-moment decay" },
    { "beta_2", "0.999", "second-moment decay" }, { "epsilon", "1e-7", "denominator guard" },
    { "lazy", "false", "false: every row of an embedding table moves every step, as Keras' and\n" ..
      "PyTorch's Adam do (a row's skipped steps are applied when it is next read); true: only\n" ..
      "the rows a batch touched, as TF Addons' LazyAdam" } },
  merlin = "tf.keras.optimizers.Adam", example = "tk.optim.Adam { learning_rate = 1e-2 }" }
D "tk.optim.AdamW" { "tk.optim.AdamW([opts]) -> optimizer", "Adam with decoupled weight decay.",
  options = { { "learning_rate", "0.001", "step size" }, { "weight_decay", "0.004", "decoupled decay" },
    { "beta_1, beta_2, epsilon, lazy", "as Adam", "" } },
  merlin = "tf.keras.optimizers.AdamW", example = "tk.optim.AdamW { weight_decay = 0.01 }" }
D "tk.optim.Adagrad" { "tk.optim.Adagrad([opts]) -> optimizer", "Adagrad.",
  options = { { "learning_rate", "0.001", "step size" }, { "initial_accumulator_value", "0.1", "start of the sums" },
    { "epsilon", "1e-7", "denominator guard" }, { "lazy", "false", "accepted; the same updates either way" } },
  merlin = "tf.keras.optimizers.Adagrad", example = "tk.optim.Adagrad { learning_rate = 0.05 }" }
D "tk.optim.default_lazy" { "tk.optim.default_lazy() -> boolean",
  "The lazy option optimizers take when it is not given (false: dense semantics).",
  example = "tk.optim.default_lazy()" }
D "tk.optim.clip_grad_norm" { "tk.optim.clip_grad_norm(max_norm [, ctx]) -> norm",
  "Scales the gradients of ctx (default: the current context) so their global norm is at most\nmax_norm; returns the norm before clipping.",
  merlin = "tf.clip_by_global_norm", example = "tk.optim.clip_grad_norm(1.0)" }
D "tk.optim.schedules.constant" { "tk.optim.schedules.constant() -> schedule", "The base learning rate throughout.",
  merlin = "a constant learning_rate", example = "m:compile { optimizer = tk.optim.Adam(), schedule = tk.optim.schedules.constant() }" }
D "tk.optim.schedules.warmup" { "tk.optim.schedules.warmup(steps [, after = constant()]) -> schedule",
  "Linear warm-up from 0 to the base rate over steps, then `after` counted from the warm-up's end.",
  example = "tk.optim.schedules.warmup(100, tk.optim.schedules.cosine_decay { decay_steps = 1000 })" }
D "tk.optim.schedules.exponential_decay" { "tk.optim.schedules.exponential_decay{decay_steps =, decay_rate =, staircase = false} -> schedule",
  "base * rate ^ (step / decay_steps), the exponent floored with staircase.",
  merlin = "tf.keras.optimizers.schedules.ExponentialDecay",
  example = "tk.optim.schedules.exponential_decay { decay_steps = 100, decay_rate = 0.9 }" }
D "tk.optim.schedules.cosine_decay" { "tk.optim.schedules.cosine_decay{decay_steps =, alpha = 0} -> schedule",
  "Cosine decay from the base rate to base * alpha over decay_steps, then flat.",
  merlin = "tf.keras.optimizers.schedules.CosineDecay",
  example = "tk.optim.schedules.cosine_decay { decay_steps = 1000 }" }

for _, m in ipairs { { "RecallAt", "Recall: the share of the relevant items in the top k", "mm.RecallAt", "recall" },
  { "PrecisionAt", "Precision: relevant items in the top k, divided by k", "mm.PrecisionAt", "precision" },
  { "MRRAt", "Mean reciprocal rank of the first relevant item in the top k (0 when none)", "mm.MRRAt", "mrr" },
  { "AvgPrecisionAt", "Average precision at k", "mm.AvgPrecisionAt", "map" },
  { "NDCGAt", "Normalised discounted cumulative gain at k (binary relevance)", "mm.NDCGAt", "ndcg" } } do
  D("tk.metrics." .. m[1]) { ("tk.metrics.%s(k) -> metric"):format(m[1]), m[2] .. "; its name is\n" ..
    m[4] .. "_at_<k> in evaluate's results.",
    merlin = m[3], example = ("m:compile { metrics = { tk.metrics.%s(10) } }"):format(m[1]) }
end
D "tk.metrics.average" { "tk.metrics.average(metrics, ranked, relevant) -> {name = value}",
  "The mean of each metric over queries: ranked[q] is a Lua array of ids, relevant[q] a set.",
  example = "tk.metrics.average({ tk.metrics.RecallAt(2) }, { { 1, 2 } }, { { [2] = true } })" }
D "tk.metrics.is_metric" { "tk.metrics.is_metric(x) -> boolean", "Whether x is a metric.",
  example = "tk.metrics.is_metric(tk.metrics.RecallAt(10))" }

D "tk.callbacks.EarlyStopping" { "tk.callbacks.EarlyStopping([opts]) -> callback",
  "Stops fit when the monitored log has not improved for patience epochs.",
  options = { { "monitor", "\"val_recall_at_10\"", "the epoch log to watch" }, { "mode", "\"max\"", "\"max\" or \"min\"" },
    { "patience", "2", "epochs without improvement before stopping" }, { "min_delta", "0", "smallest improvement" },
    { "restore_best_weights", "true", "put back the best epoch's weights at the end" } },
  merlin = "tf.keras.callbacks.EarlyStopping",
  example = "m:fit(data, { epochs = 20, validation_data = valid, callbacks = { tk.callbacks.EarlyStopping() } })" }
D "tk.callbacks.ModelCheckpoint" { "tk.callbacks.ModelCheckpoint{dir = \"ckpt/epoch-%d\"} -> callback",
  "Saves the model after every epoch (the epoch number replaces %d in dir).",
  merlin = "tf.keras.callbacks.ModelCheckpoint", example = "tk.callbacks.ModelCheckpoint { dir = \"ckpt/e%d\" }" }

D "tk.json.encode" { "tk.json.encode(value [, pretty = false]) -> text", "JSON text of a Lua value (cJSON).",
  example = "tk.json.encode({ a = 1 })" }
D "tk.json.decode" { "tk.json.decode(text) -> value", "A Lua value from JSON text (null is tk.json.null).",
  example = "tk.json.decode('{\"a\": [1, 2]}')" }
D "tk.json.array" { "tk.json.array(t) -> t", "Marks a table as an array (an empty one encodes as []).",
  example = "tk.json.encode(tk.json.array {})" }

D "tk.Model" { "tk.Model.load(dir [, {items = path, batch_size = 4096}]) -> Model",
  "A saved model for serving: model:recommend(users, {k =}) answers top-k queries.",
  merlin = "the exported query tower + item index", example = "local sm = tk.Model.load(\"model/\")" }
D "tk.ModelSlot" { "tk.ModelSlot(model) -> slot", "A slot whose current model is model; slot:reload(dir) swaps it\n" ..
  "atomically for servers.", example = "local slot = tk.ModelSlot(tk.Model.load(\"model/\"))" }
D "tk.serving.info" { "tk.serving.info(model) -> info",
  "The description of a model's query features ({features =, by_name =, known =}); cache it per model.",
  example = "tk.serving.info(sm)" }
D "tk.serving.query" { "tk.serving.query(model_or_info, users) -> batch or nil, message",
  "A batch of tensors from one user's features ({user_id = 7, tags = {1, 5}}) or an array of them.",
  example = "tk.serving.query(sm, { user_id = 4 })" }
