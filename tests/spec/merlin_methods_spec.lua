local tk = require "towerkit"
local Tags = tk.Tags

local MOVIELENS = "tests/data/merlin-schema-movielens-100k.json"

local function ids(values) return tk.tensor(values, "int64") end

-- The message of the error fn(...) raises (fails the test when it raises none).
local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

local function assert_error(expected, fn, ...)
  local err = error_of(fn, ...)
  assert(err:find(expected, 1, true), ("expected an error containing\n  %s\ngot\n  %s"):format(expected, err))
end

local function toy_schema()
  return tk.Schema {
    tk.ColumnSchema("user_id", { tags = { Tags.USER_ID, Tags.CATEGORICAL }, int_domain = { max = 9 } }),
    tk.ColumnSchema("user_age", { tags = { Tags.USER, Tags.CONTINUOUS } }),
    tk.ColumnSchema("item_id", { tags = { Tags.ITEM_ID, Tags.CATEGORICAL }, int_domain = { max = 11 } }),
    tk.ColumnSchema("item_genres", { tags = { Tags.ITEM, Tags.CATEGORICAL, Tags.LIST },
      int_domain = { max = 5 }, value_count = { min = 0, max = 3 } }),
    tk.ColumnSchema("click", { tags = { Tags.TARGET, Tags.BINARY_CLASSIFICATION } }),
  }
end

local function toy_batch()
  return {
    user_id = ids { 1, 4, 9 },
    user_age = tk.tensor { 0.5, -1.0, 0.25 },
    item_id = ids { 11, 0, 3 },
    item_genres__values = ids { 0, 2, 5, 5 },
    item_genres__offsets = ids { 0, 3, 3, 4 },
  }
end

local function two_tower(opts)
  opts = opts or {}
  return tk.TwoTowerBlock(toy_schema(), tk.MLPBlock({ 4, 2 }, { normalization = opts.normalization }), {
    embedding_options = { embedding_dim_default = 3, embeddings_l2_reg = opts.l2 },
    post = opts.post,
  })
end

-- Rows of a tensor compared with expected values within float32 rounding.
local function assert_rows(expected, t)
  local got = t:totable()
  assert.equal(#expected, #got)
  for i, row in ipairs(expected) do
    assert.equal(#row, #got[i])
    for j, v in ipairs(row) do assert.near(v, got[i][j], 1e-6) end
  end
end

local function names_of(blocks)
  local out = {}
  for i, b in ipairs(blocks) do out[i] = b:name() end
  return out
end

local function sorted(keys_of)
  local out = {}
  for k in pairs(keys_of) do out[#out + 1] = k end
  table.sort(out)
  return out
end

describe("merlin methods: schemas", function()
  before_each(function() tk.reset() end)

  it("REQUIRES_SCHEMA is true for blocks built from a schema and for marked blocks", function()
    assert.is_true(two_tower():REQUIRES_SCHEMA())
    assert.is_true(tk.InputBlock(toy_schema()):REQUIRES_SCHEMA())
    local d = tk.Dense(2)
    assert.is_false(d:REQUIRES_SCHEMA())
    assert.equal(d, tk.requires_schema(d))
    assert.is_true(d:REQUIRES_SCHEMA())
    tk.requires_schema(d, false)
    assert.is_false(d:REQUIRES_SCHEMA())
    assert_error("requires_schema: block must be a block, got string", tk.requires_schema, "dense")
    assert_error("requires_schema: flag must be a boolean, got number", tk.requires_schema, d, 1)
  end)

  it("schema and has_schema read the meta, inherited from the first child or all branches", function()
    local tt = two_tower()
    assert.is_true(tt:has_schema())
    assert.equal(toy_schema(), tt:schema())
    -- the query branch is SequentialBlock{InputBlock, tower}: the input block's schema
    assert.same({ "user_id", "user_age" }, tt:query_block():schema():column_names())
    assert.same({ "item_id", "item_genres" }, tt:item_block():schema():column_names())
    -- a parallel block without its own schema: the union of its branches'
    local par = tk.ParallelBlock { q = tt:query_block(), i = tt:item_block() }
    assert.same({ "item_id", "item_genres", "user_id", "user_age" }, par:schema():column_names())
    local mixed = tk.ParallelBlock { q = tt:query_block(), d = tk.Dense(2) }
    assert.is_false(mixed:has_schema())
    assert.is_false(tk.Dense(2):has_schema())
    assert_error("schema: dense 'dense' does not have a schema (set one with set_schema)", function()
      tk.Dense(2):schema()
    end)
    assert_error("schema: MLPBlock 'mlp' does not have a schema", function() tk.MLPBlock { 2 }:schema() end)
  end)

  it("check_schema raises when a block that requires a schema has none", function()
    local tt = two_tower()
    assert.equal(tt, tt:check_schema())
    local d = tk.requires_schema(tk.Dense(2, { name = "d" }))
    assert_error("check_schema: dense 'd' requires a schema", function() d:check_schema() end)
    assert.equal(d, d:check_schema(toy_schema()))
    assert_error("check_schema: schema must be a Schema, got string", function() d:check_schema("schema.json") end)
  end)

  it("set_schema stores the schema in the meta, keeps an existing one unless told, and removes it", function()
    local d = tk.Dense(2)
    local users = toy_schema():select_by_tag(Tags.USER)
    local items = toy_schema():select_by_tag(Tags.ITEM)
    assert.equal(d, d:set_schema(users))
    assert.equal(users, d:schema())
    -- it travels with configs
    assert.equal(users, tk.from_config(d:get_config()):schema())
    d:set_schema(items) -- kept, as in Merlin
    assert.equal(users, d:schema())
    d:set_schema(items, { overwrite = true })
    assert.equal(items, d:schema())
    d:set_schema(nil, { overwrite = true })
    assert.is_false(d:has_schema())
    assert.is_nil(d:meta_json())
    d:set_schema() -- nothing to do
    assert.is_false(d:has_schema())
    -- other meta fields are kept
    local mlp = tk.MLPBlock { 2 }
    mlp:set_schema(users)
    assert.equal("MLPBlock", tk.get_meta(mlp).class)

    assert_error("set_schema: schema must be a Schema, got table", function() d:set_schema({}) end)
    assert_error("set_schema: unknown option 'overwrites'; known: overwrite", function()
      d:set_schema(users, { overwrites = true })
    end)
    local tt = two_tower()
    assert_error("set_schema: TwoTowerBlock 'two_tower' requires a schema; it cannot be removed", function()
      tt:set_schema(nil, { overwrite = true })
    end)
    local marked = tk.requires_schema(tk.Dense(2, { name = "m" }))
    assert_error("set_schema: dense 'm' requires a schema", function() marked:set_schema() end)
  end)

  it("get_item_ids_from_inputs returns the item id column of the schema", function()
    local tt = two_tower()
    local batch = toy_batch()
    assert.same({ 11, 0, 3 }, tt:get_item_ids_from_inputs(batch):totable())
    local movielens = tk.TwoTowerBlock(tk.Schema.read_json(MOVIELENS), tk.MLPBlock { 2 })
    assert.same({ 5, 7 }, movielens:get_item_ids_from_inputs({ movieId = ids { 5, 7 } }):totable())
    -- a ragged item id column gives its values and offsets
    local ragged = tk.Dense(2)
    ragged:set_schema(tk.Schema { tk.ColumnSchema("items", { tags = { Tags.ITEM_ID, Tags.CATEGORICAL },
      int_domain = { max = 9 }, value_count = { min = 1, max = 4 } }) })
    local values, offsets = ragged:get_item_ids_from_inputs({ items__values = ids { 1, 2 }, items__offsets = ids { 0, 1, 2 } })
    assert.same({ 1, 2 }, values:totable())
    assert.same({ 0, 1, 2 }, offsets:totable())

    assert_error("get_item_ids_from_inputs: inputs must be a table of feature name -> tensor, got a tensor",
      function() tt:get_item_ids_from_inputs(ids { 1 }) end)
    assert_error("get_item_ids_from_inputs: dense 'dense' does not have a schema", function()
      tk.Dense(2):get_item_ids_from_inputs(batch)
    end)
    assert_error("get_item_ids_from_inputs: the schema of InputBlock 'embeddings' has no column with the item_id tag (columns: user_id, user_age)",
      function() tk.InputBlock(toy_schema():select_by_tag(Tags.USER)):get_item_ids_from_inputs(batch) end)
    assert_error("get_item_ids_from_inputs: the inputs have no 'item_id' column", function()
      tt:get_item_ids_from_inputs({ user_id = ids { 1 } })
    end)
  end)
end)

describe("merlin methods: structure and weights", function()
  before_each(function() tk.reset() end)

  it("layers lists the children, submodules every block below once", function()
    local a = tk.Dense(2, { name = "a" })
    local seq = tk.SequentialBlock({ a, tk.Dense(3, { name = "b" }) }, { name = "s" })
    assert.same({ "a", "b" }, names_of(seq:layers()))
    assert.same({}, a:layers())
    local shared = tk.ParallelBlock({ x = seq, y = seq }, { name = "p", post = "l2-norm" })
    shared:set_pre(tk.Filter({ "f" }, { name = "keep" }))
    -- pre, then the children (the shared sequential once), then post
    assert.same({ "keep", "s", "a", "b", "l2_norm" }, names_of(shared:submodules()))
    assert.same({}, a:submodules())
  end)

  it("weights, variables, trainable and non-trainable weights follow named_parameters", function()
    local tt = two_tower { normalization = "batch_norm" }
    tt:build()
    local named = tt:named_parameters()
    local w = tt:weights()
    assert.equal(#named, #w)
    for i, p in ipairs(named) do assert.same(p[2]:shape(), w[i]:shape()) end
    -- the weights are the live parameters, not copies
    w[#w]:fill(0.5)
    assert.same(w[#w]:totable(), tt:get_weights()[#w]:totable()) -- the same tensor
    assert.equal(#w, #tt:variables())
    local trainable, frozen = tt:trainable_variables(), tt:non_trainable_weights()
    assert.equal(#tt:trainable_weights(), #trainable)
    assert.equal(8, #frozen) -- moving mean and variance of 2 batch norms in each tower
    assert.equal(#w, #trainable + #frozen)
    assert.equal(#frozen, #tt:non_trainable_variables())
    assert.is_true(tt:trainable())
    assert.is_true(tk.Activation("relu"):trainable()) -- no parameters
  end)

  it("losses returns the regularisation loss a context collected", function()
    local tt = two_tower { l2 = 0.1 }
    local ctx = tk.Context()
    ctx:train(true)
    tt:forward(toy_batch(), ctx)
    local losses = tt:losses(ctx)
    assert.equal(1, #losses)
    assert.truthy(losses[1]:item() > 0)
    assert.same({}, tt:losses(tk.Context()))
    assert_error("losses: ctx must be a tk.Context, got string", function() tt:losses("ctx") end)
  end)

  it("dtype, variable_dtype and compute_dtype are float32", function()
    local tt = two_tower()
    assert.equal("float32", tt:dtype())
    assert.equal("float32", tt:variable_dtype())
    assert.equal("float32", tt:compute_dtype())
    assert.equal("float32", tk.Activation("relu"):dtype())
  end)

  it("registry is the table of named blocks", function()
    assert.equal(tk.registry, tk.Dense(2):registry())
    assert.equal("l2norm", tk.Dense(2):registry()["l2-norm"]():kind())
  end)

  it("is_input and is_tabular describe the block", function()
    local tt = two_tower()
    assert.is_false(tt:is_input())
    assert.is_true(tt:query_block():layers()[1]:is_input())
    assert.is_true(tt:is_tabular())
    assert.is_true(two_tower({ post = "l2-norm" }):is_tabular()) -- l2-norm keeps the table
    assert.is_false(tt:query_block():is_tabular())
    assert.is_true(tk.InputBlock(toy_schema()):is_tabular())
    assert.is_false(tk.ParallelBlock({ a = tk.Dense(2) }, { aggregation = "concat" }):is_tabular())
    assert.is_false(tk.Dense(2):is_tabular())
    assert.is_false(tk.Activation("relu"):is_tabular())
    assert.is_true(tk.Dense(2):as_tabular("x"):is_tabular())
    assert.is_false(tk.Block.from_features({ "a" }, { aggregation = "concat" }):is_tabular())
  end)
end)

describe("merlin methods: parallel blocks", function()
  before_each(function() tk.reset() end)

  it("parallel_dict, parallel_layers and parallel_values give the branches", function()
    local tt = two_tower()
    local dict = tt:parallel_dict()
    assert.same({ "item", "query" }, sorted(dict))
    assert.is_true(dict.query == tt:query_block())
    assert.same({ "item", "query" }, sorted(tt:parallel_layers()))
    assert.same({ "item", "query" }, names_of(tt:parallel_values()))
    for _, m in ipairs { "parallel_dict", "parallel_layers", "parallel_values" } do
      assert_error(m .. ": block 'mlp' is a sequential block, not a parallel block", function()
        local mlp = tk.MLPBlock { 2 }
        mlp[m](mlp)
      end)
    end
  end)

  it("add_branch returns the block with a branch added or replaced, sharing the others", function()
    local tt = two_tower { post = "l2-norm" }
    local more = tt:add_branch("age", tk.Filter({ "user_age" }, { name = "age" }))
    assert.equal(2, #tt:children()) -- unchanged
    assert.same({ "item", "query", "age" }, names_of(more:parallel_values()))
    assert.equal("two_tower", more:name())
    assert.equal("l2norm", more:post():kind())
    assert.equal("TwoTowerBlock", tk.get_meta(more).class)
    assert.is_true(more:parallel_dict().query == tt:query_block()) -- shared
    local out = more(toy_batch())
    assert.same({ 3, 2 }, out.query:shape())
    assert.same({ 3 }, out.user_age:shape()) -- a filter passes the column as it is
    -- an existing name is replaced in place (Merlin's dict assignment)
    local replaced = tt:add_branch("item", tk.Filter({ "item_id" }))
    assert.same({ "item", "query" }, sorted(replaced:parallel_dict()))
    assert.equal(2, #replaced:parallel_values())
    assert.equal("filter", replaced:parallel_dict().item:kind())
    local agg = tk.ParallelBlock({ a = tk.Dense(2, { input_dim = 3 }) }, { aggregation = "concat" })
      :add_branch("b", tk.Dense(1, { input_dim = 3 }))
    assert.equal("concat", agg:aggregation())
    assert.same({ 4, 3 }, agg(tk.ones { 4, 3 }):shape())

    assert_error("add_branch: name must be a non-empty string, got number", function() tt:add_branch(1, tk.Dense(2)) end)
    assert_error("add_branch: name must be a non-empty string, got string", function() tt:add_branch("", tk.Dense(2)) end)
    assert_error("add_branch: block is required", function() tt:add_branch("x") end)
    assert_error("add_branch: block: a block, a function or a table of blocks expected, got number", function()
      tt:add_branch("x", 5)
    end)
    assert_error("add_branch: block 'dense' is a dense block, not a parallel block", function()
      tk.Dense(2):add_branch("x", tk.Dense(2))
    end)
  end)

  it("apply_to_branch connects blocks after one branch", function()
    local tt = two_tower()
    local applied = tt:apply_to_branch("query", tk.Dense(5, { name = "head" }))
    local out = applied(toy_batch())
    assert.same({ 3, 5 }, out.query:shape())
    assert.same({ 3, 2 }, out.item:shape())
    assert.same({ 3, 2 }, tt(toy_batch()).query:shape()) -- unchanged
    local named = tt:apply_to_branch("item", tk.Dense(1), { block_name = "item_head" })
    assert.equal("item_head", named:parallel_dict().item:name())

    assert_error("apply_to_branch: parallel block 'two_tower' has no branch 'querry' (branches: item, query)",
      function() tt:apply_to_branch("querry", tk.Dense(2)) end)
    assert_error("apply_to_branch: at least one block expected", function() tt:apply_to_branch("query") end)
    assert_error("apply_to_branch: branch_name must be a string, got number", function()
      tt:apply_to_branch(1, tk.Dense(2))
    end)
    assert_error("apply_to_branch: connect: a block, a function or a table of blocks expected, got number",
      function() tt:apply_to_branch("query", 5) end)
    assert_error("apply_to_branch: block 'mlp' is a sequential block, not a parallel block", function()
      tk.MLPBlock { 2 }:apply_to_branch("query", tk.Dense(2))
    end)
  end)
end)

describe("merlin methods: calls", function()
  before_each(function() tk.reset() end)

  it("apply_to_all calls the block on every tensor, optionally of some columns", function()
    local d = tk.Dense(3, { input_dim = 2, name = "d" })
    local out = d:apply_to_all({ a = tk.ones { 2, 2 }, b = { c = tk.ones { 1, 2 } } })
    assert.same({ 2, 3 }, out.a:shape())
    assert.same({ 1, 3 }, out.b.c:shape())
    assert.same(d(tk.ones { 2, 2 }):totable(), out.a:totable()) -- same block, input and shape: bitwise
    assert.same({ 4, 3 }, d:apply_to_all(tk.ones { 4, 2 }):shape())
    local only = d:apply_to_all({ a = tk.ones { 2, 2 }, b = tk.ones { 5, 2 } }, { "a" })
    assert.same({ "a" }, sorted(only))
    -- a column name keeps its ragged parts; a Schema works as the list
    local identity = tk.LuaBlock(function(x) return x end)
    local ragged = identity:apply_to_all(toy_batch(), "item_genres")
    assert.same({ "item_genres__offsets", "item_genres__values" }, sorted(ragged))
    local users = identity:apply_to_all(toy_batch(), toy_schema():select_by_tag(Tags.USER))
    assert.same({ "user_age", "user_id" }, sorted(users))

    assert_error("apply_to_all: inputs must be a tensor or a table of tensors, got number", function() d:apply_to_all(5) end)
    assert_error("apply_to_all: inputs['a'] must be a tensor or a table of tensors, got string", function()
      d:apply_to_all({ a = "x" })
    end)
    assert_error("apply_to_all: columns_to_filter must be a feature name, a list of names or a Schema, got number",
      function() d:apply_to_all({ a = tk.ones { 1, 2 } }, 5) end)
    assert_error("apply_to_all: columns_to_filter[1] must be a feature name (string), got number", function()
      d:apply_to_all({ a = tk.ones { 1, 2 } }, { 1 })
    end)
  end)

  it("pre_call applies the given transformations or the block's pre", function()
    local b = tk.Block.from_features({ "a" })
    local out = b:pre_call({ a = tk.ones { 2 }, b = tk.ones { 2 } })
    assert.same({ "a" }, sorted(out))
    local x = { a = tk.full({ 1, 2 }, 3) }
    assert.equal(x, tk.Dense(2):pre_call(x)) -- no pre: the inputs
    local normed = tk.Dense(2):pre_call({ a = tk.tensor { { 3, 4 } } }, "l2-norm")
    assert_rows({ { 0.6, 0.8 } }, normed.a)
    assert_error("pre_call: inputs must be a tensor or a table of tensors, got nil", function() b:pre_call() end)
    assert_error("unknown block name 'l3-norm'", function() b:pre_call(x, "l3-norm") end)
  end)

  it("post_call merges, applies post (or the transformations) and the aggregation", function()
    local tt = two_tower { post = "l2-norm" }
    local raw = { query = tk.tensor { { 3, 4 } }, item = tk.tensor { { 0, 2 } } }
    local out = tt:post_call(raw)
    assert_rows({ { 0.6, 0.8 } }, out.query)
    assert_rows({ { 0, 1 } }, out.item)
    local cat = tt:post_call(raw, nil, nil, "concat")
    assert_rows({ { 0, 1, 0.6, 0.8 } }, cat) -- concat in sorted key order
    local relu = tt:post_call({ query = tk.tensor { { -1, 2 } } }, "relu")
    assert.same({ { 0, 2 } }, relu.query:totable())
    local extra = tk.LuaBlock(function(x) return { extra = x.query:scale(2) } end)
    local merged = tt:post_call(raw, { transformations = "linear", merge_with = { extra, { more = tk.ones { 1, 1 } } } })
    assert.same({ "extra", "item", "more", "query" }, sorted(merged))
    assert.same({ { 6, 8 } }, merged.extra:totable())
    assert.same({ { 3, 4 } }, merged.query:totable())
    assert.same({ "item", "query" }, sorted(raw)) -- the inputs are not changed

    assert_error("post_call: inputs must be a tensor or a table of tensors, got string", function() tt:post_call("x") end)
    assert_error("post_call: aggregation must be a name such as \"concat\", got number", function()
      tt:post_call(raw, nil, nil, 1)
    end)
    assert_error("post_call: merge_with[1] must give a table of tensors, got string", function()
      tt:post_call(raw, nil, { "x" })
    end)
    assert_error("post_call: merge_with needs tabular inputs, got a tensor", function()
      tt:post_call(tk.ones { 1 }, nil, extra)
    end)
  end)

  it("prepare runs a block, post and aggregation before the block", function()
    local d = tk.Dense(2, { input_dim = 3, name = "d" })
    local prepared = d:prepare(tk.Filter({ "a", "b" }), nil, "concat")
    local x = { a = tk.ones { 4, 2 }, b = tk.ones { 4, 1 }, c = tk.ones { 4, 7 } }
    assert.same({ 4, 2 }, prepared(x):shape())
    assert.equal("sequential", prepared:kind())
    local same = d:prepare { block = tk.Filter({ "a", "b" }), aggregation = "concat" }
    assert.same(prepared(x):totable(), same(x):totable()) -- the same blocks and shapes: bitwise
    local scaled = tk.Dense(2, { input_dim = 2 }):prepare(nil, "l2-norm")
    assert.same({ 1, 2 }, scaled(tk.tensor { { 3, 4 } }):shape())
    assert_error("prepare: block: a block, a function or a table of blocks expected, got number", function() d:prepare(5) end)
    assert_error("prepare: aggregation must be a name such as \"concat\", got number", function() d:prepare(nil, nil, 5) end)
    assert_error("unknown block name 'l3-norm'", function() d:prepare(nil, "l3-norm") end)
  end)

  it("build creates lazily sized weights from shapes or from the schema", function()
    local d = tk.Dense(3)
    assert.is_false(d:is_built())
    assert.equal(d, d:build({ 2, 5 }))
    assert.is_true(d:is_built())
    assert.equal(5 * 3 + 3, d:count_params())
    local tt = two_tower()
    assert.is_true(tt:is_built()) -- a TwoTowerBlock builds itself from its schema when made
    tt:build() -- shapes from the schema (again: nothing changes)
    assert.is_true(tt:is_built())
    local shapes = {}
    for _, p in ipairs(tt:named_parameters()) do shapes[p[1]] = p[2]:shape() end
    assert.same({ 3 + 1, 4 }, shapes["query/mlp/dense_0/kernel"]) -- user_id (dim 3) and user_age
    local emb = tk.Dense(2, { name = "e" })
    emb:build({ a = { 4, 2 }, b = { 4, 1 } })
    assert.equal(3 * 2 + 2, emb:count_params())

    assert_error("build: input_shapes is required (dense 'dense' has no schema to take them from)", function()
      tk.Dense(3):build()
    end)
    assert_error("build: input_shapes must be a shape such as {B, D} or a table of feature name -> shape, got string",
      function() tk.Dense(3):build("2x5") end)
    assert_error("build: input_shapes[2] must be a non-negative integer, got -1", function() tk.Dense(3):build({ 2, -1 }) end)
    assert_error("build: input_shapes['a'] must be a shape such as {B, D}, {{B}, \"int64\"} or a tensor, got string",
      function() tk.Dense(3):build({ a = "x" }) end)
    assert_error("build: input_shapes[2] must be a dtype name such as \"int64\", got number", function()
      tk.Dense(3):build({ { 2 }, 5 })
    end)
    assert_error("build: input_shapes is empty", function() tk.Dense(3):build({}) end)
    assert_error("build: dense: input has 5 features, expected 2", function()
      tk.Dense(3, { input_dim = 2 }):build({ 2, 5 })
    end)
  end)

  it("compute_call_output_shape leaves out pre, post and aggregation", function()
    local par = tk.ParallelBlock({ l = tk.Dense(2), r = tk.Dense(3) }, { aggregation = "concat" })
    assert.same({ 4, 5 }, par:compute_output_shape({ 4, 6 }))
    assert.same({ l = { 4, 2 }, r = { 4, 3 } }, par:compute_call_output_shape({ 4, 6 }))
    local f = tk.Filter({ "a", "b" })
    f:set_aggregation("concat")
    assert.same({ a = { 2, 3 }, b = { 2, 1 } }, f:compute_call_output_shape({ a = { 2, 3 }, b = { 2, 1 } }))
    assert.equal("concat", f:aggregation()) -- the block is unchanged
    local seq = tk.SequentialBlock({ tk.Dense(2) }, { post = tk.AsTabular("out") })
    assert.same({ 1, 2 }, seq:compute_call_output_shape({ 1, 4 }))
    assert.same({ query = { 1, 2 }, item = { 1, 2 } }, two_tower({ post = "l2-norm" }):compute_call_output_shape())
    assert_error("compute_call_output_shape: input_shapes must be a shape such as {B, D}", function()
      par:compute_call_output_shape(true)
    end)
  end)

  it("connect_debug_block adds an identity block that reports the shapes", function()
    local seen = {}
    local hook = function(value, text) seen[#seen + 1] = text end
    local d = tk.Dense(2, { input_dim = 3, name = "d" })
    local after = d:connect_debug_block({ hook = hook })
    assert.same(d(tk.ones { 4, 3 }):totable(), after(tk.ones { 4, 3 }):totable()) -- identity after d: bitwise
    assert.same({ "float32 [4, 2]" }, seen)
    local before = d:connect_debug_block({ append = false, hook = hook, name = "dbg" })
    assert.same({ "dbg", "d" }, names_of(before:layers()))
    before({ a = tk.ones { 4, 3 } }, nil)
    assert.equal("{a = [4, 3]}", seen[2])
    assert.same({ "d", "debug" }, names_of(d:connect_debug_block(true):layers()))
    local printed = tk.Debug { name = "look" }
    assert.equal("callback", printed:kind())

    assert_error("connect_debug_block: append must be a boolean, got string", function() d:connect_debug_block("yes") end)
    assert_error("connect_debug_block: unknown option 'hooks'; known: append, hook, name", function()
      d:connect_debug_block({ hooks = hook })
    end)
    assert_error("Debug: hook must be a function, got number", function() tk.Debug { hook = 1 } end)
    assert_error("Debug: name must be a string, got number", function() tk.Debug { name = 1 } end)
  end)
end)

describe("merlin methods: class-level helpers", function()
  before_each(function() tk.reset() end)

  it("from_features keeps the features, then applies pre, post and aggregation", function()
    local b = tk.Block.from_features({ "a", "b" }, { aggregation = "concat", name = "ab" })
    assert.equal("ab", b:name())
    assert.equal("TabularBlock", tk.get_meta(b).class)
    local x = { a = tk.ones { 2, 2 }, b = tk.ones { 2, 1 }, c = tk.ones { 2, 5 } }
    assert.same({ 2, 3 }, b(x):shape())
    local post = tk.Block.from_features("a", { pre = "relu", post = "l2-norm" })
    assert_rows({ { 0.6, 0.8 } }, post({ a = tk.tensor { { 3, 4 } }, b = tk.ones { 1, 1 } }).a)
    local neg = tk.Block.from_features("a", { pre = "relu" })({ a = tk.tensor { { -3, 4 } } })
    assert.same({ { 0, 4 } }, neg.a:totable())
    -- a Schema as the features; called with a colon the block is ignored
    local s = tk.Block.from_features(toy_schema():select_by_tag(Tags.USER), { schema = toy_schema() })
    assert.same({ "user_age", "user_id" }, sorted(s(toy_batch())))
    assert.equal(toy_schema(), s:schema())
    assert.equal("tabular_block", tk.Dense(2):from_features({ "a" }):name())
    -- the block restores from its config
    assert.same({ 2, 3 }, tk.from_config(b:get_config())(x):shape())

    assert_error("from_features: features must be a feature name, a list of names or a Schema, got number", function()
      tk.Block.from_features(5)
    end)
    assert_error("from_features: features[2] must be a feature name (string), got boolean", function()
      tk.Block.from_features({ "a", true })
    end)
    assert_error("from_features: unknown option 'agg'; known: aggregation, name, post, pre, schema", function()
      tk.Block.from_features({ "a" }, { agg = "concat" })
    end)
    assert_error("from_features: schema must be a Schema, got table", function()
      tk.Block.from_features({ "a" }, { schema = {} })
    end)
    assert_error("from_features: aggregation must be a name such as \"concat\", got number", function()
      tk.Block.from_features({ "a" }, { aggregation = 1 })
    end)
    assert_error("from_features: name must be a string, got number", function()
      tk.Block.from_features({ "a" }, { name = 1 })
    end)
  end)

  it("from_schema selects columns by tags and stores the schema", function()
    local schema = tk.Schema.read_json(MOVIELENS)
    local users = tk.Block.from_schema(schema, Tags.USER)
    assert.same({ "userId", "gender", "zip_code", "age" }, users:schema():column_names())
    local out = users({ userId = ids { 1 }, movieId = ids { 2 }, age = ids { 3 } })
    assert.same({ "age", "userId" }, sorted(out))
    local both = tk.Block.from_schema(schema, { Tags.USER_ID, Tags.ITEM_ID }, true, { name = "ids", aggregation = "concat" })
    assert.equal("ids", both:name())
    assert.same({ "movieId", "userId" }, both:schema():column_names())
    local opts_form = tk.Block.from_schema(schema, { tags = Tags.ITEM, name = "items" })
    assert.equal("items", opts_form:name())
    assert.same({ "movieId", "genres" }, opts_form:schema():column_names())
    assert.equal(11, #tk.Block.from_schema(schema):schema())
    assert.is_nil(tk.Block.from_schema(schema, Tags.SESSION))
    assert.is_nil(tk.Block.from_schema(tk.Schema {}))

    assert_error("from_schema: No features with tags: session found", function()
      tk.Block.from_schema(schema, Tags.SESSION, false)
    end)
    assert_error("from_schema: No features with tags: session, context found", function()
      tk.Block.from_schema(schema, { tags = { Tags.SESSION, Tags.CONTEXT }, allow_none = false })
    end)
    assert_error("from_schema: schema must be a Schema, got string", function() tk.Block.from_schema(MOVIELENS) end)
    assert_error("from_schema: allow_none must be a boolean, got string", function()
      tk.Block.from_schema(schema, Tags.USER, "no")
    end)
    assert_error("from_schema: tags must be a tag or a list of tags, got number", function()
      tk.Block.from_schema(schema, 5)
    end)
    assert_error("from_schema: unknown option 'tag'", function() tk.Block.from_schema(schema, Tags.USER, true, { tag = 1 }) end)
  end)

  it("parse resolves names, blocks, functions and tables, connecting several", function()
    assert.equal("l2norm", tk.Block.parse("l2-norm"):kind())
    local d = tk.Dense(2, { name = "d" })
    assert.is_true(tk.Block.parse(d) == d)
    local chain = tk.Block.parse(d, "relu", function(x) return x end)
    assert.same({ "d", "relu", "lua_block" }, names_of(chain:layers()))
    assert.same({ "relu", "l2_norm" }, names_of(tk.Block.parse({ "relu", "l2-norm" }):layers()))
    assert.equal("parallel", tk.Block.parse({ a = tk.Dense(1), b = tk.Dense(1) }):kind())
    assert.same({ "d", "l2_norm" }, names_of(d:parse("l2-norm"):layers())) -- with a colon: the block first

    assert_error("parse: at least one block expected", function() tk.Block.parse() end)
    assert_error("parse: a block, a registered name, a function or a table of blocks expected, got number", function()
      tk.Block.parse(5)
    end)
    assert_error("unknown block name 'l3-norm'; known: ", function() tk.Block.parse("relu", "l3-norm") end)
    assert_error("parse: entry 1 is nil", function() tk.Block.parse(nil, "relu") end)
  end)

  it("parse_block and from_layer take a block or a function", function()
    local d = tk.Dense(2)
    assert.is_true(tk.Block.parse_block(d) == d)
    assert.is_true(tk.Block.from_layer(d) == d)
    local fn = tk.Block.parse_block(function(x) return x:scale(2) end)
    assert.equal("callback", fn:kind())
    assert.same({ 2 }, fn(tk.ones { 1 }):totable())
    assert.equal("callback", tk.Block.from_layer(function(x) return x end):kind())
    assert_error("parse_block: a block or a function expected, got string", function() tk.Block.parse_block("relu") end)
    assert_error("from_layer: a block or a function expected, got number", function() tk.Block.from_layer(1) end)
  end)

  it("parse_config splits a parallel config into branches and options", function()
    local tt = two_tower { post = "l2-norm" }
    local branches, options = tk.Block.parse_config(tt:get_config())
    assert.same({ "item", "query" }, sorted(branches))
    assert.equal("two_tower", options.name)
    assert.equal("l2norm", options.post:kind())
    assert.equal(toy_schema(), options.schema)
    assert.equal("TwoTowerBlock", options.meta.class)
    local rebuilt = tk.ParallelBlock(branches, options)
    tk.set_meta(rebuilt, options.meta)
    assert.same(tt:get_config(), rebuilt:get_config())
    assert.same({ 3, 2 }, rebuilt(toy_batch()).query:shape())
    local agg = tk.ParallelBlock({ a = tk.Dense(1) }, { aggregation = "concat" })
    local _, agg_opts = tk.Dense(1):parse_config(agg:get_config()) -- a colon call ignores the block
    assert.equal("concat", agg_opts.aggregation)

    assert_error("parse_config: config must be a table, got string", function() tk.Block.parse_config("{}") end)
    assert_error("parse_config: config must be a parallel block's config, got kind 'dense'", function()
      tk.Block.parse_config(tk.Dense(1):get_config())
    end)
    local lua = tk.ParallelBlock { x = tk.LuaBlock(function(v) return v end) }
    assert_error("parse_config: branch 'x': ", function() tk.Block.parse_config(lua:get_config()) end)
  end)

  it("connect_branch with add_rest adds a branch with the columns no branch filters", function()
    local schema = toy_schema()
    local base = tk.Block.from_schema(schema:remove_by_tag(Tags.TARGET), nil, nil, { name = "base" })
    local branched = base:connect_branch({ users = tk.Filter(schema:select_by_tag(Tags.USER)) }, { add_rest = true })
    local par = branched:layers()[2]
    assert.same({ "rest", "users" }, sorted(par:parallel_dict()))
    local out = branched(toy_batch())
    assert.same({ "item_genres__offsets", "item_genres__values", "item_id", "user_age", "user_id" }, sorted(out))
    -- a list of branches: the rest comes last; a sequential branch counts its first filter
    local listed = base:connect_branch(tk.SequentialBlock({ tk.Filter({ "item_id" }), tk.Activation("linear") },
      { name = "ids" }), { add_rest = true })
    assert.same({ "ids", "rest" }, names_of(listed:layers()[2]:parallel_values()))
    assert.same({ "user_id", "user_age", "item_genres" },
      listed:layers()[2]:parallel_dict().rest:get_config().features)

    assert_error("connect_branch: add_rest needs a schema; dense 'dense' has none (see set_schema)", function()
      tk.Dense(2):connect_branch(tk.Dense(1), { add_rest = true })
    end)
    assert_error("connect_branch: add_rest: a branch is named 'rest' already", function()
      base:connect_branch({ rest = tk.Filter({ "user_id" }) }, { add_rest = true })
    end)
  end)
end)
