-- Initializer tables as Keras users write them (issue 11): Keras' argument names and
-- defaults, a seed of their own, and an error for a key no initializer of that kind takes.
local tk = require "towerkit"

local function stats(t)
  local flat = {}
  local function walk(v)
    if type(v) == "table" then
      for _, x in ipairs(v) do walk(x) end
    else
      flat[#flat + 1] = v
    end
  end
  walk(t:totable())
  local sum, lo, hi = 0, math.huge, -math.huge
  for _, x in ipairs(flat) do sum, lo, hi = sum + x, math.min(lo, x), math.max(hi, x) end
  local mean, ss = sum / #flat, 0
  for _, x in ipairs(flat) do ss = ss + (x - mean) ^ 2 end
  return { mean = mean, std = math.sqrt(ss / #flat), min = lo, max = hi }
end

local function near(want, got, tol, what)
  assert(math.abs(want - got) <= tol, ("%s: %g, expected %g +- %g"):format(what, got, want, tol))
end

describe("initializer tables", function()
  before_each(function() tk.reset() end)

  it("take Keras' argument names: mean, stddev, minval, maxval, value", function()
    -- truncated_normal's stddev is that of the normal before truncation (Keras): the
    -- values have 0.8796 of it; before issue 11 stddev was ignored (0.05: std 0.044)
    local s = stats(tk.initialized({ 300, 200 }, { kind = "truncated_normal", stddev = 0.5 }, 1))
    near(0.5 * 0.8796, s.std, 0.01, "truncated_normal std")
    assert(s.min >= -1 and s.max <= 1)
    s = stats(tk.initialized({ 300, 200 }, { kind = "truncated_normal", mean = 2, stddev = 0.1 }, 1))
    near(2, s.mean, 0.005, "truncated_normal mean")
    assert(s.min >= 1.8 and s.max <= 2.2)
    s = stats(tk.initialized({ 300, 200 }, { kind = "random_normal", mean = -1, stddev = 0.3 }, 1))
    near(-1, s.mean, 0.005, "random_normal mean")
    near(0.3, s.std, 0.005, "random_normal std")
    s = stats(tk.initialized({ 300, 200 }, { kind = "random_uniform", minval = 1, maxval = 3 }, 1))
    assert(s.min >= 1 and s.max <= 3 and s.min < 1.01 and s.max > 2.99, ("[%g, %g]"):format(s.min, s.max))
    near(2, s.mean, 0.01, "random_uniform mean")
    assert.same({ 2.5, 2.5 }, tk.initialized({ 2 }, { kind = "constant", value = 2.5 }):totable())
    -- the core's names stay accepted
    assert.same({ 1.5 }, tk.initialized({ 1 }, { kind = "constant", a = 1.5 }):totable())
    s = stats(tk.initialized({ 300, 200 }, { kind = "random_uniform", a = 4, b = 5 }, 1))
    assert(s.min >= 4 and s.max <= 5)
  end)

  it("have Keras' defaults for what is left out", function()
    local s = stats(tk.initialized({ 300, 200 }, { kind = "random_normal" }, 1))
    near(0, s.mean, 0.002, "random_normal mean")
    near(0.05, s.std, 0.002, "random_normal std")
    s = stats(tk.initialized({ 300, 200 }, { kind = "random_uniform", maxval = 1 }, 1))
    assert(s.min >= -0.05 and s.min < -0.04 and s.max <= 1 and s.max > 0.99)
  end)

  it("name an unknown key and the known ones", function()
    local ok, err = pcall(tk.initialized, { 2 }, { kind = "truncated_normal", std = 0.5 })
    assert.is_false(ok)
    assert.truthy(err:find("unknown key 'std' for initializer 'truncated_normal'; known: kind, mean, stddev, seed, a, b",
      1, true), err)
    -- a Keras name of another kind is unknown too: it would be ignored
    ok, err = pcall(tk.initialized, { 2 }, { kind = "random_uniform", stddev = 1 })
    assert.truthy(err:find("unknown key 'stddev' for initializer 'random_uniform'; known: kind, minval, maxval, seed", 1,
      true), err)
    ok, err = pcall(tk.initialized, { 2 }, { kind = "zeros", value = 1 })
    assert.truthy(err:find("unknown key 'value' for initializer 'zeros'; known: kind", 1, true), err)
    ok, err = pcall(tk.initialized, { 2 }, { kind = "glorot_uniform", gain = 1 })
    assert.truthy(err:find("unknown key 'gain' for initializer 'glorot_uniform'; known: kind, seed", 1, true), err)
    -- through the blocks' options too
    ok, err = pcall(tk.MLPBlock, { 4 }, { kernel_initializer = { kind = "random_normal", sigma = 1 } })
    assert.truthy(err:find("unknown key 'sigma'", 1, true), err)
    ok, err = pcall(tk.EmbeddingOptions, { embeddings_initializers = { kind = "constant", val = 1 } })
    if ok then -- the table reaches the core when the embeddings are made
      local T = tk.Tags
      local schema = tk.Schema { tk.ColumnSchema("a", { tags = { T.CATEGORICAL, T.USER }, int_domain = { max = 3 } }) }
      ok, err = pcall(tk.InputBlock, schema, { embedding_options = err })
    end
    assert.is_false(ok)
    assert.truthy(err:find("unknown key 'val'", 1, true), err)
  end)

  it("reject a parameter given twice, a wrong type and a bad range", function()
    local ok, err = pcall(tk.initialized, { 2 }, { kind = "random_normal", stddev = 1, a = 2 })
    assert.truthy(err:find("has both", 1, true) and err:find("'stddev'", 1, true) and err:find("'a'", 1, true), err)
    ok, err = pcall(tk.initialized, { 2 }, { kind = "random_normal", stddev = "0.5" })
    assert.truthy(err:find("'stddev' of initializer 'random_normal' must be a number, got string", 1, true), err)
    ok, err = pcall(tk.initialized, { 2 }, { kind = "random_normal", stddev = -1 })
    assert.truthy(err:find("stddev of initializer 'random_normal' must be non-negative", 1, true), err)
    ok, err = pcall(tk.initialized, { 2 }, { kind = "random_uniform", minval = 1, maxval = 0 })
    assert.truthy(err:find("needs minval <= maxval", 1, true), err)
    ok, err = pcall(tk.initialized, { 2 }, { kind = "random_normal", seed = 1.5 })
    assert.truthy(err:find("'seed' of initializer 'random_normal' must be an integer", 1, true), err)
    ok, err = pcall(tk.initialized, { 2 }, { stddev = 1 })
    assert.truthy(err:find("must be an initializer name or a table {kind = name, ...}", 1, true), err)
    assert.is_false(ok)
  end)

  it("take a seed of their own that replaces the block's", function()
    local init = { kind = "random_normal", stddev = 1, seed = 7 }
    local a = tk.initialized({ 3, 4 }, init, 1)
    assert.same(a:totable(), tk.initialized({ 3, 4 }, init, 2):totable())
    assert.are_not.same(a:totable(), tk.initialized({ 3, 4 }, { kind = "random_normal", stddev = 1, seed = 8 }, 1):totable())
    assert.are_not.same(a:totable(), tk.initialized({ 3, 4 }, { kind = "random_normal", stddev = 1 }, 1):totable())
    -- a Dense kernel from it has the same values whatever tk.manual_seed says
    tk.manual_seed(1)
    local d1 = tk.Dense(4, { input_dim = 3, kernel_initializer = init })
    tk.manual_seed(2)
    local d2 = tk.Dense(4, { input_dim = 3, kernel_initializer = init })
    assert.same(a:totable(), d1:param("kernel"):totable())
    assert.same(a:totable(), d2:param("kernel"):totable())
    -- and the config carries it: a block made from it draws the same values
    local cfg = d1:get_config()
    local found
    local function walk(t)
      if type(t) ~= "table" then return end
      if t.kind == "random_normal" then found = t end
      for _, v in pairs(t) do walk(v) end
    end
    walk(cfg)
    assert.equal(7, found and found.seed)
    assert.same(a:totable(), tk.from_config(cfg, 99):param("kernel"):totable())
  end)

  it("set the weights of MLPBlock and EmbeddingOptions (stddev honoured)", function()
    local mlp = tk.MLPBlock({ 256 }, { input_dim = 300, kernel_initializer = { kind = "truncated_normal", stddev = 0.5 },
      bias_initializer = { kind = "constant", value = 0.25 } })
    local dense = mlp:children()[1].block
    near(0.5 * 0.8796, stats(dense:param("kernel")).std, 0.01, "MLPBlock kernel std")
    assert.equal(0.25, stats(dense:param("bias")).min)
    assert.equal(0.25, stats(dense:param("bias")).max)
    local T = tk.Tags
    local schema = tk.Schema { tk.ColumnSchema("a", { tags = { T.CATEGORICAL, T.USER }, int_domain = { max = 999 } }) }
    local inputs = tk.InputBlock(schema, { embedding_options = tk.EmbeddingOptions {
      embedding_dim_default = 64, embeddings_initializers = { kind = "random_normal", mean = 1, stddev = 0.2 } } })
    local table_ = inputs:named_parameters()[1][2]
    local s = stats(table_)
    near(1, s.mean, 0.005, "embedding mean")
    near(0.2, s.std, 0.005, "embedding std")
  end)
end)
