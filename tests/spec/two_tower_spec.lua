local tk = require "towerkit"
local gradcheck = require "tests.spec.helpers.gradcheck"
local Tags = tk.Tags

local MOVIELENS = "tests/data/merlin-schema-movielens-100k.json"

local function ids(values) return tk.tensor(values, "int64") end

-- A small schema with every kind of input: one-hot, ragged multi-hot, continuous, a
-- shared domain and a target.
local function toy_schema()
  return tk.Schema {
    tk.ColumnSchema("user_id", { tags = { Tags.USER_ID, Tags.CATEGORICAL }, int_domain = { max = 9 } }),
    tk.ColumnSchema("user_genres", { tags = { Tags.USER, Tags.CATEGORICAL, Tags.LIST },
      int_domain = { max = 5, name = "genre" }, value_count = { min = 0, max = 3 } }),
    tk.ColumnSchema("user_age", { tags = { Tags.USER, Tags.CONTINUOUS } }),
    tk.ColumnSchema("item_id", { tags = { Tags.ITEM_ID, Tags.CATEGORICAL }, int_domain = { max = 11 } }),
    tk.ColumnSchema("item_genre", { tags = { Tags.ITEM, Tags.CATEGORICAL }, int_domain = { max = 5, name = "genre" } }),
    tk.ColumnSchema("item_price", { tags = { Tags.ITEM, Tags.CONTINUOUS } }),
    tk.ColumnSchema("click", { tags = { Tags.TARGET, Tags.BINARY_CLASSIFICATION } }),
  }
end

local function toy_batch()
  return {
    user_id = ids { 1, 4, 9 },
    user_genres__values = ids { 0, 2, 5, 5 },
    user_genres__offsets = ids { 0, 3, 3, 4 }, -- the second user has no genre
    user_age = tk.tensor { 0.5, -1.0, 0.25 },
    item_id = ids { 11, 0, 3 },
    item_genre = ids { 2, 2, 4 },
    item_price = tk.tensor { 1.5, 0.2, -0.3 },
    click = tk.tensor { 1, 0, 1 },
  }
end

local function movielens_batch(B)
  local function col(max)
    local t = {}
    for i = 1, B do t[i] = (i * 7) % (max + 1) end
    return ids(t)
  end
  return { userId = col(943), gender = col(2), zip_code = col(795), age = col(8), movieId = col(1680),
    genres = col(216), TE_movieId_rating = tk.ones { B }, userId_count = tk.ones { B } }
end

local function row_norms(t)
  local out = {}
  for i, row in ipairs(t:totable()) do
    local n = 0
    for _, v in ipairs(row) do n = n + v * v end
    out[i] = math.sqrt(n)
  end
  return out
end

describe("EmbeddingOptions", function()
  it("has Merlin's defaults", function()
    local eo = tk.EmbeddingOptions()
    assert.equal(64, eo.embedding_dim_default)
    assert.is_false(eo.infer_embedding_sizes)
    assert.equal(2.0, eo.infer_embedding_sizes_multiplier)
    assert.is_false(eo.infer_embeddings_ensure_dim_multiple_of_8)
    assert.equal(0.0, eo.embeddings_l2_reg)
    assert.equal("mean", eo.combiner)
    assert.equal(64, eo:dim_for("x", 1000))
  end)

  it("infers dims with Merlin's formula, explicit dims winning", function()
    assert.equal(12, tk.infer_embedding_dim(944, 2.0))  -- ceil(944^0.25 * 2) = ceil(11.09)
    assert.equal(16, tk.infer_embedding_dim(944, 2.0, true))
    assert.equal(54, tk.infer_embedding_dim(100000, 3.0)) -- 100000^0.25 = 17.78; * 3 = 53.35
    local eo = tk.EmbeddingOptions { infer_embedding_sizes = true, embedding_dims = { user_id = 7 } }
    assert.equal(7, eo:dim_for("user_id", 944))
    assert.equal(12, eo:dim_for("other", 944))
    local eo8 = tk.EmbeddingOptions { infer_embedding_sizes = true, infer_embeddings_ensure_dim_multiple_of_8 = true }
    assert.equal(16, eo8:dim_for("x", 944))
  end)

  it("rejects bad options with their names", function()
    assert.has_error(function() tk.EmbeddingOptions { embedding_dim = 8 } end)
    local ok, err = pcall(tk.EmbeddingOptions, { embedding_dim = 8 })
    assert.truthy(err:find("unknown option 'embedding_dim'; known: combiner, embedding_dim_default, embedding_dims", 1, true))
    ok, err = pcall(tk.EmbeddingOptions, { combiner = "max" })
    assert.truthy(err:find("unknown combiner 'max'; known: mean, sqrtn, sum", 1, true))
    ok, err = pcall(tk.EmbeddingOptions, { infer_embedding_sizes = "yes" })
    assert.truthy(err:find("'infer_embedding_sizes' must be a boolean, got string", 1, true))
    ok, err = pcall(tk.EmbeddingOptions, { embedding_dims = { a = 0 } })
    assert.truthy(err:find("embedding_dims['a'] must be a positive integer", 1, true))
    assert.is_false(ok)
  end)
end)

describe("InputBlock", function()
  before_each(function() tk.reset() end)

  it("embeds categorical features, passes continuous ones as [B, 1] and drops targets", function()
    local block = tk.InputBlock(toy_schema(), { embedding_options = { embedding_dim_default = 4 } })
    local out = block(toy_batch())
    assert.same({ 3, 4 }, out.user_id:shape())
    assert.same({ 3, 4 }, out.user_genres:shape())
    assert.same({ 3, 1 }, out.user_age:shape())
    assert.same({ 3, 1 }, out.item_price:shape())
    assert.is_nil(out.click)
    -- the empty genre list of user 2 gives zeros (combiner mean)
    assert.same({ 0, 0, 0, 0 }, out.user_genres:totable()[2])
    -- user_genres and item_genre share the table of domain "genre"
    local names = {}
    for _, p in ipairs(block:named_parameters()) do names[#names + 1] = p[1] end
    assert.same({ "user_id", "genre", "item_id" }, names)
  end)

  it("applies initializers per feature, by name or function, and the l2 penalty", function()
    local block = tk.InputBlock(toy_schema(), { embedding_options = {
      embedding_dim_default = 2,
      embeddings_initializers = { user_id = "ones", item_id = function(shape) return tk.full(shape, 0.5) end },
      embeddings_l2_reg = 0.1,
    } })
    assert.same({ 1, 1 }, block:param("user_id"):totable()[3])
    assert.same({ 0.5, 0.5 }, block:param("item_id"):totable()[1])
    local ctx = tk.Context()
    ctx:train(true)
    block:forward(toy_batch(), ctx)
    assert.truthy(ctx:added_loss():item() > 0)
  end)

  it("combines a column given with offsets by the options' combiner, LIST tag or not", function()
    local schema = tk.Schema {
      tk.ColumnSchema("tags", { tags = { Tags.USER, Tags.CATEGORICAL }, int_domain = { max = 3 } }),
    }
    local block = tk.InputBlock(schema, { embedding_options = { embedding_dim_default = 2,
      embeddings_initializers = { tags = function(shape)
        return tk.tensor { { 1, 10 }, { 2, 20 }, { 3, 30 }, { 4, 40 } }
      end } } })
    -- row 1: ids 0 and 2 (mean of rows 1 and 3), row 2: id 3
    local out = block { tags__values = ids { 0, 2, 3 }, tags__offsets = ids { 0, 2, 3 } }
    assert.same({ { 2, 20 }, { 4, 40 } }, out.tags:totable())
  end)

  it("needs a domain for categorical features", function()
    local bad = tk.Schema { tk.ColumnSchema("c", { tags = { Tags.CATEGORICAL } }) }
    local ok, err = pcall(tk.InputBlock, bad)
    assert.is_false(ok)
    assert.truthy(err:find("categorical feature 'c' has no int_domain", 1, true))
    ok, err = pcall(tk.InputBlock, "schema.json")
    assert.truthy(err:find("InputBlock: a Schema expected, got string", 1, true))
  end)
end)

describe("MLPBlock", function()
  before_each(function() tk.reset() end)

  it("stacks dense layers with Merlin's options", function()
    local mlp = tk.MLPBlock({ 8, 4 }, { activation = { "relu", "tanh" }, dropout = 0.2, normalization = "batch_norm" })
    local kinds = {}
    for _, c in ipairs(mlp:children()) do kinds[#kinds + 1] = c.name end
    assert.same({ "dense_0", "dropout_0", "batch_norm_0", "dense_1", "dropout_1", "batch_norm_1" }, kinds)
    assert.same({ 5, 4 }, mlp(tk.randn({ 5, 3 }, 1)):shape())
    local last = tk.MLPBlock({ 8, 4 }, { no_activation_last_layer = true, dropout = 0.5 })
    kinds = {}
    for _, c in ipairs(last:children()) do kinds[#kinds + 1] = c.name end
    assert.same({ "dense_0", "dropout_0", "dense_1" }, kinds)
    assert.equal("linear", last:get_config().children[3].activation)
    local nobias = tk.MLPBlock({ 3 }, { use_bias = false, input_dim = 2 })
    assert.equal(6, nobias:count_params())
    local ones = tk.MLPBlock({ 2 }, { kernel_initializer = "ones", bias_initializer = "ones", input_dim = 2 })
    assert.same({ { 2, 2 } }, ones(tk.tensor { { 1, 0 } }):totable()) -- 1 * 1 + 0 * 1 + bias 1: exact
    local fn = tk.MLPBlock({ 2, 2 }, { input_dim = 3, kernel_initializer = function(shape)
      return tk.full(shape, shape[1] == 3 and 0.25 or 0.5)
    end })
    assert.same({ 0.25, 0.25 }, fn:get_weights()[1]:totable()[1])
    assert.same({ 0.5, 0.5 }, fn:get_weights()[3]:totable()[1])
    -- one initializer per layer, a function for a later layer's kernel (its width is
    -- known) and for a bias
    local per = tk.MLPBlock({ 2, 2 }, { kernel_initializer = { "ones", function(shape) return tk.full(shape, 0.5) end },
      bias_initializer = { "zeros", function(shape) return tk.full(shape, 0.25) end } })
    assert.same({ 1, 2 }, per(tk.tensor { { 1, 1 } }):shape()) -- builds the first layer
    local w = per:get_weights()
    assert.same({ { 1, 1 }, { 1, 1 } }, w[1]:totable())
    assert.same({ 0.5, 0.5 }, w[3]:totable()[2])
    assert.same({ 0.25, 0.25 }, w[4]:totable())
    assert.equal("mlp", tk.MLPBlock({ 2 }):name())
    assert.equal("tower", tk.MLPBlock({ 2 }, { block_name = "tower" }):name())
  end)

  it("calls a function initializer of a first layer without input_dim once the shape is known", function()
    local shapes = {}
    local function init(shape, seed)
      shapes[#shapes + 1] = table.concat(shape, "x")
      return tk.full(shape, 0.5)
    end
    -- standalone: the first forward builds the block on its input's shape, then calls it
    local mlp = tk.MLPBlock({ 2 }, { kernel_initializer = init, bias_initializer = init })
    assert.same({ { 1.5 + 0.5, 1.5 + 0.5 } }, mlp(tk.ones { 1, 3 }):totable()) -- 3 * 0.5 + 0.5: exact
    assert.same({ "3x2", "2" }, shapes)
    assert.same({ { 2, 2 } }, mlp(tk.ones { 1, 3 }):totable()) -- once
    assert.equal(2, #shapes)
    -- build does it too, and a copy made before the build gets its own call
    local b = tk.MLPBlock({ 2 }, { kernel_initializer = init })
    local c = b:copy()
    b:build({ 1, 5 })
    assert.same({ 0.5, 0.5 }, b:get_weights()[1]:totable()[5])
    assert.same({ { 1, 1 } }, c:forward(tk.ones { 1, 2 }):totable())
    -- in a two-tower model: each tower's first layer with the width of its features
    shapes = {}
    local schema = tk.Schema {
      tk.ColumnSchema("user_id", { tags = { tk.Tags.USER_ID, tk.Tags.CATEGORICAL }, int_domain = { max = 9 } }),
      tk.ColumnSchema("item_id", { tags = { tk.Tags.ITEM_ID, tk.Tags.CATEGORICAL }, int_domain = { max = 9 } }),
      tk.ColumnSchema("item_brand", { tags = { tk.Tags.ITEM, tk.Tags.CATEGORICAL }, int_domain = { max = 3 } }),
    }
    local model = tk.TwoTowerModel(schema, tk.MLPBlock({ 4 }, { kernel_initializer = init }),
      { embedding_options = { embedding_dim_default = 3 } })
    table.sort(shapes)
    assert.same({ "3x4", "6x4" }, shapes) -- query: user_id (3); item: item_brand, item_id (6)
    for _, p in ipairs(model.block:named_parameters()) do
      if p[1]:find("kernel", 1, true) then assert.same(0.5, p[2]:get(1, 1), p[1]) end
    end
  end)

  it("sizes the default item tower from the item features when the query tower has input_dim", function()
    local schema = tk.Schema {
      tk.ColumnSchema("user_id", { tags = { tk.Tags.USER_ID, tk.Tags.CATEGORICAL }, int_domain = { max = 19 } }),
      tk.ColumnSchema("user_group", { tags = { tk.Tags.USER, tk.Tags.CATEGORICAL }, int_domain = { max = 3 } }),
      tk.ColumnSchema("item_id", { tags = { tk.Tags.ITEM_ID, tk.Tags.CATEGORICAL }, int_domain = { max = 9 } }),
    }
    local eo = { embedding_dim_default = 4 }
    -- the query tower reads 8 features, the item tower 4: it used to fail inside fit
    -- ("item/mlp/dense_0: input has 4 features, expected 8")
    local model = tk.TwoTowerModel(schema, tk.MLPBlock({ 6, 2 }, { input_dim = 8, activation = "tanh" }),
      { embedding_options = eo })
    local shapes = {}
    for _, p in ipairs(model.block:named_parameters()) do shapes[p[1]] = table.concat(p[2]:shape(), "x") end
    assert.equal("8x6", shapes["query/mlp/dense_0/kernel"])
    assert.equal("4x6", shapes["item/mlp/dense_0/kernel"])
    assert.equal("tanh", model.block:item_block():get_config().children[2].children[1].activation)
    model:compile {}
    local data = tk.data.synthetic(schema, 64, { seed = 1 })
    model:fit(data, { batch_size = 16, epochs = 1, verbose = false })
    -- a tower of fixed width that cannot be made anew: the constructor says why
    local ok, err = pcall(tk.TwoTowerModel, schema, tk.SequentialBlock { tk.Dense(2, { input_dim = 8 }) },
      { embedding_options = eo })
    assert.is_false(ok)
    assert.truthy(err:find("TwoTower: the towers cannot take the features of the schema: ", 1, true), err)
    assert.truthy(err:find("input has 4 features, expected 8", 1, true), err)
    assert.truthy(err:find("the item tower is a copy of the query tower", 1, true), err)
  end)

  it("filters its input and regularises its kernels", function()
    local mlp = tk.MLPBlock({ 2 }, { filter = { "a" }, kernel_regularizer = 0.5, input_dim = 1,
      kernel_initializer = "ones" })
    local ctx = tk.Context()
    ctx:train(true)
    local out = mlp:forward({ a = tk.ones { 3, 1 }, b = tk.ones { 3, 5 } }, ctx)
    assert.same({ 3, 2 }, out:shape())
    assert.near(0.5 * 2, ctx:added_loss():item(), 1e-6) -- 0.5 * sum(kernel^2) = 0.5 * 2
  end)

  it("rejects bad options", function()
    local ok, err = pcall(tk.MLPBlock, {})
    assert.truthy(err:find("MLPBlock: dimensions must be a non-empty list of layer sizes", 1, true))
    ok, err = pcall(tk.MLPBlock, { 4 }, { activation = { "relu", "relu" } })
    assert.truthy(err:find("MLPBlock: 2 activations for 1 layers", 1, true))
    assert.has_error(function() tk.MLPBlock({ 4 }, { activation = "nope" }) end,
      "MLPBlock: unknown activation 'nope'; known: " .. tk.core.names("activation"))
    ok, err = pcall(tk.MLPBlock, { 4, 2 }, { activation = { "relu", "swishy" } })
    assert.truthy(err:find("MLPBlock: unknown activation 'swishy'; known: linear, relu", 1, true), err)
    ok, err = pcall(tk.MLPBlock, { 4 }, { kernel_initializer = "orthogonal" })
    assert.truthy(err:find("unknown initializer 'orthogonal'", 1, true))
    -- a function for the first layer without input_dim runs when the block is built
    ok, err = pcall(function() return tk.MLPBlock({ 4 }, { kernel_initializer = function() end }):build({ 1, 3 }) end)
    assert.truthy(err:find("MLPBlock kernel_initializer (layer 1): the initializer function returned nil", 1, true), err)
    ok, err = pcall(tk.MLPBlock, { 4, 2 }, { kernel_initializer = { "ones" } })
    assert.truthy(err:find("MLPBlock: 1 kernel_initializers for 2 layers", 1, true), err)
    ok, err = pcall(tk.MLPBlock, { 4 }, { dropuot = 0.1 })
    assert.truthy(err:find("MLPBlock: unknown option 'dropuot'", 1, true))
    assert.is_false(ok)
  end)

  it("DenseResidualBlock keeps the input width", function()
    local r = tk.DenseResidualBlock { normalization = false }
    assert.same({ 4, 6 }, r(tk.randn({ 4, 6 }, 2)):shape())
    assert.equal(6 * 6 + 6, r:count_params())
    local deep = tk.DenseResidualBlock { depth = 3, low_rank_dim = 2, input_dim = 6 }
    assert.same({ 4, 6 }, deep(tk.randn({ 4, 6 }, 2)):shape())
  end)
end)

describe("TwoTowerBlock", function()
  before_each(function() tk.reset() end)

  it("builds from the movielens schema with inferred sizes and the hand-computed parameter count", function()
    local schema = tk.Schema.read_json(MOVIELENS)
    local tower = tk.MLPBlock({ 64, 32 }, { no_activation_last_layer = true })
    local tt = tk.TwoTowerBlock(schema, tower, {
      embedding_options = tk.EmbeddingOptions { infer_embedding_sizes = true },
      post = "l2-norm",
    })
    local out = tt(movielens_batch(5))
    assert.same({ 5, 32 }, out.query:shape())
    assert.same({ 5, 32 }, out.item:shape())
    local dims = {}
    for _, p in ipairs(tt:named_parameters()) do dims[p[1]] = p[2]:shape() end
    -- ceil(cardinality^0.25 * 2): 944 -> 12, 3 -> 3, 796 -> 11, 9 -> 4, 1681 -> 13, 217 -> 8
    assert.same({ 944, 12 }, dims["query/embeddings/userId"])
    assert.same({ 3, 3 }, dims["query/embeddings/gender"])
    assert.same({ 796, 11 }, dims["query/embeddings/zip_code"])
    assert.same({ 9, 4 }, dims["query/embeddings/age"])
    assert.same({ 1681, 13 }, dims["item/embeddings/movieId"])
    assert.same({ 217, 8 }, dims["item/embeddings/genres"])
    assert.same({ 30, 64 }, dims["query/mlp/dense_0/kernel"]) -- 12 + 3 + 11 + 4
    assert.same({ 21, 64 }, dims["item/mlp/dense_0/kernel"]) -- 13 + 8
    local query = 944 * 12 + 3 * 3 + 796 * 11 + 9 * 4 + (30 * 64 + 64) + (64 * 32 + 32)
    local item = 1681 * 13 + 217 * 8 + (21 * 64 + 64) + (64 * 32 + 32)
    assert.equal(query + item, tt:count_params())
    assert.equal(query, tt:query_block():count_params())
    assert.equal(item, tt:item_block():count_params())
    for _, n in ipairs(row_norms(out.query)) do assert.near(1, n, 1e-5) end
    for _, n in ipairs(row_norms(out.item)) do assert.near(1, n, 1e-5) end
  end)

  it("copies the query tower for the item tower with its own weights", function()
    local schema = tk.Schema {
      tk.ColumnSchema("u", { tags = { Tags.USER_ID, Tags.CATEGORICAL }, int_domain = { max = 9 } }),
      tk.ColumnSchema("i", { tags = { Tags.ITEM_ID, Tags.CATEGORICAL }, int_domain = { max = 9 } }),
    }
    local tt = tk.TwoTowerBlock(schema, tk.MLPBlock { 4 }, { embedding_options = { embedding_dim_default = 3 } })
    tt { u = ids { 1, 2 }, i = ids { 3, 4 } }
    local q = tt:query_block():get_weights()
    local i = tt:item_block():get_weights()
    assert.equal(#q, #i)
    for k = 1, #q do
      assert.same(q[k]:shape(), i[k]:shape())
      if k ~= 3 then assert.are_not.same(q[k]:totable(), i[k]:totable()) end -- biases start at 0
    end
  end)

  it("passes a gradient check with multi-hot and continuous features", function()
    local schema = toy_schema()
    local tower = tk.MLPBlock({ 3, 4 }, { activation = "tanh" })
    local tt = tk.TwoTowerBlock(schema, tower, { embedding_options = { embedding_dim_default = 2 },
      post = "l2-norm" })
    local batch = toy_batch()
    tt(batch)
    local params = {}
    for _, p in ipairs(tt:named_parameters()) do params[#params + 1] = p[2] end
    local ok, where = gradcheck.check(function()
      local out = tt(batch)
      return gradcheck.project(out.query) + gradcheck.project(out.item)
    end, params, { eps = 2e-3, tol = 1e-2 })
    assert.is_true(ok, where)
  end)

  it("raises Merlin's errors and clear ones for bad tags and options", function()
    local schema = toy_schema()
    assert.has_error(function() tk.TwoTowerBlock(nil, tk.MLPBlock { 2 }) end, "The schema is required by TwoTower")
    assert.has_error(function() tk.TwoTowerBlock(schema, nil) end, "The query_tower is required by TwoTower")
    local ok, err = pcall(tk.TwoTowerBlock, schema, tk.MLPBlock { 2 }, { query_tower_tag = Tags.SESSION })
    assert.is_false(ok)
    assert.truthy(err:find("TwoTower: no feature of the schema has the query tag 'session'", 1, true))
    ok, err = pcall(tk.TwoTowerBlock, schema, tk.MLPBlock { 2 }, { item_tag = Tags.ITEM })
    assert.truthy(err:find("TwoTower: unknown option 'item_tag'", 1, true))
    ok, err = pcall(tk.TwoTowerBlock, schema, tk.MLPBlock { 2 }, { post = "l3-norm" })
    assert.truthy(err:find("unknown block name 'l3-norm'", 1, true))
    ok, err = pcall(tk.TwoTowerBlock, {}, tk.MLPBlock { 2 })
    assert.truthy(err:find("TwoTower: schema must be a Schema, got table", 1, true))
    ok, err = pcall(function() return tk.MLPBlock { 2 }:query_block() end)
    assert.truthy(err:find("query_block: block 'mlp' has no 'query' branch", 1, true))
  end)

  it("names a missing feature and an out-of-range id", function()
    local tt = tk.TwoTowerBlock(toy_schema(), tk.MLPBlock { 2 }, { embedding_options = { embedding_dim_default = 2 } })
    local batch = toy_batch()
    batch.item_price = nil
    local ok, err = pcall(tt, batch)
    assert.is_false(ok)
    assert.truthy(err:find("item/embeddings: embeddings: the input has no continuous feature 'item_price'", 1, true))
    batch = toy_batch()
    batch.user_id = ids { 1, 2, 10 }
    ok, err = pcall(tt, batch)
    assert.truthy(err:find("embedding table 'user_id': id 10 out of range [0, 10)", 1, true))
  end)

  it("round-trips its config with its meta", function()
    local tt = tk.TwoTowerBlock(toy_schema(), tk.MLPBlock { 2 }, { embedding_options = { embedding_dim_default = 2 } })
    local cfg = tt:get_config()
    assert.equal("TwoTowerBlock", cfg.meta.class)
    local back = tk.from_config(cfg)
    assert.same(cfg, back:get_config())
    assert.same({ 3, 2 }, back(toy_batch()).query:shape())
  end)
end)
