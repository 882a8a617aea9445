-- The Lua binding (towerkit.core) at its edges: strings it keeps pointers to, numbers
-- it converts to integers, options tables it may not get, errors it raises, and the
-- small helpers the Lua layer uses (check_ids, is_activation).
local tk = require "towerkit"
local core = tk.core

local files = require "tests.spec.helpers.files"
local tmpdir = files.tmpdir

local write = files.write

local function err_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok)
  return tostring(err)
end

describe("the binding", function()
  local dir
  setup(function() dir = tmpdir() end)
  teardown(function() os.execute("rm -rf " .. dir) end)
  before_each(function() tk.reset() end)

  describe("keeps only strings it can anchor", function()
    it("csv_open rejects a column spec whose name or type is not a string", function()
      write(dir .. "/n.csv", "1,b\n3,4\n")
      local err = err_of(core.csv_open, dir .. "/n.csv", { { name = 1, type = "int64" } })
      assert.truthy(err:find("spec 1 needs a string name and a string type, got number and string", 1, true), err)
      err = err_of(core.csv_open, dir .. "/n.csv", { { name = "b", type = "int64" }, { name = "1", type = 5 } })
      assert.truthy(err:find("spec 2 needs a string name and a string type, got string and number", 1, true), err)
      -- string names that look like numbers are fine
      local r = core.csv_open(dir .. "/n.csv", { { name = "1", type = "int64" } })
      local cols, n = r:next()
      assert.equal(1, n)
      assert.same({ 3 }, cols["1"]:totable())
      r:close()
    end)

    it("csv_open takes a list's max_count as an integer count up to 2^53 only", function()
      write(dir .. "/l.csv", "a\n1|2\n")
      for _, bad in ipairs { 1.5, -1, 2 ^ 60, 0 / 0, "x" } do
        local err = err_of(core.csv_open, dir .. "/l.csv", { { name = "a", type = "int64_list", max_count = bad } })
        assert.truthy(err:find("column 'a': max_count must be a count >= 0", 1, true), tostring(bad) .. ": " .. err)
      end
      core.csv_open(dir .. "/l.csv", { { name = "a", type = "int64_list", max_count = 2 ^ 53 } }):close()
    end)

    it("safetensors_write rejects a name that is not a string", function()
      local err = err_of(core.safetensors_write, dir .. "/x.safetensors", { 7 }, { tk.ones { 2 } })
      assert.truthy(err:find("safetensors_write: name 1 is not a string (got number)", 1, true), err)
      core.safetensors_write(dir .. "/x.safetensors", { "7" }, { tk.ones { 2 } })
      assert.same({ 1, 1 }, core.safetensors_read(dir .. "/x.safetensors")["7"]:totable())
    end)

    it("checkpoint_read rejects a file name that is not a string", function()
      local block = tk.Dense(2, { input_dim = 3, seed = 1 })
      core.checkpoint_write(dir .. "/ck", block, { ["notes.txt"] = "hello" })
      local err = err_of(core.checkpoint_read, dir .. "/ck", { "notes.txt", 42 })
      assert.truthy(err:find("file name 2 is not a string, got number", 1, true), err)
      local b, files = core.checkpoint_read(dir .. "/ck", { "notes.txt", "absent.txt" })
      assert.equal("hello", files["notes.txt"])
      assert.is_nil(files["absent.txt"])
      assert.same(block:param("kernel"):totable(), b:param("kernel"):totable()) -- through a file: bitwise
      err = err_of(core.checkpoint_read, dir .. "/nope", { "notes.txt" })
      assert.truthy(err:find("/nope': no such directory", 1, true), err)
    end)
  end)

  describe("converts numbers to integers only when they fit", function()
    it("int64 tensors refuse values outside the int64 range", function()
      assert.has_error(function() tk.tensor({ 1e30 }, "int64") end,
        "bad argument #1 ([1] is 1e+30, outside the int64 range)")
      assert.has_error(function() tk.tensor({ { 1 }, { -1e19 } }, "int64") end,
        "bad argument #1 ([2][1] is -1e+19, outside the int64 range)")
      assert.same({ 2 ^ 53, -(2 ^ 53) }, tk.tensor({ 2 ^ 53, -(2 ^ 53) }, "int64"):totable())
      local t = tk.zeros({ 1 }, "int64")
      assert.has_error(function() t:set(1e300, 1) end,
        "bad argument #2 to 'set' (an int64 tensor needs an integer in the int64 range, got 1e+300)")
      assert.has_error(function() t:set(0.5, 1) end,
        "bad argument #2 to 'set' (an int64 tensor needs an integer in the int64 range, got 0.5)")
    end)

    it("shapes, reshape, index_select and seeds refuse huge or fractional numbers", function()
      assert.has_error(function() tk.zeros { 1e30 } end, "bad argument #1 (shape entry 1 is too large: 1e+30)")
      assert.has_error(function() tk.zeros(2, 1e30) end, "bad argument #2 (dimension is too large: 1e+30)")
      local x = tk.ones { 2, 3 }
      local err = err_of(function() return x:reshape { 1e30, 1 } end)
      assert.truthy(err:find("shape entry 1 must be an integer, got 1e+30", 1, true), err)
      err = err_of(function() return x:reshape(6.5) end)
      assert.truthy(err:find("a dimension must be an integer of magnitude at most 2^53, got 6.5", 1, true), err)
      assert.same({ 3, 2 }, x:reshape { 3, 2 }:shape())
      local idx = tk.tensor({ 0, 1 }, "int64")
      err = err_of(core.index_select, x, idx, 1e30)
      assert.truthy(err:find("first must be an integer of magnitude at most 2^53, got 1e+30", 1, true), err)
      err = err_of(core.index_select, x, idx, 0, -1e300)
      assert.truthy(err:find("count must be an integer", 1, true), err)
      assert.same({ 1, 3 }, core.index_select(x, idx, 1, 1):shape())
      err = err_of(tk.randn, { 2 }, 1e300)
      assert.truthy(err:find("the seed must be an integer", 1, true), err)
      assert.same(tk.randn({ 2 }, -1):totable(), tk.randn({ 2 }, -1):totable()) -- one seed: bitwise
    end)

    it("integer options refuse values beyond 2^53", function()
      assert.has_error(function() core.dense("d", 3, { seed = 1e30 }) end,
        "option 'seed' must be an integer of magnitude at most 2^53, got 1e+30")
      assert.has_error(function() core.dense("d", 3, { ["in"] = -1e300 }) end,
        "option 'in' must be an integer of magnitude at most 2^53, got -1e+300")
      assert.has_error(function() core.dense("d", 3, { seed = 0.5 }) end, "option 'seed' must be an integer, got 0.5")
      assert.equal(3, core.dense("d", 3, { seed = -7, ["in"] = 2 }):param("kernel"):shape()[2])
    end)
  end)

  it("core.dense works without an options table", function()
    local d = core.dense("d", 3)
    assert.equal("dense", d:kind())
    assert.same({ 2, 3 }, d(tk.ones { 2, 4 }):shape())
    assert.equal("d", core.dense("d", 0):name())
  end)

  it("batch norm accepts momentum 1, which keeps the running statistics fixed", function()
    local bn = tk.BatchNormalization { momentum = 1, dim = 2 }
    local before = bn:param("moving_mean"):totable()
    local ctx = tk.Context()
    ctx:train(true)
    bn(tk.tensor { { 1, 2 }, { 3, 8 } }, ctx)
    ctx:apply_updates()
    -- exact: momentum 1 gives 1 * m + 0 * batch; momentum 0 the batch's mean of small integers
    assert.same(before, bn:param("moving_mean"):totable())
    assert.same({ 1, 1 }, bn:param("moving_variance"):totable())
    -- momentum 0 takes the batch statistics at once
    local bn0 = tk.BatchNormalization { momentum = 0, dim = 2 }
    local ctx0 = tk.Context()
    ctx0:train(true)
    bn0(tk.tensor { { 1, 2 }, { 3, 8 } }, ctx0)
    ctx0:apply_updates()
    assert.same({ 2, 5 }, bn0:param("moving_mean"):totable())
    assert.has_error(function() tk.BatchNormalization { momentum = 1.5 } end,
      "option 'momentum' must be in [0, 1], got 1.5")
    assert.has_error(function() tk.BatchNormalization { momentum = -0.1 } end,
      "option 'momentum' must be in [0, 1], got -0.1")
  end)

  it("parameters lists paths, tensors and trainable flags", function()
    local bn = tk.BatchNormalization { dim = 2, name = "bn" }
    local all, trainable = bn:parameters(false), bn:parameters(false, true)
    local paths = {}
    for i, p in ipairs(all) do
      paths[i] = p[1] .. (p.trainable and "+" or "-")
      assert.is_true(core.is_tensor(p[2]))
    end
    assert.same({ "bn/gamma+", "bn/beta+", "bn/moving_mean-", "bn/moving_variance-" }, paths)
    assert.equal(2, #trainable)
    assert.same({}, tk.L2Norm():parameters())
  end)

  it("a forward that raises inside a Lua block leaves later forwards working", function()
    local inner = tk.Dense(2, { input_dim = 2, seed = 3 })
    local calls = 0
    local lb = tk.LuaBlock(function(x)
      calls = calls + 1
      if calls == 1 then return inner(tk.ones { 1, 5 }) end -- raises: wrong width
      return inner(x)
    end)
    local err = err_of(lb, tk.ones { 1, 2 })
    assert.truthy(err:find("input has 5 features, expected 2", 1, true), err)
    assert.same({ 1, 2 }, lb(tk.ones { 1, 2 }):shape())
    local out, trace = lb:trace(tk.ones { 1, 2 })
    assert.same({ 1, 2 }, out:shape())
    assert.truthy(#trace >= 1)
  end)

  describe("json round trips exactly or refuses (issue 12)", function()
    it("writes integers up to 2^53 as integers and other numbers with the shortest exact text", function()
      assert.equal("9007199254740991", core.json_encode(9007199254740991))
      assert.equal("-9007199254740992", core.json_encode(-9007199254740992))
      assert.equal("[0.1,0.30000000000000004,1e+300,-0.5]", core.json_encode { 0.1, 0.1 + 0.2, 1e300, -0.5 })
      for _, x in ipairs { 1 / 3, 2 ^ 60 + 2 ^ 8, 123456.789, 5e-324, 1.7976931348623157e308, 0.1 + 0.2 } do
        assert.equal(x, core.json_decode(core.json_encode(x)))
      end
    end)
    it("refuses a non-finite number, naming its key path", function()
      assert.has_error(function() core.json_encode { a = { b = { 1, 1 / 0 } } } end,
        "json_encode: a.b[2] is not a finite number (inf)")
    end)
    it("decodes strictly: leading zeros, depth, numbers too large, naming the input", function()
      local v, err = core.json_decode("[0100]", "x.json")
      assert.is_nil(v)
      assert.equal("x.json: invalid JSON at line 1 (byte 2): a number with a leading zero", err)
      v, err = core.json_decode('{"a":\n -012}')
      assert.equal("invalid JSON at line 2 (byte 8): a number with a leading zero", err)
      assert.same({ 0, -0.5, 100, 10 }, core.json_decode("[0, -0.5, 1e2, 1E+01]"))
      v, err = core.json_decode(string.rep("[", 1001) .. string.rep("]", 1001), "deep.json")
      assert.equal("deep.json: invalid JSON at line 1 (byte 1001): nesting deeper than 1000 levels", err)
      assert.truthy(core.json_decode(string.rep("[", 1000) .. string.rep("]", 1000)))
      v, err = core.json_decode('{"schema": {"feature": [{"freq_threshold": 1e999}]}}', "dir/config.json")
      assert.equal("dir/config.json: schema.feature[0].freq_threshold is a number too large for a double (inf)", err)
    end)
  end)

  describe("raises clear errors", function()
    it("json_encode: mixed keys, sparse arrays, deep nesting", function()
      assert.has_error(function() core.json_encode { 1, 2, x = 3 } end,
        "json_encode: value mixes string and non-string keys")
      assert.has_error(function() core.json_encode { a = { [1] = 1, [3] = 3 } } end,
        "json_encode: a is a table with non-sequential integer keys")
      local deep = {}
      local t = deep
      for _ = 1, 1050 do
        t.x = {}
        t = t.x
      end
      assert.has_error(function() core.json_encode(deep) end,
        "json_encode: nesting deeper than 1000 levels (a cycle?)")
      local cycle = {}
      cycle.self = cycle
      assert.has_error(function() core.json_encode(cycle) end,
        "json_encode: nesting deeper than 1000 levels (a cycle?)")
      assert.equal('{"a":[1,2],"b":"x"}', core.json_encode { b = "x", a = { 1, 2 } })
    end)

    it("cat_rows: entries of another dtype or row shape", function()
      assert.has_error(function() core.cat_rows { tk.ones { 2, 3 }, tk.zeros({ 1, 3 }, "int64") } end,
        "cat_rows: entry 2 has another dtype or row shape than entry 1")
      assert.has_error(function() core.cat_rows { tk.ones { 2, 3 }, tk.ones { 1, 4 } } end,
        "cat_rows: entry 2 has another dtype or row shape than entry 1")
      assert.same({ 3, 3 }, core.cat_rows({ tk.ones { 2, 3 }, tk.zeros { 1, 3 } }):shape())
    end)

    it("tensors and blocks used after their __gc ran", function()
      local t = tk.ones { 2 }
      getmetatable(t).__gc(t)
      assert.has_error(function() t:shape() end, "bad argument #1 (tensor has been freed)")
      assert.equal("tensor (freed)", tostring(t))
      local b = tk.Dense(2)
      getmetatable(b).__gc(b)
      assert.has_error(function() b:name() end, "bad argument #1 (block has been freed)")
    end)
  end)

  describe("helpers for the Lua layer", function()
    it("check_ids finds the first id out of range and its row", function()
      local ids = tk.tensor({ 3, 0, 9, 12 }, "int64")
      assert.is_nil(core.check_ids(ids, 13))
      assert.same({ 4, 12 }, { core.check_ids(ids, 10) })
      assert.same({ 1, 3 }, { core.check_ids(ids, 3) })
      assert.same({ 2, -1 }, { core.check_ids(tk.tensor({ 0, -1 }, "int64"), 5) })
      -- a list column: rows {1, 2}, {}, {7}, {0, 8}
      local values, offsets = tk.tensor({ 1, 2, 7, 0, 8 }, "int64"), tk.tensor({ 0, 2, 2, 3, 5 }, "int64")
      assert.same({ 3, 7 }, { core.check_ids(values, 5, offsets) })
      assert.same({ 4, 8 }, { core.check_ids(values, 8, offsets) })
      assert.is_nil(core.check_ids(values, 9, offsets))
      assert.has_error(function() core.check_ids(tk.ones { 2 }, 3) end, "check_ids: the ids must be int64, got float32")
      assert.has_error(function() core.check_ids(values, 9, tk.tensor({ 0, 2 }, "int64")) end,
        "check_ids: offsets must end at the number of values (5), got 2")
    end)

    it("ragged_split and ragged_join name the entries of a list feature as the core does", function()
      assert.same({ "genres", "values" }, { core.ragged_split("genres__values") })
      assert.same({ "genres", "offsets" }, { core.ragged_split("genres__offsets") })
      assert.is_nil(core.ragged_split("genres"))
      assert.equal("genres__values", core.ragged_join("genres", "values"))
      assert.equal("genres__offsets", core.ragged_join("genres", "offsets"))
      assert.has_error(function() core.ragged_join("genres", "ids") end)
    end)

    it("is_activation knows the core's activations", function()
      assert.is_true(core.is_activation("relu"))
      assert.is_true(core.is_activation("linear"))
      assert.is_false(core.is_activation("nope"))
      assert.is_false(core.is_activation(1))
      assert.is_false(core.is_activation(nil))
    end)
  end)
end)

describe("retrieval binding arguments", function()
  local tk = require "towerkit"
  it("range-checks k, buckets and seeds before casting", function()
    assert.has_error(function() tk.core.topk(tk.ones { 2, 3 }, tk.ones { 4, 3 }, 1e30) end,
      "bad argument #3 (k must be an integer of magnitude at most 2^53, got 1e+30)")
    assert.has_error(function() tk.core.topk(tk.ones { 2, 3 }, tk.ones { 4, 3 }, 0) end,
      "bad argument #3 to 'topk' (k must be a positive integer)")
    assert.has_error(function() tk.core.freq_estimator(1.5, 0.1) end,
      "bad argument #1 (buckets must be an integer of magnitude at most 2^53, got 1.5)")
  end)
end)
