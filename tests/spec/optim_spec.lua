local tk = require "towerkit"

describe("hand training", function()
  before_each(function() tk.reset() end)

  -- y = sin(x1) + 0.5 * x2 * x3 on 256 points: a small MLP fits it.
  local function task()
    local n = 256
    local xs, ys = {}, {}
    local s = 42
    local function rnd()
      s = (s * 1103515245 + 12345) % 2147483648
      return s / 2147483648 * 2 - 1
    end
    for i = 1, n do
      local a, b, c = rnd() * 2, rnd(), rnd()
      xs[i] = { a, b, c }
      ys[i] = { math.sin(a) + 0.5 * b * c }
    end
    return tk.tensor(xs), tk.tensor(ys)
  end

  local function model()
    tk.manual_seed(3)
    return tk.SequentialBlock {
      tk.Dense(32, { activation = "tanh" }),
      tk.Dense(32, { activation = "relu" }),
      tk.Dense(1),
    }
  end

  local function train(opt, steps)
    local x, y = task()
    local m = model()
    local first, last
    for step = 1, steps do
      tk.reset()
      local loss = tk.mse(m(x), y)
      loss:backward()
      opt:step(m)
      if step == 1 then first = loss:item() end
      last = loss:item()
    end
    return first, last
  end

  it("Adam reaches an MSE below 0.01 in 400 steps", function()
    local first, last = train(tk.optim.Adam { learning_rate = 0.01 }, 400)
    assert.truthy(first > 0.1, "initial loss " .. first)
    assert.truthy(last < 0.01, "final loss " .. last)
  end)

  it("SGD with momentum reaches an MSE below 0.03 in 400 steps", function()
    local _, last = train(tk.optim.SGD { learning_rate = 0.05, momentum = 0.9 }, 400)
    assert.truthy(last < 0.03, "final loss " .. last)
  end)

  it("updates embedding tables only on the rows a batch touched with lazy = true", function()
    local emb = tk.core.embeddings("emb")
    emb:add_feature("item", { cardinality = 10, dim = 4, seed = 1 })
    local before = emb:param("item"):clone():totable()
    local opt = tk.optim.Adam { learning_rate = 0.1, lazy = true }
    assert.is_true(opt:lazy())
    for _ = 1, 3 do
      tk.reset()
      local out = emb { item = tk.tensor({ 2, 5, 2 }, "int64") }
      local loss = out.item:square():sum()
      loss:backward()
      opt:step(emb)
    end
    local after = emb:param("item"):totable()
    for row = 1, 10 do
      if row == 3 or row == 6 then
        assert.are_not.same(before[row], after[row])
      else
        assert.same(before[row], after[row])
      end
    end
  end)

  -- Row 5 (index 6) is touched at step 1 only: with lazy = false its m keeps moving it
  -- (and AdamW's decay shrinks every row); get_weights, totable and get see it caught up.
  it("moves untouched rows with lazy = false, seen by every read", function()
    local function run(lazy)
      local emb = tk.core.embeddings("emb")
      emb:add_feature("item", { cardinality = 10, dim = 4, seed = 1 })
      local opt = tk.optim.AdamW { learning_rate = 0.1, weight_decay = 0.1, lazy = lazy }
      for step = 1, 4 do
        tk.reset()
        local ids = step == 1 and { 2, 5 } or { 2 }
        local out = emb { item = tk.tensor(ids, "int64") }
        out.item:square():sum():backward()
        opt:step(emb)
      end
      return emb, opt
    end
    local lazy = run(true):param("item"):totable()
    local a, b, c = run(false), run(false), run(false)
    local w = a:get_weights()[1]:totable()
    local t = b:param("item"):totable()
    assert.same(w, t)
    assert.equal(t[6][3], c:param("item"):get(6, 3))
    for row = 1, 10 do
      if row ~= 3 then assert.are_not.same(lazy[row], t[row]) end -- decay, and row 6's m
    end
    assert.is_false(tk.optim.Adam { lazy = false }:lazy())
    assert.equal(tk.optim.default_lazy(), tk.optim.Adam():lazy())
    assert.has_error(function() tk.optim.Adam { lazy = 1 } end, "Adam: lazy must be true or false, got number")
  end)

  it("rejects bad optimizer options", function()
    local ok, err = pcall(tk.optim.SGD, { learning_rate = -1 })
    assert.is_false(ok)
    assert.truthy(err:find("learning", 1, true) or err:find("lr", 1, true))
    assert.has_error(function() tk.optim.Adam { beta_1 = "x" } end, "option 'beta_1' must be a number")
    assert.has_error(function() tk.optim.Adam():step(42) end, "step: a block or a list of parameters expected, got number")
  end)

  it("reject unknown options and leave the caller's table unchanged", function()
    assert.has_error(function() tk.optim.SGD { learning_rate = 0.1, momentun = 0.9 } end,
      "SGD: unknown option 'momentun'; known: lazy, learning_rate, lr, momentum, nesterov, weight_decay")
    assert.has_error(function() tk.optim.Adam { beta1 = 0.9 } end,
      "Adam: unknown option 'beta1'; known: beta_1, beta_2, epsilon, lazy, learning_rate, lr")
    assert.has_error(function() tk.optim.AdamW { momentum = 0.9 } end,
      "AdamW: unknown option 'momentum'; known: beta_1, beta_2, epsilon, lazy, learning_rate, lr, weight_decay")
    assert.has_error(function() tk.optim.Adagrad { beta_1 = 0.9 } end,
      "Adagrad: unknown option 'beta_1'; known: epsilon, initial_accumulator_value, lazy, learning_rate, lr")
    assert.has_error(function() tk.optim.Adam { weight_decay = 0.1 } end,
      "Adam: weight_decay is decoupled in towerkit; use AdamW")
    local ok, err = pcall(function() local o = tk.optim.SGD { nesterv = true }; return o end)
    assert.is_false(ok)
    assert.truthy(err:find("optim_spec.lua:", 1, true), err) -- raised at the caller's line

    local opts = { lr = 0.05 }
    local sgd = tk.optim.SGD(opts)
    assert.same({ lr = 0.05 }, opts)
    assert.near(0.05, sgd:learning_rate(), 1e-7)
    local w = { weight_decay = nil, learning_rate = 0.01 }
    local adamw = tk.optim.AdamW(w)
    assert.same({ learning_rate = 0.01 }, w)
    assert.near(0.004, adamw.config.weight_decay, 1e-12)
    assert.near(0.01, adamw:learning_rate(), 1e-7)
    local ada = { learning_rate = 0.2, initial_accumulator_value = 0.5 }
    tk.optim.Adagrad(ada)
    assert.same({ learning_rate = 0.2, initial_accumulator_value = 0.5 }, ada)
    assert.near(0.3, tk.optim.Adam({ lr = 0.3, learning_rate = nil }):learning_rate(), 1e-7)
    assert.near(0.001, tk.optim.Adam({ weight_decay = 0 }):learning_rate(), 1e-7)
  end)
end)
