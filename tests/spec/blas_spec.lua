-- The BLAS kernel (towerkit.h, "BLAS kernel"): tk.blas_info(), the launcher's re-exec
-- with the best OPENBLAS_CORETYPE, and the warning on the first model load. These hold
-- on any x86-64 CPU: they check relations between kernel and best, not names.
--
-- An OpenBLAS that does not know the CPU is played by a preloaded library
-- (helpers/fake_corename.c, compiled here) that reports Prescott while
-- OPENBLAS_CORETYPE is unset, or always with FAKE_CORENAME=always.
local tk = require "towerkit"
local files = require "tests.spec.helpers.files"

local BUILD = os.getenv("TOWERKIT_BUILD") or "build"
local LAUNCHER = BUILD .. "/towerkit"

local q = files.q

-- Runs a shell command line; returns stdout, stderr and the exit status.
local run = files.run_split
local tmp

-- A launcher command line with environment changes `env` ("-u NAME" words, then "NAME=value"
-- words for env(1)); the script is read from stdin, which the re-exec must keep.
local function launcher(env, script, args)
  local f = assert(io.open(tmp .. "/script.lua", "wb"))
  f:write(script)
  f:close()
  return string.format("env %s timeout 120 %s - %s <%s", env, q(LAUNCHER), args or "", q(tmp .. "/script.lua"))
end

-- Prints "kernel best below_best user_set OPENBLAS_CORETYPE TOWERKIT_BLAS_REEXEC args...".
local INFO = [[
local i = require("towerkit").blas_info()
print(i.kernel, i.best, i.below_best, i.user_set, os.getenv("OPENBLAS_CORETYPE"),
      os.getenv("TOWERKIT_BLAS_REEXEC"), ...)
]]

local function fields(line)
  local t = {}
  for w in line:gmatch("[^\t\n]+") do t[#t + 1] = w end
  return t
end

local WARNING = "towerkit: OpenBLAS runs its "

local function count(s, needle)
  local n, at = 0, 1
  while true do
    local i = s:find(needle, at, true)
    if not i then return n end
    n, at = n + 1, i + #needle
  end
end

-- LD_PRELOAD for the fake OpenBLAS name: after the sanitizer runtimes `make test-asan`
-- preloads, which must come first.
local function preload(lib)
  local pre = os.getenv("LD_PRELOAD")
  return q((pre and pre ~= "" and pre .. " " or "") .. lib)
end

describe("BLAS kernel", function()
  local fake, best
  setup(function()
    local p = io.popen("mktemp -d")
    tmp = p:read("*l")
    p:close()
    fake = tmp .. "/fake_corename.so"
    -- the compiler must not inherit the sanitizer preload of `make test-asan`
    local _, err, status = run("env -u LD_PRELOAD cc -shared -fPIC -o " .. q(fake) .. " tests/spec/helpers/fake_corename.c -ldl")
    assert(status == 0, err)
    local _, err2, status2 = run(LAUNCHER .. " tests/spec/helpers/tiny_model.lua " .. q(tmp .. "/model"))
    assert(status2 == 0, err2)
    best = tk.blas_info().best
  end)

  teardown(function()
    if tmp then os.execute("rm -rf " .. q(tmp)) end
  end)

  it("tk.blas_info() describes the kernel, the best one and the threads", function()
    local i = tk.blas_info()
    for _, k in ipairs { "kernel", "best", "cpu", "advice" } do assert.equal("string", type(i[k]), k) end
    for _, k in ipairs { "below_best", "user_set" } do assert.equal("boolean", type(i[k]), k) end
    assert.is_true(#i.kernel > 0 and #i.best > 0 and #i.cpu > 0)
    assert.equal(tk.get_num_threads(), i.threads)
    assert.is_true(i.blas_threads >= 1)
    assert.equal(i.below_best, i.advice ~= "")
    local set, ours = os.getenv("OPENBLAS_CORETYPE"), os.getenv("TOWERKIT_BLAS_REEXEC")
    assert.equal(set ~= nil and (ours == nil or ours:lower() ~= set:lower()), i.user_set)
  end)

  it("never overrides an OPENBLAS_CORETYPE the user set", function()
    local out, err, status = run(launcher("-u TOWERKIT_BLAS_REEXEC OPENBLAS_CORETYPE=Prescott", INFO))
    assert.equal(0, status, err)
    local f = fields(out)
    assert.same({ "Prescott", best }, { f[1], f[2] })
    assert.equal(tostring(best:lower() ~= "prescott"), f[3])
    assert.same({ "true", "Prescott" }, { f[4], f[5] })
    assert.equal("nil", f[6]) -- print(nil)
  end)

  it("runs a kernel not below best when OPENBLAS_CORETYPE is unset", function()
    local out, err, status = run(launcher("-u OPENBLAS_CORETYPE -u TOWERKIT_BLAS_REEXEC", INFO))
    assert.equal(0, status, err)
    local f = fields(out)
    assert.same({ best, "false", "false" }, { f[2], f[3], f[4] })
  end)

  it("re-executes with the best kernel where OpenBLAS falls back to Prescott", function()
    local env = "-u OPENBLAS_CORETYPE -u TOWERKIT_BLAS_REEXEC LD_PRELOAD=" .. preload(fake)
    local out, err, status = run(launcher(env, INFO, "a 'b c'"))
    assert.equal(0, status, err)
    assert.equal(1, count(out, "\n"), out) -- the script ran once, from the stdin the re-exec kept
    local f = fields(out)
    if best:lower() == "prescott" then -- nothing better: no re-exec
      assert.same({ "Prescott", "Prescott", "false", "false", "nil", "nil", "a", "b c" }, f)
    else
      assert.same({ best, best, "false", "false", best, best, "a", "b c" }, f)
    end
    assert.equal("", err)
  end)

  it("does not loop when OpenBLAS ignores the name, and the first load warns", function()
    if best:lower() == "prescott" then return end -- nothing better to ask for
    local env = "-u OPENBLAS_CORETYPE -u TOWERKIT_BLAS_REEXEC FAKE_CORENAME=always LD_PRELOAD=" .. preload(fake)
    local out, err, status = run(launcher(env, INFO .. "require('towerkit').load(" .. q(tmp .. "/model") .. ")"))
    assert.equal(0, status, err)
    local f = fields(out)
    assert.same({ "Prescott", best, "true", "false", best, best }, f)
    assert.equal(1, count(err, WARNING), err)
    assert.truthy(err:find("ignored OPENBLAS_CORETYPE=" .. best, 1, true), err)
  end)

  it("warns once per process on model load under a weaker kernel, not with TOWERKIT_QUIET_BLAS=1", function()
    local dir = q(tmp .. "/model")
    local script = "local tk = require 'towerkit'\ntk.load(" .. dir .. ")\ntk.load(" .. dir .. ")\n" ..
      "tk.Model.load(" .. dir .. ")\nprint('loaded')\n"
    local out, err, status = run(launcher("-u TOWERKIT_QUIET_BLAS OPENBLAS_CORETYPE=Prescott", script))
    assert.equal(0, status, err)
    assert.equal("loaded\n", out)
    if best:lower() == "prescott" then
      assert.equal("", err)
    else
      assert.equal(1, count(err, WARNING), err)
      assert.truthy(err:find(WARNING .. "Prescott kernels; this CPU supports " .. best, 1, true), err)
      assert.truthy(err:find("OPENBLAS_CORETYPE=" .. best, 1, true), err)
    end
    out, err, status = run(launcher("OPENBLAS_CORETYPE=Prescott TOWERKIT_QUIET_BLAS=1", script))
    assert.equal(0, status, err)
    assert.equal("loaded\n", out)
    assert.equal("", err)
    -- The best kernel: nothing to say.
    out, err, status = run(launcher("-u TOWERKIT_QUIET_BLAS OPENBLAS_CORETYPE=" .. best, script))
    assert.equal(0, status, err)
    assert.equal("", err)
  end)
end)
