-- The REPL driven through a pseudo-terminal (tmux, a private server per run): type,
-- press Tab, read the screen. Completion, help, printing and errors as a user sees them.
local files = require "tests.spec.helpers.files"
local sh, q = files.sh, files.q

local ROOT = sh("pwd"):gsub("%s+$", "")
local BUILD = os.getenv("TOWERKIT_BUILD") or "build"
if BUILD:sub(1, 1) ~= "/" then BUILD = ROOT .. "/" .. BUILD end
local SOCK = ("tk-repl-%d-%d"):format(os.time(), math.random(1e6))
local HOME = sh("mktemp -d"):gsub("%s+$", "")

local function tmux(args) return sh("tmux -L " .. SOCK .. " -f /dev/null " .. args) end
local function screen() return tmux("capture-pane -p -J -S - -t repl") end
local function wait_for(text, after)
  for _ = 1, 100 do
    local s = screen()
    local from = after and (s:find(after, 1, true) or #s) or 1
    if s:find(text, from, true) then return s end
    os.execute("sleep 0.05")
  end
  error(("timed out waiting for %q on the screen:\n%s"):format(text, screen()), 2)
end
local function type_text(s) tmux("send-keys -t repl -l " .. q(s)) end
local function key(k) tmux("send-keys -t repl " .. k) end
-- Enters a line and waits until its output has ended with a new, empty prompt (typing
-- ahead would let the terminal echo it in the middle of the output).
local function enter(line)
  local before = #screen():gsub("%s+$", "")
  type_text(line)
  key("Enter")
  for _ = 1, 200 do
    local s = screen():gsub("%s+$", "")
    if #s > before + #line and s:sub(-2) == "\n>" then return s end
    os.execute("sleep 0.05")
  end
  error("timed out waiting for the prompt after " .. line .. ":\n" .. screen():sub(-1500), 2)
end

describe("the REPL on a terminal", function()
  setup(function()
    assert.truthy(sh("tmux -V"):find("tmux", 1, true), "tmux is needed (make deps)")
    tmux(("new-session -d -s repl -x 160 -y 50 %s"):format(q(("cd %s && env HOME=%s TERM=xterm %s/towerkit")
      :format(q(ROOT), q(HOME), BUILD))))
    tmux("set-option -t repl history-limit 5000")
    wait_for("Ctrl-D exits.")
  end)
  teardown(function()
    tmux("kill-server")
    os.execute("rm -rf " .. q(HOME))
  end)

  it("completes tk fields after a dot: one Tab the common prefix, a second the candidates", function()
    type_text("tk.Two")
    key("Tab")
    wait_for("> tk.TwoTower")
    key("Tab")
    local s = wait_for("tk.TwoTowerModel")
    assert.truthy(s:find("tk.TwoTowerBlock", 1, true), s)
    key("C-u")
  end)

  it("completes methods after a colon and a unique name at once", function()
    enter("x = tk.ones{2, 2}")
    type_text("x:resh")
    key("Tab")
    wait_for("> x:reshape")
    key("C-u")
    type_text("tk.data.synth")
    key("Tab")
    wait_for("> tk.data.synthetic")
    key("C-u")
  end)

  it("help(x) prints the signature, options, Merlin name and example", function()
    local s = enter("help(tk.Dense)")
    local from = s:find("> help(tk.Dense)", 1, true)
    local out = s:sub(from)
    assert.truthy(out:find("tk.Dense(units [, opts]) -> Block", 1, true), out)
    assert.truthy(out:find("kernel_initializer = \"glorot_uniform\"", 1, true), out)
    assert.truthy(out:find("Merlin: tf.keras.layers.Dense", 1, true), out)
    local topics = enter("help()")
    assert.truthy(topics:find("TwoTowerModel methods:", 1, true), topics)
  end)

  it("prints a value once: summary, schema, dataset, model", function()
    local s = enter("b = tk.MLPBlock{4}; b:summary(tk.ones{2, 3})")
    local out = s:sub((s:find("b:summary", 1, true)))
    local _, count = out:gsub("Total params", "")
    assert.equal(1, count, out)
    s = enter("T = tk.Tags; s = tk.Schema{ tk.ColumnSchema('user_id', {tags = {T.USER_ID, T.CATEGORICAL}, " ..
      "int_domain = {max = 9}}), tk.ColumnSchema('item_id', {tags = {T.ITEM_ID, T.CATEGORICAL}, int_domain = {max = 9}}) }")
    s = enter("s")
    out = s:sub((s:find("\n> s\n", 1, true)))
    assert.truthy(out:find("Schema: 2 columns", 1, true), out)
    assert.truthy(out:find("user_id +categorical, id, user +int64 +%[0, 9%]"), out)
    enter("d = tk.data.synthetic(s, 20, {seed = 1})")
    s = enter("d")
    out = s:sub((s:find("\n> d\n", 1, true)))
    assert.truthy(out:find("Dataset: 20 rows, 2 columns", 1, true), out)
    assert.truthy(out:find("item_id +user_id"), out)
    enter("m = tk.TwoTowerModel(s, tk.MLPBlock{4})")
    s = enter("m")
    out = s:sub((s:find("\n> m\n", 1, true)))
    assert.truthy(out:find("TwoTowerModel: %d+ parameters"), out)
    assert.truthy(out:find("query +%[B, 4%] +%d+ +user_id"), out)
  end)

  it("shows an error's message and the user's frames, without C frames", function()
    enter("function boom() error('kaboom') end")
    local s = enter("boom()")
    local out = s:sub((s:find("> boom()", 1, true)))
    assert.truthy(out:find("stdin:1: kaboom", 1, true), out)
    assert.truthy(out:find("in function 'boom'", 1, true), out)
    assert.falsy(out:find("[C]", 1, true), out)
  end)
end)
