-- Tensors and blocks that Lua collects between a forward pass and its backward pass (or
-- between blocks) stay alive for the context that uses them. Run under make test-asan,
-- these would report a use after free otherwise.
local tk = require "towerkit"
local core = tk.core

describe("lifetimes", function()
  before_each(function() tk.reset() end)

  it("keeps the inputs of a tape alive until backward", function()
    local tbl = tk.randn({ 100, 8 }, 1):requires_grad(true)
    local keep = tbl
    local loss = tk.embedding_lookup(tbl, tk.tensor({ 1, 2, 3, 4 }, "int64")):sum()
    tbl = nil
    collectgarbage()
    collectgarbage()
    loss:backward()
    -- d sum / d table: ones on the looked-up rows (ids 1 to 4), zeros elsewhere (exact)
    local g = keep:grad():totable()
    for row = 1, 6 do
      local want = (row >= 2 and row <= 5) and 1 or 0
      assert.same({ want, want, want, want, want, want, want, want }, g[row])
    end
    tk.reset() -- a tape runs once: the next backward needs a new one
    -- a block collected between its forward and the backward (nothing of it is kept
    -- here: its weights are read as copies) still gives the backward its weights:
    -- d sum(x W + b) / dx[i][j] = sum_k W[j][k]
    local d = tk.Dense(3, { seed = 1 })
    local x = tk.ones({ 2, 4 }):requires_grad(true)
    local l2 = d(x):sum()
    local w = d:get_weights()[1]:totable() -- a copy of the kernel [4, 3], built by the forward
    d = nil
    collectgarbage()
    collectgarbage()
    l2:backward()
    local gx = x:grad():totable()
    for i = 1, 2 do
      for j = 1, 4 do
        local want = w[j][1] + w[j][2] + w[j][3]
        assert.is_true(math.abs(gx[i][j] - want) <= 1e-6, ("dx[%d][%d] = %.9g, want %.9g"):format(i, j, gx[i][j], want))
      end
    end
  end)

  it("keeps a Lua block's result alive through the rest of the graph", function()
    local a = core.lua_block("a", function() return tk.full({ 2, 3 }, 7) end)
    local b = core.lua_block("b", function(x) collectgarbage(); collectgarbage(); return x end)
    local out = core.parallel("p", { "a", "b" }, { a, b })(tk.ones { 2, 3 })
    assert.same({ 7, 7, 7 }, out.a:totable()[1])
  end)

  it("rejects shapes whose size overflows", function()
    local ok, err = pcall(function() return tk.ones({ 2, 3 }):reshape(-1, 8358273724747015, 8650942201417911) end)
    assert.is_false(ok)
    assert.truthy(err:find("reshape: shape [-1, 8358273724747015, 8650942201417911] is too large", 1, true), err)
  end)
end)
