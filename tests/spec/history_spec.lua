-- History:to_csv / to_json and tk.io.write_atomic: a write that fails raises an error
-- naming the path and leaves the previous file as it was, with no temporary file behind.
local tk = require "towerkit"
local files = require "tests.spec.helpers.files"

local BUILD = os.getenv("TOWERKIT_BUILD") or "build"

local q = files.q

local function history(epochs)
  local h = tk.History()
  for e = 1, epochs do h:add_epoch { epoch = e, loss = 1 / e, seconds = 0.5 } end
  return h
end

describe("History", function()
  it("writes CSV and JSON, replacing the previous file", function()
    local dir = files.tmpdir()
    local path = dir .. "/h.csv"
    files.write(path, "old\n")
    history(2):to_csv(path)
    assert.equal("epoch,loss,seconds\n1,1,0.5\n2,0.5,0.5\n", files.read(path))
    history(1):to_json(dir .. "/h.json")
    assert.same({ { epoch = 1, loss = 1, seconds = 0.5 } }, tk.json.decode(files.read(dir .. "/h.json")).epochs)
    assert.same({}, files.entries(dir, ".tmp"))
  end)

  it("raises an error naming the path when the directory is missing", function()
    local path = files.tmpdir() .. "/missing/h.csv"
    for _, method in ipairs { "to_csv", "to_json" } do
      local ok, err = pcall(history(1)[method], history(1), path)
      assert.is_false(ok)
      assert.truthy(err:find(path .. ": cannot create a temporary file in", 1, true), err)
      assert.truthy(err:find("No such file or directory", 1, true), err)
    end
  end)

  -- A disk that fills up midway: a child process whose file size limit (ulimit -f, in
  -- 512-byte blocks, SIGXFSZ ignored) stops the write, as ENOSPC would. The previous
  -- file must survive whole; before the atomic helper it was left empty.
  it("keeps the previous file when the disk fills up midway", function()
    local dir = files.tmpdir()
    local path = dir .. "/h.csv"
    history(3):to_csv(path)
    local before = files.read(path)
    local script = ([[
      package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
      package.cpath = %q .. "/lua/?.so;" .. package.cpath
      local tk = require "towerkit"
      local h = tk.History()
      for e = 1, 5000 do h:add_epoch { epoch = e, loss = 1 / e } end
      local ok, err = pcall(h.to_csv, h, %q)
      io.write(tostring(err))
      os.exit(ok and 0 or 3, true) -- closes the state: no leak report under make test-asan
    ]]):format(BUILD, path)
    local p = assert(io.popen("sh -c " .. q("trap '' XFSZ; ulimit -f 8; luajit -e " .. q(script) .. "; echo \" rc=$?\"")
      .. " 2>&1"))
    local out = p:read("*a")
    p:close()
    assert.truthy(out:find(" rc=3\n$"), out)
    assert.truthy(out:find(path .. ": write failed: File too large", 1, true), out)
    assert.equal(before, files.read(path))
    assert.same({}, files.entries(dir, ".tmp"))
  end)
end)

describe("tk.io.write_atomic", function()
  it("writes any bytes and checks its arguments", function()
    local dir = files.tmpdir()
    tk.io.write_atomic(dir .. "/b", "a\0b")
    assert.equal("a\0b", files.read(dir .. "/b"))
    assert.has_error(function() tk.io.write_atomic("", "x") end, "write_atomic: path must be a non-empty string, got string")
    assert.has_error(function() tk.io.write_atomic(dir .. "/c", 3) end,
      "write_atomic: " .. dir .. "/c: text must be a string, got number")
    assert.is_nil(files.read(dir .. "/c"))
  end)

  it("leaves a directory in the way as it was", function()
    local dir = files.tmpdir()
    os.execute("mkdir " .. q(dir .. "/d"))
    files.write(dir .. "/d/in", "kept")
    local ok, err = pcall(tk.io.write_atomic, dir .. "/d", "x")
    assert.is_false(ok)
    assert.truthy(err:find(dir .. "/d: cannot rename the temporary file into place: Is a directory", 1, true), err)
    assert.equal("kept", files.read(dir .. "/d/in"))
    assert.same({}, files.entries(dir, ".tmp"))
  end)
end)
