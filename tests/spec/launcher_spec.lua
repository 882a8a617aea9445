-- The `towerkit` launcher (scripts/towerkit.c), run as a separate process.
-- The launcher is $TOWERKIT_BUILD/towerkit (default build/towerkit) under the repository
-- root, found from this file's path or else the current directory.

local function repo_root()
  local src = debug.getinfo(1, "S").source
  local dir = src:sub(1, 1) == "@" and src:sub(2):match("^(.*)/tests/spec/[^/]*$")
  if not dir or dir == "" then dir = "." end
  if dir:sub(1, 1) ~= "/" then
    local p = io.popen("cd '" .. dir .. "' && pwd")
    dir = p:read("*l") or dir
    p:close()
  end
  return dir
end

local ROOT = repo_root()
local BUILD = os.getenv("TOWERKIT_BUILD") or "build"
if BUILD:sub(1, 1) ~= "/" then BUILD = ROOT .. "/" .. BUILD end
local LAUNCHER = BUILD .. "/towerkit"

local files = require "tests.spec.helpers.files"
local q, slurp = files.q, files.slurp

local spit = files.write

local tmpfiles = {}
local function tmpname()
  local name = os.tmpname()
  tmpfiles[#tmpfiles + 1] = name
  return name
end

local function tmpdir()
  local p = io.popen("mktemp -d")
  local dir = p:read("*l")
  p:close()
  tmpfiles[#tmpfiles + 1] = dir
  return dir
end

local function cleanup()
  for _, name in ipairs(tmpfiles) do os.execute("rm -rf " .. q(name)) end
  tmpfiles = {}
end

-- Runs the launcher with `args` (a list of words, quoted here) and `opts`:
-- opts.input (text for stdin, else /dev/null), opts.env (a "NAME=value ..." prefix).
-- Returns stdout, stderr and the exit status.
local function run(args, opts)
  opts = opts or {}
  local f = io.open(LAUNCHER, "rb")
  if not f then error("the launcher is not built: " .. LAUNCHER .. " (run make)", 2) end
  f:close()
  local words = {}
  for i, a in ipairs(args) do words[i] = q(a) end
  local stdin = "/dev/null"
  if opts.input then
    stdin = tmpname()
    spit(stdin, opts.input)
  end
  return files.run_split(string.format("cd %s && %s %s %s <%s", q(ROOT), opts.env or "", q(LAUNCHER),
    table.concat(words, " "), q(stdin)))
end

local function script(text)
  local name = tmpname()
  spit(name, text)
  return name
end

local function lines(s)
  local t = {}
  for line in s:gmatch("([^\n]*)\n") do t[#t + 1] = line end
  return t
end

local function nonempty_lines(s)
  local t = {}
  for _, line in ipairs(lines(s)) do
    if line ~= "" then t[#t + 1] = line end
  end
  return t
end

describe("the towerkit launcher", function()
  after_each(cleanup)

  it("runs a script with arg and ... set as the standalone interpreter does", function()
    local path = script([[
      io.write(arg[0], "|", #arg, "|", arg[1], "|", arg[2], "|", tostring(arg[-1] ~= nil), "\n")
      io.write(select("#", ...), "|", table.concat({ ... }, ","), "\n")
    ]])
    local out, err, status = run({ path, "one", "two words" })
    assert.equal("", err)
    assert.equal(0, status)
    assert.same({ path .. "|2|one|two words|true", "2|one,two words" }, lines(out))
  end)

  it("runs -e code, alone or before a script", function()
    local out, err, status = run({ "-e", "print(6 * 7)" })
    assert.equal(0, status)
    assert.equal("", err)
    assert.equal("42\n", out)

    local path = script("print(x, ...)")
    out, _, status = run({ "-e", "x = 5", path, "a" })
    assert.equal(0, status)
    assert.equal("5\ta\n", out)
  end)

  it("reads the script from stdin with -", function()
    local out, _, status = run({ "-", "p", "q" }, { input = "print('stdin', arg[0], ...)\n" })
    assert.equal(0, status)
    assert.equal("stdin\t-\tp\tq\n", out)
  end)

  it("prints its version and LuaJIT's", function()
    local version = slurp(ROOT .. "/core/include/towerkit.h"):match('#define%s+TK_VERSION%s+"([^"]+)"')
    assert.truthy(version)
    local out, _, status = run({ "--version" })
    assert.equal(0, status)
    assert.truthy(out:find("towerkit " .. version .. " (LuaJIT ", 1, true), out)
  end)

  it("prints usage with --help and fails on an unknown option", function()
    local out, _, status = run({ "--help" })
    assert.equal(0, status)
    assert.truthy(out:find("usage: towerkit", 1, true))
    local _, err
    _, err, status = run({ "--no-such-option" })
    assert.equal(1, status)
    assert.truthy(err:find("no-such-option", 1, true))
  end)

  it("exits 1 with the message and a traceback on stderr when a script fails", function()
    local path = script("local function f() error('kaboom') end\nf()\n")
    local _, err, status = run({ path })
    assert.equal(1, status)
    assert.truthy(err:find("towerkit: ", 1, true), err)
    assert.truthy(err:find("kaboom", 1, true), err)
    assert.truthy(err:find("stack traceback", 1, true), err)

    _, err, status = run({ "-e", "x = = 1" })
    assert.equal(1, status)
    assert.truthy(err:find("towerkit: ", 1, true), err)

    _, err, status = run({ ROOT .. "/no/such/script.lua" })
    assert.equal(1, status)
    assert.truthy(err:find("no/such/script.lua", 1, true), err)
  end)

  it("passes os.exit's status through", function()
    local _, _, status = run({ "-e", "os.exit(3)" })
    assert.equal(3, status)
  end)

  it("puts <root>/lua first on package.path and preloads towerkit.core", function()
    local out, err, status = run({ "-e", [[
      local root = os.getenv("EXPECTED_ROOT")
      local prefix = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;"
      print(package.path:sub(1, #prefix) == prefix, type(package.preload["towerkit.core"]))
    ]] }, { env = "EXPECTED_ROOT=" .. q(ROOT) })
    assert.equal(0, status, err)
    assert.equal("true\tfunction\n", out)
  end)

  it("takes the root directory from TOWERKIT_ROOT", function()
    local dir = tmpdir()
    os.execute("mkdir -p " .. q(dir .. "/lua/tkfake"))
    spit(dir .. "/lua/tkfake/init.lua", "return 'fake module'\n")
    local out, err, status = run({ "-e", "print(require 'tkfake')" },
      { env = "TOWERKIT_ROOT=" .. q(dir) })
    assert.equal(0, status, err)
    assert.equal("fake module\n", out)
  end)

  it("runs a REPL on piped input: values print, errors do not stop it", function()
    local out, err, status = run({}, { input = '1+1\nx = 3\nx*2\nfunction f() error("boom") end\nf()\nx\n' })
    assert.equal(0, status)
    assert.same({ "2", "6", "3" }, nonempty_lines(out))
    assert.truthy(err:find("stdin:1: boom", 1, true), err)
    -- the user's own frames, not the C ones nor the REPL's wrapper
    assert.truthy(err:find("stack traceback:\n\tstdin:1: in function 'f'", 1, true), err)
    assert.falsy(err:find("[C]", 1, true), err)
  end)

  it("continues incomplete chunks in the REPL and prints several values", function()
    local input = table.concat({
      "for i = 1, 2 do",
      "  print('line', i)",
      "end",
      "('ab'):rep(",
      "  2)",
      "1, nil, 'x'",
      "local t = setmetatable({}, { __tostring = function() return 'T!' end }); return t",
      "x = = 2",
      "'still here'",
      "",
    }, "\n")
    local out, err, status = run({}, { input = input })
    assert.equal(0, status)
    assert.same({ "line\t1", "line\t2", "abab", "1\tnil\tx", "T!", "still here" },
      nonempty_lines(out))
    assert.truthy(err:find("stdin:1:", 1, true), err)
  end)

  it("lets a script require towerkit", function()
    local path = script("local tk = require 'towerkit'\nprint(type(tk))\n")
    local out, err, status = run({ path })
    assert.equal("", err)
    assert.equal(0, status)
    assert.equal("table\n", out)
  end)

  it("has tk = require 'towerkit' as a global in the REPL", function()
    local out, err, status = run({}, { input = "type(tk)\n" })
    assert.equal(0, status)
    assert.equal("", err)
    assert.same({ "table" }, nonempty_lines(out))
  end)
end)
