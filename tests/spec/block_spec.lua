local tk = require "towerkit"
local gradcheck = require "tests.spec.helpers.gradcheck"

local function shape_of(t) return t:shape() end

local function mlp(dims, opts)
  opts = opts or {}
  local layers = {}
  for i, d in ipairs(dims) do
    layers[i] = tk.Dense(d, { name = "dense_" .. (i - 1), activation = opts.activation or "relu", seed = i })
  end
  return tk.SequentialBlock(layers, { name = opts.name or "mlp" })
end

describe("blocks", function()
  before_each(function() tk.reset() end)

  it("are callable on a tensor and size themselves from the first input", function()
    local d = tk.Dense(3, { seed = 1 })
    assert.is_false(d:is_built())
    local out = d(tk.ones { 2, 5 })
    assert.same({ 2, 3 }, out:shape())
    assert.is_true(d:is_built())
    assert.equal(5 * 3 + 3, d:count_params())
    local ok, err = pcall(d, tk.ones { 2, 4 })
    assert.is_false(ok)
    assert.truthy(err:find("dense: input has 4 features, expected 5", 1, true))
  end)

  it("connect, residual and shortcut follow Merlin's semantics", function()
    local a = tk.Dense(4, { name = "a", seed = 1, input_dim = 4 })
    local b = tk.Dense(4, { name = "b", seed = 2, input_dim = 4 })
    local x = tk.randn({ 3, 4 }, 9)
    local seq = a:connect(b)
    assert.equal("sequential", seq:kind())
    -- bitwise: the same blocks on the same input and shapes, the same operations
    assert.same(b(a(x)):totable(), seq(x):totable())

    local res = a:connect_with_residual(b)
    local ax = a(x)
    local expect = (b(ax) + ax):totable()
    assert.same(expect, res(x):totable()) -- the same ops in the same order: bitwise

    local sc = a:connect_with_shortcut(b)
    assert.same({ 3, 8 }, sc(x):shape())
    assert.same({ 3, 8 }, tk.WithShortcut(b)(x):shape())
    -- aggregation = false (Merlin's None): both outputs by name, the block's under
    -- block_outputs_name, the input under "shortcut" (bitwise: the same ops)
    local named = tk.WithShortcut(b, { block_outputs_name = "deep", aggregation = false })(x)
    local keys = {}
    for k in pairs(named) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.same({ "deep", "shortcut" }, keys)
    assert.same(b(x):totable(), named.deep:totable())
    assert.same(x:totable(), named.shortcut:totable())
  end)

  it("connect_branch and ParallelBlock merge branches and aggregate", function()
    local base = tk.Dense(4, { name = "base", seed = 3 })
    local branched = base:connect_branch({ left = tk.Dense(2, { seed = 4 }), right = tk.Dense(3, { seed = 5 }) },
      { aggregation = "concat" })
    assert.same({ 5, 5 }, branched(tk.ones { 5, 6 }):shape())
    local par = tk.ParallelBlock { q = tk.Dense(2, { seed = 6 }), i = tk.Dense(2, { seed = 7 }) }
    local out = par(tk.ones { 3, 2 })
    assert.same({ 3, 2 }, out.q:shape())
    assert.same({ 3, 2 }, out.i:shape())
  end)

  it("repeats with fresh weights, in sequence and in parallel", function()
    local d = tk.Dense(4, { seed = 1, input_dim = 4 })
    local r = d:rep(3)
    assert.equal(3, #r:children())
    assert.equal(3 * d:count_params(), r:count_params())
    assert.is_true(r == r)
    local w1 = r:children()[1].block:get_weights()[1]:totable()
    local w2 = r:children()[2].block:get_weights()[1]:totable()
    assert.are_not.same(w1, w2)
    assert.equal(r:count_params(), d["repeat"](d, 3):count_params())
    local p = d:repeat_in_parallel(2, { prefix = "head_", aggregation = "concat" })
    assert.same({ 2, 8 }, p(tk.ones { 2, 4 }):shape())
    local pr = d:repeat_in_parallel(2, { residual = true })
    local o = pr(tk.ones { 2, 4 })
    assert.truthy(o.shortcut and o["0"] and o["1"])
  end)

  it("names parameters by block path and counts them", function()
    local q = mlp({ 8, 4 }, { name = "mlp" })
    local tower = tk.SequentialBlock({ q }, { name = "query" })
    tower(tk.ones { 2, 6 })
    local names = {}
    for i, p in ipairs(tower:named_parameters()) do names[i] = p[1] end
    assert.same({ "mlp/dense_0/kernel", "mlp/dense_0/bias", "mlp/dense_1/kernel", "mlp/dense_1/bias" }, names)
    assert.equal(6 * 8 + 8 + 8 * 4 + 4, tower:count_params())
    assert.equal(4, #tower:trainable_weights())
    assert.truthy(tower:select_by_name("dense_1"))
    assert.is_nil(tower:select_by_name("nope"))
  end)

  it("gets and sets weights, copies with new weights", function()
    local d = tk.Dense(2, { seed = 1, input_dim = 3 })
    local c = d:copy()
    assert.same({ 3, 2 }, c:get_weights()[1]:shape())
    assert.are_not.same(d:get_weights()[1]:totable(), c:get_weights()[1]:totable())
    c:set_weights(d:get_weights())
    assert.same(d:get_weights()[1]:totable(), c:get_weights()[1]:totable()) -- copied: bitwise
    assert.has_error(function() c:set_weights({ tk.zeros { 2, 2 }, tk.zeros { 2 } }) end,
      "set_weights: 'kernel' has shape [3, 2], got [2, 2]")
    assert.has_error(function() c:set_weights({ tk.zeros { 3, 2 } }) end,
      "set_weights: block 'dense' has 2 weights, got 1")
  end)

  it("round-trips its config", function()
    local m = tk.Dense(4, { name = "d0", activation = "relu", seed = 1 }):connect(tk.L2Norm())
    local cfg = m:get_config()
    assert.equal("sequential", cfg.kind)
    local m2 = tk.from_config(cfg)
    assert.same(cfg, m2:get_config())
    local lb = tk.LuaBlock(function(x) return x end)
    local ok, err = pcall(tk.from_config, lb:get_config())
    assert.is_false(ok)
    assert.truthy(err:find("cannot be restored from config", 1, true))
  end)

  it("summarises a graph with output shapes and parameter counts", function()
    local m = mlp({ 8, 4 }, { name = "tower" })
    local text = m:summary(tk.ones { 2, 3 }, { quiet = true })
    assert.truthy(text:find("tower", 1, true))
    assert.truthy(text:find("dense_1", 1, true))
    assert.truthy(text:find("[2, 4]", 1, true))
    assert.truthy(text:find("Total params: " .. m:count_params(), 1, true))
    assert.same({ 2, 4 }, m:compute_output_shape({ 2, 3 }))
  end)

  it("resolves post names and lists the known ones", function()
    local d = tk.Dense(3, { seed = 2 })
    d:set_post("l2-norm")
    local out = d(tk.randn({ 4, 5 }, 1)):totable()
    for _, row in ipairs(out) do
      local n = 0
      for _, v in ipairs(row) do n = n + v * v end
      assert.truthy(math.abs(n - 1) < 1e-5)
    end
    local ok, err = pcall(function() d:set_post("l3-norm") end)
    assert.is_false(ok)
    assert.truthy(err:find("unknown block name 'l3-norm'; known: ", 1, true))
    assert.truthy(err:find("l2-norm", 1, true))
  end)

  it("reads optional arguments after lists in the core constructors", function()
    local par = tk.core.parallel("p", { "a" }, { tk.Dense(2, { seed = 1 }) })
    assert.is_nil(par:aggregation())
    local keep = tk.core.filter("f", { "a" })
    local out = keep { a = tk.ones { 1, 2 }, b = tk.ones { 1, 3 } }
    assert.truthy(out.a)
    assert.is_nil(out.b)
  end)

  it("refuses a pre or post block that would make a cycle", function()
    local d = tk.Dense(2, { name = "d", seed = 1 })
    local seq = tk.SequentialBlock({ d }, { name = "s" })
    local ok, err = pcall(function() d:set_pre(seq) end)
    assert.is_false(ok)
    assert.truthy(err:find("block 'd': 's' as pre would make a cycle", 1, true), err)
    ok, err = pcall(function() d:set_post(d) end)
    assert.truthy(err:find("block 'd': 'd' as post would make a cycle", 1, true), err)
  end)

  it("raises clear errors for bad arguments", function()
    assert.has_error(function() tk.Dense(0) end, "Dense: units must be a positive integer, got 0")
    assert.has_error(function() tk.Dense(3, { activation = "swish" }) end)
    assert.has_error(function() tk.Dense(3, { activation = "swish" }) end,
      "Dense: unknown activation 'swish'; known: " .. tk.core.names("activation"))
    local ok, err = pcall(tk.Dense, 3, { activation = 7 })
    assert.truthy(err:find("Dense: unknown activation (a number); known: linear, relu", 1, true), err)
    ok, err = pcall(tk.Aggregation, "mean")
    assert.is_false(ok)
    assert.truthy(err:find("unknown aggregation 'mean'; known: concat", 1, true))
    ok, err = pcall(tk.Dense(3), { a = tk.tensor({ { 1 } }, "int64") })
    assert.is_false(ok)
    assert.truthy(err:find("entry 'a' is int64, not float32", 1, true))
    assert.has_error(function() tk.Dropout(1.5) end, "bad argument #2 to 'dropout' (rate must be in [0, 1), got 1.5)")
    assert.has_error(function() tk.Dense(3):connect() end, "connect: at least one block expected")
    ok, err = pcall(function() tk.Dense(2)(nil) end)
    assert.is_false(ok)
    assert.truthy(err:find("a tensor or a table of tensors expected", 1, true))
  end)
end)

describe("blocks written in Lua", function()
  before_each(function() tk.reset() end)

  it("run inside a graph and pass gradient checks", function()
    local square = tk.LuaBlock(function(x) return x * x + x end, "square_plus")
    local d = tk.Dense(3, { seed = 11, input_dim = 4, activation = "tanh" })
    local model = d:connect(square, tk.Dense(2, { seed = 12, input_dim = 3 }))
    local x = tk.randn({ 5, 4 }, 2)
    local params = {}
    for _, p in ipairs(model:named_parameters()) do params[#params + 1] = p[2] end
    local ok, where = gradcheck.check(function() return gradcheck.project(model(x)) end, params)
    assert.is_true(ok, where)
  end)

  it("report their errors with the block path", function()
    local bad = tk.LuaBlock(function() error("boom") end, "exploder")
    local model = tk.Dense(2, { seed = 1 }):connect(bad, { block_name = "outer" })
    local ok, err = pcall(model, tk.ones { 1, 2 })
    assert.is_false(ok)
    assert.truthy(err:find("outer/exploder: ", 1, true))
    assert.truthy(err:find("boom", 1, true))
    local nothing = tk.LuaBlock(function() return nil end, "nothing")
    ok, err = pcall(nothing, tk.ones { 1, 2 })
    assert.truthy(err:find("nothing: returned nil", 1, true))
  end)

  it("gradient-check the combinators with nested blocks", function()
    local x = tk.randn({ 4, 3 }, 5)
    local inner = tk.Dense(3, { seed = 21, input_dim = 3, activation = "tanh" })
    local graphs = {
      residual = tk.ResidualBlock(inner, { activation = "tanh" }),
      shortcut = tk.WithShortcut(tk.Dense(2, { seed = 22, input_dim = 3, activation = "sigmoid" })),
      parallel = tk.ParallelBlock({ a = tk.Dense(2, { seed = 23, input_dim = 3 }), b = tk.Dense(2, { seed = 24, input_dim = 3 }) },
        { aggregation = "concat" }),
      nested = tk.SequentialBlock { tk.Dense(3, { seed = 25, input_dim = 3, activation = "gelu" }),
        tk.ResidualBlock(tk.Dense(3, { seed = 26, input_dim = 3 }))
          :connect_with_shortcut(tk.Dense(2, { seed = 27, input_dim = 3 })) },
    }
    for name, g in pairs(graphs) do
      local params = {}
      for _, p in ipairs(g:named_parameters()) do params[#params + 1] = p[2] end
      assert.truthy(#params > 0, name)
      local ok, where = gradcheck.check(function() return gradcheck.project(g(x)) end, params)
      assert.is_true(ok, name .. ": " .. where)
    end
  end)
end)
