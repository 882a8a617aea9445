local tk = require "towerkit"

local function close(a, b, tol)
  return math.abs(a - b) <= (tol or 1e-5)
end

describe("tensors", function()
  before_each(function() tk.reset() end)

  it("are built from nested tables and report dtype and shape", function()
    local t = tk.tensor { { 1, 2, 3 }, { 4, 5, 6 } }
    assert.same({ 2, 3 }, t:shape())
    assert.equal("float32", t:dtype())
    assert.equal(6, t:numel())
    assert.equal(2, #t)
    assert.same({ { 1, 2, 3 }, { 4, 5, 6 } }, t:totable())
    local ids = tk.tensor({ 3, 1, 2 }, "int64")
    assert.equal("int64", ids:dtype())
    assert.same({ 3, 1, 2 }, ids:totable())
  end)

  it("prints dtype, shape and values", function()
    local s = tostring(tk.tensor { { 1, 2 }, { 3, 4 } })
    assert.truthy(s:find("tensor float32 [2, 2]", 1, true))
    assert.truthy(s:find("[[1.0000, 2.0000],", 1, true))
    assert.truthy(s:find(" [3.0000, 4.0000]]", 1, true))
    local big = tostring(tk.zeros { 100, 100 })
    assert.truthy(big:find("...", 1, true))
    assert.truthy(tostring(tk.tensor({ 7 }, "int64")):find("[7]", 1, true))
  end)

  it("creates zeros, ones, full and seeded random tensors", function()
    assert.same({ { 0, 0 } }, tk.zeros({ 1, 2 }):totable())
    assert.same({ 1, 1, 1 }, tk.ones({ 3 }):totable())
    assert.same({ 2.5, 2.5 }, tk.full({ 2 }, 2.5):totable())
    assert.same(tk.randn({ 4 }, 3):totable(), tk.randn({ 4 }, 3):totable()) -- one seed: bitwise
    assert.are_not.same(tk.randn({ 4 }, 3):totable(), tk.randn({ 4 }, 4):totable())
  end)

  it("does arithmetic with broadcasting and numbers", function()
    local a = tk.tensor { { 1, 2 }, { 3, 4 } }
    local b = tk.tensor { 10, 20 }
    -- small integers: exact in any kernel and order
    assert.same({ { 11, 22 }, { 13, 24 } }, (a + b):totable())
    assert.same({ { -9, -18 }, { -7, -16 } }, (a - b):totable())
    assert.same({ { 2, 4 }, { 6, 8 } }, (a * 2):totable())
    assert.same({ { 2, 4 }, { 6, 8 } }, (2 * a):totable())
    assert.same({ { 0, -1 }, { -2, -3 } }, (1 - a):totable())
    assert.same({ { -1, -2 }, { -3, -4 } }, (-a):totable())
    local q = (a / 4):totable()
    assert.truthy(close(q[1][1], 0.25) and close(q[2][2], 1))
    assert.same({ { 7, 10 }, { 15, 22 } }, a:matmul(a):totable())
    assert.same({ 10 }, a:sum():totable())
    assert.same({ 3, 7 }, a:sum(2):totable())
    assert.same({ 2, 3 }, a:mean(1):totable())
    assert.same({ { 0, 2 } }, tk.tensor({ { -1, 2 } }):relu():totable())
  end)

  it("computes gradients of leaves through ops", function()
    local w = tk.tensor({ { 1, 2 }, { 3, 4 } }):requires_grad(true)
    local x = tk.tensor { { 1, 1 } }
    local loss = (x:matmul(w)):square():sum()
    loss:backward()
    -- d/dW sum((xW)^2) = x^T * 2 xW ; xW = {4, 6}
    assert.same({ { 8, 12 }, { 8, 12 } }, w:grad():totable()) -- small integers: exact
  end)

  it("runs a tape once: a second backward is an error until tk.reset()", function()
    local x = tk.tensor({ 1 }):requires_grad(true)
    local loss = (x * x * x):sum()
    loss:backward()
    assert.same({ 3 }, x:grad():totable())
    -- it used to add the gradients again: 12, then 30
    local ok, err = pcall(loss.backward, loss)
    assert.is_false(ok)
    assert.truthy(err:find("backward: the tape of this context was already used; tk.reset() first", 1, true), err)
    assert.same({ 3 }, x:grad():totable())
    ok = pcall(function() return tk.current_context():backward(loss) end)
    assert.is_false(ok)
    tk.reset()
    loss = (x * x * x):sum()
    loss:backward()
    assert.same({ 3 }, x:grad():totable())
  end)

  it("releases context tensors on reset and says so", function()
    local t = tk.tensor { 1, 2 } * 2
    local kept = t:clone()
    tk.reset()
    assert.has_error(function() return t:totable() end,
      "bad argument #1 (tensor was released when its context was reset; use :clone() to keep a tensor across steps)")
    assert.same({ 2, 4 }, kept:totable())
  end)

  it("keeps contexts apart", function()
    local c1, c2 = tk.Context(), tk.Context()
    local a = c1:run(function() return tk.tensor { 1 } * 1 end)
    local b = c2:run(function() return tk.tensor { 1 } * 1 end)
    assert.has_error(function() return a + b end, "bad argument #2 (tensor belongs to another context than argument #1)")
  end)

  it("raises clear errors on bad arguments", function()
    assert.has_error(function() tk.tensor { { 1, 2 }, { 3 } } end,
      "bad argument #1 (ragged nested table: [2] has 1 entries, expected 2)")
    assert.has_error(function() tk.tensor { { 1, "x" } } end,
      "bad argument #1 (expected a number at [1][2], got string)")
    assert.has_error(function() tk.tensor({ 1.5 }, "int64") end,
      "bad argument #1 (int64 tensor needs integers; [1] is 1.5)")
    assert.has_error(function() tk.tensor({ 1 }, "float16") end,
      "bad argument #2 (unknown dtype 'float16'; expected 'float32' or 'int64')")
    assert.has_error(function() tk.zeros { 2, -1 } end,
      "bad argument #1 (shape entry 2 must be a non-negative integer, got -1)")
    local a = tk.tensor { { 1, 2, 3 } }
    local ok, err = pcall(function() return a:matmul(tk.tensor { { 1, 2 } }) end)
    assert.is_false(ok)
    assert.truthy(err:find("matmul", 1, true))
    assert.has_error(function() return a:activate("swish") end,
      "bad argument #2 to 'activate' (unknown activation 'swish'; known: " .. tk.core.names("activation") .. ")")
    assert.has_error(function() return a:get(1, 4) end, "bad argument #3 (index 4 out of range 1..3 for dimension 2)")
    assert.has_error(function() return tk.tensor({ 1 }):requires_grad(true):backward() end,
      "backward: this tensor was not computed by ops (it has no tape)")
    local ok2, err2 = pcall(function() return a + tk.tensor { 1, 2 } end)
    assert.is_false(ok2)
    assert.truthy(err2:find("add", 1, true))
  end)

  it("looks up embeddings and names the table for bad ids", function()
    local table_ = tk.tensor { { 1, 1 }, { 2, 2 }, { 3, 3 } }
    local ids = tk.tensor({ 2, 0 }, "int64")
    assert.same({ { 3, 3 }, { 1, 1 } }, tk.embedding_lookup(table_, ids, nil, "sum", "item_id"):totable())
    local bad = tk.tensor({ 3 }, "int64")
    local ok, err = pcall(tk.embedding_lookup, table_, bad, nil, "sum", "item_id")
    assert.is_false(ok)
    assert.truthy(err:find("embedding table 'item_id': id 3 out of range [0, 3)", 1, true))
  end)
end)
