-- Runs the example scripts end to end through the launcher.
local build = os.getenv("TOWERKIT_BUILD") or "build"

local run = require("tests.spec.helpers.files").run -- output (with "exit=N"), status

describe("examples", function()
  it("train_mlp.lua fits its function", function()
    local out = run(build .. "/towerkit examples/train_mlp.lua")
    assert.truthy(out:find("exit=0", 1, true), out)
    local mse = tonumber(out:match("step 300  mse ([%d.]+)"))
    assert.truthy(mse and mse < 0.01, out)
  end)

  it("two_tower_synthetic.lua beats the popularity baseline by a wide margin", function()
    local out = run(build .. "/towerkit examples/two_tower_synthetic.lua 40000")
    assert.truthy(out:find("exit=0", 1, true), out)
    local ours = tonumber(out:match("two%-tower %(towerkit%)%s+([%d.]+)"))
    local pop = tonumber(out:match("popularity baseline%s+([%d.]+)"))
    assert.truthy(ours and pop and ours > 2 * pop, out)
  end)

  it("movielens.lua converts, trains and evaluates a MovieLens-format folder", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    assert.truthy(run("luajit tests/spec/helpers/fake_movielens.lua " .. dir):find("exit=0", 1, true))
    local out = run("TMPDIR=" .. dir .. " " .. build .. "/towerkit examples/movielens.lua " .. dir .. " 2")
    os.execute("rm -rf " .. dir)
    assert.truthy(out:find("exit=0", 1, true), out)
    assert.truthy(out:find("movielens: 11700 training interactions, 300 test users", 1, true), out)
    assert.truthy(out:match("two%-tower %(towerkit%)%s+[%d.]+%s+[%d.]+"), out)
    local usage = run(build .. "/towerkit examples/movielens.lua")
    assert.truthy(usage:find("usage: towerkit examples/movielens.lua ML100K_DIR", 1, true), usage)
  end)
end)
