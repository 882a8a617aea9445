local tk = require "towerkit"
local util = require "towerkit.util"

describe("methods are defined once", function()
  it("a second definition of a Block method is an error naming both places", function()
    local ok, err = pcall(util.define, tk.Block, "copy", function() end, "block/weights.lua")
    assert.is_false(ok)
    assert.truthy(err:find("Block:copy is defined twice (block/configuration.lua and block/weights.lua)", 1, true), err)
    -- a C method counts too
    ok, err = pcall(util.define, tk.Block, "children", function() end, "block/calls.lua")
    assert.is_false(ok)
    assert.truthy(err:find("Block:children is defined twice (lua/binding/block.c and block/calls.lua)", 1, true), err)
  end)

  it("registering a topic whose method exists already fails and leaves the method as it was", function()
    local copy = tk.Block.copy
    local methods = util.methods("spec.lua")
    function methods:copy() end
    local ok, err = pcall(util.register, tk.Block, methods)
    assert.is_false(ok)
    assert.truthy(err:find("Block:copy is defined twice (block/configuration.lua and spec.lua)", 1, true), err)
    assert.equal(copy, tk.Block.copy)
  end)

  it("a name assigned twice in one file is an error", function()
    local methods = util.methods("block/x.lua")
    function methods:f() end
    local ok, err = pcall(function() methods.f = function() end end)
    assert.is_false(ok)
    assert.truthy(err:find("f is defined twice in block/x.lua", 1, true), err)
  end)

  it("a new class takes each name once", function()
    local C = util.class({ a = 1 }, "C", "c.lua")
    util.define(C, "b", 2, "d.lua")
    assert.equal(2, C.b)
    assert.has_error(function() util.define(C, "a", 3, "d.lua") end, "C:a is defined twice (c.lua and d.lua)")
    assert.has_error(function() util.define(C, "b", 3, "e.lua") end, "C:b is defined twice (d.lua and e.lua)")
  end)
end)
