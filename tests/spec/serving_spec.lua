-- Serving: tk.Model in Lua, the minimal C host (examples/embed/minimal.c) and the HTTP
-- server (examples/server) against checkpoints trained here for a few steps through
-- the launcher. Network traffic stays on 127.0.0.1 and is bounded.
local tk = require "towerkit"

local BUILD = os.getenv("TOWERKIT_BUILD") or "build"
local LAUNCHER = BUILD .. "/towerkit"
local MINIMAL = BUILD .. "/examples/minimal"
local SERVER = BUILD .. "/examples/towerkit-server"
local LOADGEN = BUILD .. "/examples/loadgen"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function run(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("*a")
  p:close()
  return out, tonumber(out:match("exit=(%d+)%s*$"))
end

local files = require "tests.spec.helpers.files"
local function slurp(path) return files.read(path) or "" end -- "" for a file not there yet

local tmp
local function ckpt(name) return tmp .. "/" .. name end

local QUERY = { user_id = 4, user_recent_categories = { 1, 2, 3 }, user_activity = 0.5 }

describe("serving", function()
  setup(function()
    local p = io.popen("mktemp -d")
    tmp = p:read("*l")
    p:close()
    for i, name in ipairs { "m1", "m2" } do
      local out, rc = run(LAUNCHER .. " tests/spec/helpers/tiny_model.lua " .. q(ckpt(name)) .. " " .. i)
      assert(rc == 0, out)
    end
  end)

  teardown(function()
    if tmp then os.execute("rm -rf " .. q(tmp)) end
  end)

  describe("tk.Model", function()
    it("loads a checkpoint and recommends as the model's top-k encoder does", function()
      local m = tk.Model.load(ckpt("m1"))
      assert.is_true(tk.Model.is(m))
      assert.equal(50, m:num_items())
      assert.equal(8, m:dim())
      local names = {}
      for _, f in ipairs(m:features()) do names[#names + 1] = f.name end
      assert.same({ "user_id", "user_recent_categories", "user_activity" }, names)
      local ids, scores = m:recommend(assert(tk.serving.query(m, QUERY)), 5)
      -- the same ids: the helper's encoder scored the same query (one row, the same
      -- blocks and weights) against the matrix it saved, on this machine and kernel, so
      -- the same scores bit for bit and the same order
      assert.equal(slurp(ckpt("m1") .. "/expected.txt"):match("[%d,]+"), table.concat(ids:totable()[1], ","))
      assert.same({ 1, 5 }, scores:shape())
      assert.equal("query", m:query_block():name())
      assert.truthy(m:schema():find("user_recent_categories", 1, true))
    end)

    it("reports bad queries with a message", function()
      local m = tk.Model.load(ckpt("m1"))
      assert.has_error(function() m:recommend({ user_id = tk.tensor({ 100 }, "int64") }, 5) end,
        "feature 'user_id': id 100 at row 0 is out of range [0, 100)")
      local ids, err = m:try_recommend({ colour = tk.tensor({ 1 }) }, 5)
      assert.is_nil(ids)
      assert.equal("unknown feature 'colour' (the query tower reads: user_id, user_recent_categories, user_activity)", err)
      local b, qerr = tk.serving.query(m, { user_id = 1.5, user_recent_categories = {}, user_activity = 0 })
      assert.is_nil(b)
      assert.equal("feature 'user_id': expected an integer id, got 1.5", qerr)
      m:release()
      assert.has_error(function() m:dim() end, "bad argument #1 (model has been released)")
      assert.has_error(function() tk.Model.load(tmp .. "/nope") end)
    end)

    it("swaps models in a slot; a failed reload keeps the current one", function()
      local slot = tk.ModelSlot(tk.Model.load(ckpt("m1")))
      local batch = assert(tk.serving.query(slot:current(), QUERY))
      local a, _, v1 = slot:recommend(batch, 5)
      assert.equal(1, v1)
      assert.equal(2, slot:reload(ckpt("m2")))
      local b, _, v2 = slot:recommend(batch, 5)
      assert.equal(2, v2)
      assert.are_not.same(a:totable(), b:totable())
      assert.has_error(function() slot:reload(tmp .. "/nope") end)
      assert.equal(2, slot:version())
      assert.equal(ckpt("m2"), slot:current():dir())
      local cur, v = slot:current()
      assert.equal(ckpt("m2"), cur:dir())
      assert.equal(2, v)
      assert.equal(3, slot:set(tk.Model.load(ckpt("m1"))))
      cur, v = slot:current()
      assert.same({ ckpt("m1"), 3 }, { cur:dir(), v })
      local c, _, v3 = slot:recommend(batch, 5)
      assert.equal(3, v3)
      assert.same(a:totable(), c:totable()) -- m1 again: the same weights and path, the same ids
      local none, err, v4 = slot:try_recommend({ colour = tk.tensor({ 1 }) }, 5)
      assert.is_nil(none)
      assert.truthy(err:find("unknown feature 'colour'", 1, true), err)
      assert.equal(3, v4)
    end)

    it("hands out copies of its blocks: changing them does not change the served model", function()
      local m = tk.Model.load(ckpt("m1"))
      local batch = assert(tk.serving.query(m, QUERY))
      local ids, scores = m:recommend(batch, 5)
      local qb, whole, ib = m:query_block(), m:block(), m:item_block()
      assert.equal("query", qb:name())
      assert.equal("item", ib:name())
      assert.is_false(qb:same(m:query_block()))
      for _, b in ipairs { qb, whole, ib } do
        for _, p in ipairs(b:parameters()) do p[2]:fill(0) end
      end
      qb:set_post(tk.Activation("relu"))
      whole:set_post(tk.L2Norm())
      assert.equal(0, qb:parameters()[1][2]:totable()[1][1])
      local ids2, scores2 = m:recommend(batch, 5)
      assert.same(ids:totable(), ids2:totable())
      assert.same(scores:totable(), scores2:totable()) -- the served model, unchanged: bitwise
      assert.is_nil(m:query_block():post())
      local fresh = m:query_block():parameters()
      assert.are_not.same(qb:parameters()[1][2]:totable(), fresh[1][2]:totable())
      -- the copy works on its own
      local own = whole:find("query")
      assert.truthy(own)
    end)
  end)

  it("the minimal C host runs its game loop against a model", function()
    local out, rc = run(MINIMAL .. " " .. q(ckpt("m1")) .. " 4")
    assert.equal(0, rc, out)
    local ticks = 0
    for line in out:gmatch("tick %d+: items %d+ %d+ %d+ %(score [%d.%-]+%)") do ticks = ticks + 1 end
    assert.equal(4, ticks, out)
    local usage, urc = run(MINIMAL)
    assert.equal(2, urc)
    assert.truthy(usage:find("usage:", 1, true))
    local bad, brc = run(MINIMAL .. " " .. q(tmp .. "/nope"))
    assert.equal(1, brc)
    assert.truthy(bad:find("nope", 1, true), bad)
  end)

  describe("the HTTP server", function()
    local pid, port, log

    local function request(method, path, body)
      local cmd = LOADGEN .. " -1 -p " .. port .. " -m " .. method .. " -u " .. q(path)
      if body then cmd = cmd .. " -b " .. q(body) end
      local out = run(cmd)
      local status, text = out:match("^(%-?%d+) (.-)\nexit=")
      return tonumber(status), text and tk.json.decode(text), out
    end

    setup(function()
      log = tmp .. "/server.log"
      local p = io.popen(SERVER .. " " .. q(ckpt("m1")) .. " --port 0 --threads 3 >" .. q(log) .. " 2>&1 & echo $!")
      pid = p:read("*l")
      p:close()
      for _ = 1, 100 do
        port = slurp(log):match("listening on http://127%.0%.0%.1:(%d+)")
        if port then break end
        os.execute("sleep 0.05")
      end
      assert(port, "the server did not start: " .. slurp(log))
    end)

    teardown(function()
      if pid then os.execute("kill " .. pid .. " 2>/dev/null; sleep 0.2") end
    end)

    it("answers /health and /recommend", function()
      local st, body = request("GET", "/health")
      assert.equal(200, st)
      assert.equal("ok", body.status)
      assert.equal(50, body.items)
      st, body = request("POST", "/recommend", tk.json.encode({ features = QUERY, k = 5 }))
      assert.equal(200, st)
      -- the same ids as the encoder's, for the reason given in the tk.Model spec above
      assert.equal(slurp(ckpt("m1") .. "/expected.txt"):match("[%d,]+"), table.concat(body.items, ","))
      assert.equal(5, #body.scores)
      st, body = request("POST", "/recommend", tk.json.encode({ users = { QUERY, QUERY }, k = 3 }))
      assert.equal(200, st)
      assert.equal(2, #body.results)
    end)

    it("answers every bad request with a 4xx and a message, and stays up", function()
      local cases = {
        { "POST", "/recommend", '{"features": {"user_id": 4', 400, "malformed JSON" },
        { "POST", "/recommend", "", 400, "malformed JSON" },
        { "POST", "/recommend", "[1, 2]", 400, "the body must be a JSON object" },
        { "POST", "/recommend", '{"k": 3}', 400, "the body needs \"features\"" },
        { "POST", "/recommend", '{"features": {"user_id": 4, "colour": 1, "user_recent_categories": [1], "user_activity": 0}}',
          400, "unknown feature 'colour'" },
        { "POST", "/recommend", '{"features": {"user_id": 100, "user_recent_categories": [1], "user_activity": 0}}',
          400, "feature 'user_id': id 100 at row 0 is out of range [0, 100)" },
        { "POST", "/recommend", '{"features": {"user_id": -1, "user_recent_categories": [1], "user_activity": 0}}',
          400, "out of range" },
        { "POST", "/recommend", '{"features": {"user_id": 4, "user_recent_categories": [1, 99], "user_activity": 0}}',
          400, "feature 'user_recent_categories': id 99 at row 0 is out of range [0, 20)" },
        { "POST", "/recommend", '{"features": {"user_id": "4", "user_recent_categories": [1], "user_activity": 0}}',
          400, "expected an integer id" },
        { "POST", "/recommend", '{"features": {"user_id": 4, "user_recent_categories": [1]}}', 400,
          "missing feature 'user_activity'" },
        { "POST", "/recommend", '{"features": {"user_id": 4, "user_recent_categories": [1], "user_activity": 0}, "k": 0}',
          400, "k must be an integer" },
        { "POST", "/recommend", '{"users": {"a": 1}}', 400, "\"users\" must be a list" },
        { "POST", "/reload", '{"path": "/nonexistent/model"}', 400, "reload failed, the current model stays" },
        { "POST", "/reload", "{", 400, "malformed JSON" },
        { "GET", "/recommend", nil, 405, "does not allow GET" },
        { "GET", "/nope", nil, 404, "no such path" },
      }
      for _, c in ipairs(cases) do
        local st, body, raw = request(c[1], c[2], c[3])
        assert.equal(c[4], st, raw)
        assert.truthy(body and type(body.error) == "string" and body.error:find(c[5], 1, true), raw)
      end
      local big = '{"features": {"user_id": 1}, "pad": "' .. string.rep("x", 1100000) .. '"}'
      local f = assert(io.open(tmp .. "/big.json", "w"))
      f:write(big, "\n")
      f:close()
      local out = run(LOADGEN .. " -1 -p " .. port .. " -f " .. q(tmp .. "/big.json"))
      assert.truthy(out:find("^413 ") or out:find("^%-1"), out)
      local st = request("GET", "/health")
      assert.equal(200, st)
    end)

    it("swaps checkpoints under load without failing a request", function()
      local bodies = tmp .. "/bodies.txt"
      local f = assert(io.open(bodies, "w"))
      for u = 0, 49 do
        f:write(tk.json.encode({ features = { user_id = u, user_recent_categories = { u % 20, (u * 3) % 20 },
          user_activity = u / 50 }, k = 10 }), "\n")
      end
      f:close()
      local load_out = tmp .. "/load.txt"
      os.execute(LOADGEN .. " -p " .. port .. " -c 4 -n 4000 -d 20 -f " .. q(bodies) .. " >" .. q(load_out) ..
        " 2>&1 & echo $! >" .. q(tmp .. "/load.pid"))
      local reloads = 0
      for i = 1, 20 do
        local st, body, raw = request("POST", "/reload", tk.json.encode({ path = ckpt(i % 2 == 1 and "m2" or "m1") }))
        assert.equal(200, st, raw)
        assert.equal("reloaded", body.status)
        reloads = reloads + 1
      end
      os.execute("while kill -0 $(cat " .. q(tmp .. "/load.pid") .. ") 2>/dev/null; do sleep 0.05; done")
      local summary = slurp(load_out)
      assert.truthy(summary:find("requests 4000 errors 0 ", 1, true), summary)
      local st, body = request("GET", "/health")
      assert.equal(200, st)
      assert.equal(reloads + 1, body.model_version)
    end)

    it("stops cleanly on SIGTERM", function()
      os.execute("kill " .. pid)
      for _ = 1, 100 do
        local alive = os.execute("kill -0 " .. pid .. " 2>/dev/null")
        if alive ~= 0 and alive ~= true then break end
        os.execute("sleep 0.05")
      end
      pid = nil
      assert.truthy(slurp(log):find("stopped", 1, true), slurp(log))
    end)
  end)
end)
