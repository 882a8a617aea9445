-- The REPL's Lua side (towerkit.repl): completion candidates and cleaned tracebacks.
-- The launcher driven through a pseudo-terminal is in repl_tty_spec.lua.
local tk = require "towerkit"
local repl = require "towerkit.repl"

local function has(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

describe("repl.complete", function()
  local env = setmetatable({ tk = tk, answer = 42, t = { alpha = 1, beta = 2, [3] = "x" } }, { __index = _G })

  it("completes tk fields after a dot", function()
    assert.same({ "tk.TwoTowerBlock", "tk.TwoTowerModel" }, repl.complete("tk.Two", nil, env))
    assert.same({ "tk.data.synthetic" }, repl.complete("tk.data.synt", nil, env))
  end)

  it("completes globals, keywords and their prefixes", function()
    local c = repl.complete("ans", nil, env)
    assert.same({ "answer" }, c)
    assert.is_true(has(repl.complete("pr", nil, env), "print"))   -- through the env's __index
    assert.is_true(has(repl.complete("fun", nil, env), "function"))
  end)

  it("completes the keys of a table (identifiers only)", function()
    assert.same({ "t.alpha", "t.beta" }, repl.complete("t.", nil, env))
  end)

  it("completes methods after a colon for tensors, blocks, models, schemas, datasets", function()
    env.x = tk.ones { 2, 2 }
    assert.same({ "x:reshape" }, repl.complete("x:resh", nil, env))
    assert.is_true(has(repl.complete("x:", nil, env), "x:relu")) -- defined in tensor.lua
    env.b = tk.MLPBlock { 4 }
    assert.is_true(has(repl.complete("b:", nil, env), "b:summary"))
    assert.is_true(has(repl.complete("b:count", nil, env), "b:count_params"))
    local T = tk.Tags
    env.s = tk.Schema {
      tk.ColumnSchema("user_id", { tags = { T.USER_ID, T.CATEGORICAL }, int_domain = { max = 9 } }),
      tk.ColumnSchema("item_id", { tags = { T.ITEM_ID, T.CATEGORICAL }, int_domain = { max = 9 } }),
    }
    assert.same({ "s:select_by_name", "s:select_by_tag" }, repl.complete("s:select_by", nil, env))
    env.d = tk.data.synthetic(env.s, 10, { seed = 1 })
    assert.is_true(has(repl.complete("d:", nil, env), "d:batches"))
    env.m = tk.TwoTowerModel(env.s, tk.MLPBlock { 4 })
    assert.is_true(has(repl.complete("m:", nil, env), "m:fit"))
    assert.is_true(has(repl.complete("m:", nil, env), "m:evaluate"))
    assert.same({ "m:compile" }, repl.complete("m:comp", nil, env))
    assert.is_false(has(repl.complete("m:", nil, env), "m:__index"))
  end)

  it("completes the word under the cursor only, inside a longer line", function()
    assert.same({ "tk.TwoTowerBlock", "tk.TwoTowerModel" }, repl.complete("print(tk.Two", nil, env))
    assert.same({ "tk.TwoTowerBlock", "tk.TwoTowerModel" }, repl.complete("tk.Two", 6, env))
    assert.same({}, repl.complete("1e", nil, env)) -- not a name
    assert.same({}, repl.complete("nothere.x", nil, env))
    assert.same({}, repl.complete("answer:", nil, env)) -- a number has no methods
  end)

  it("common_prefix", function()
    assert.equal("tk.TwoTower", repl.common_prefix { "tk.TwoTowerBlock", "tk.TwoTowerModel" })
    assert.equal("", repl.common_prefix {})
  end)
end)

describe("repl.clean_traceback", function()
  it("keeps the message and the user's frames, drops [C] and library frames", function()
    local tb = "stdin:1: boom\nstack traceback:\n\t[C]: in function 'error'\n" ..
      "\t.../lua/towerkit/util.lua:33: in function 'argerror'\n\tstdin:1: in function 'f'\n" ..
      "\tstdin:1: in main chunk\n\t[C]: at 0x5566"
    assert.equal("stdin:1: boom\nstack traceback:\n\tstdin:1: in function 'f'", repl.clean_traceback(tb))
    assert.equal("stdin:1: boom", repl.clean_traceback("stdin:1: boom\nstack traceback:\n\t[C]: at 0x1"))
  end)
end)
