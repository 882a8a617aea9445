-- help(x) and docs/api.md: every public name has an entry, api.md is the generated text.
local tk = require "towerkit"
local doc = require "towerkit.doc"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function help_text(x)
  local t, err = doc.lookup(x)
  return t or err
end

describe("help", function()
  it("has an entry for every public name and no entry for a name that is gone", function()
    local missing, stale = doc.missing()
    assert.same({}, missing)
    assert.same({}, stale)
    assert.is_true(#doc.public() > 250)
  end)

  it("lists every public class among the names it checks", function()
    local names = {}
    for _, p in ipairs(doc.public()) do names[p.name] = true end
    for _, n in ipairs { "tk.Dense", "tk.data.synthetic", "tk.optim.Adam", "Block:summary", "Tensor:matmul",
      "TwoTowerModel:fit", "Schema:select_by_tag", "ColumnSchema:with_tags", "Dataset:batches", "History:to_csv",
      "History:plot", "tk.plot.recall_at_k" } do
      assert.is_true(names[n] == true, n)
    end
  end)

  it("prints signature, options with defaults, the Merlin name and an example", function()
    local t = help_text(tk.MLPBlock)
    assert.truthy(t:find("tk.MLPBlock(dimensions [, opts]) -> Block", 1, true), t)
    assert.truthy(t:find("activation = \"relu\"", 1, true), t)
    assert.truthy(t:find("Merlin: mm.MLPBlock", 1, true), t)
    assert.truthy(t:find("Example:", 1, true), t)
    -- a method, by name or by value, and a method name alone
    assert.truthy(help_text("TwoTowerModel:fit"):find("batch_size = 1024", 1, true))
    assert.truthy(help_text(tk.Block.count_params):find("block:count_params()", 1, true))
    local several = help_text("summary") -- Block:summary and History:summary
    assert.truthy(several:find("Block:summary", 1, true) and several:find("History:summary", 1, true), several)
    assert.truthy(help_text("to_top_k_encoder"):find("model:to_top_k_encoder", 1, true))
    assert.truthy(help_text("Dense"):find("tk.Dense(units", 1, true))
  end)

  it("describes a value by its class, with its methods", function()
    local t = help_text(tk.ones { 2 })
    assert.truthy(t:find("Methods", 1, true), t)
    assert.truthy(t:find("matmul", 1, true), t)
    assert.truthy(help_text(tk.Dense(2)):find("count_params", 1, true))
  end)

  it("lists the topics with no argument and says when there is no topic", function()
    local t = help_text()
    assert.truthy(t:find("TwoTowerModel methods", 1, true), t)
    assert.truthy(t:find("MLPBlock", 1, true), t)
    assert.truthy(help_text("no_such_thing_at_all"):find("no topic", 1, true))
  end)

  it("tk.help prints", function()
    local printed
    local old = _G.print
    _G.print = function(s) printed = s end
    tk.help("tk.Dense")
    _G.print = old
    assert.truthy(printed:find("tk.Dense(units", 1, true))
  end)
end)

describe("docs/api.md", function()
  it("is the text scripts/gen-api-doc.lua generates from the entries (make docs)", function()
    local tmp = os.tmpname()
    local chunk = assert(loadfile("scripts/gen-api-doc.lua"))
    chunk(tmp)
    local fresh = read(tmp)
    os.remove(tmp)
    assert.is_true(read("docs/api.md") == fresh, "docs/api.md is stale: run make docs")
    assert.truthy(fresh:find("### `TwoTowerModel:fit`", 1, true))
  end)
end)
