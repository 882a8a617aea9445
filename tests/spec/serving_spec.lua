-- Serving: tk.Model in Lua, the minimal C host (examples/embed/minimal.c) and the HTTP
-- server (examples/server) against checkpoints trained here for a few steps through
-- the launcher. Network traffic stays on 127.0.0.1 and is bounded.
local tk = require "towerkit"

local BUILD = os.getenv("TOWERKIT_BUILD") or "build"
local LAUNCHER = BUILD .. "/towerkit"
local MINIMAL = BUILD .. "/examples/minimal"
-- TOWERKIT_SERVER_BIN: another server binary (to check that a test fails without a change)
local SERVER = os.getenv("TOWERKIT_SERVER_BIN") or BUILD .. "/examples/towerkit-server"
local LOADGEN = BUILD .. "/examples/loadgen"

local files = require "tests.spec.helpers.files"
local q, run, slurp = files.q, files.run, files.slurp
local server = require "tests.spec.helpers.server"

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

    it("excludes items per query row (item ids, not rows); ids outside the catalogue are ignored", function()
      local m = tk.Model.load(ckpt("m1"))
      local batch = assert(tk.serving.query(m, { QUERY, QUERY }))
      local all = m:recommend(batch, 6):totable()
      local ids = m:recommend(batch, 4, { { all[1][1], all[1][3], 12345 }, {} }):totable()
      assert.same({ all[1][2], all[1][4], all[1][5], all[1][6] }, ids[1])
      assert.same({ all[2][1], all[2][2], all[2][3], all[2][4] }, ids[2])
      local none, err = m:try_recommend(batch, 4, { {}, {}, {} })
      assert.is_nil(none)
      assert.equal("exclude has 3 lists for 2 query rows", err)
      for _, bad in ipairs { 1.5, 2 ^ 60, 0 / 0, "7" } do
        none, err = m:try_recommend(batch, 4, { { bad } })
        assert.is_nil(none)
        assert.truthy(err:find("exclude: list 0 holds something other than an integer id at position 0", 1, true), err)
      end
      -- every item excluded: the rest of the row is -1
      local every = m:item_ids():totable()
      local r = m:recommend(assert(tk.serving.query(m, QUERY)), 2, { every }):totable()
      assert.same({ -1, -1 }, r[1])
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
        -- 1e999 does not fit a double: refused as it is read, naming the field
        { "POST", "/recommend", '{"features": {"user_id": 4}, "k": 1e999}', 400,
          "malformed JSON: k is a number too large for a double (inf)" },
        { "POST", "/recommend", '{"features": {"user_id": 4, "user_recent_categories": [1], "user_activity": -1e999}}',
          400, "malformed JSON: features.user_activity is a number too large for a double (-inf)" },
        { "POST", "/recommend", '{"features": {"user_id": 1e999, "user_recent_categories": [1], "user_activity": 0}}',
          400, "malformed JSON: features.user_id is a number too large for a double (inf)" },
        { "POST", "/recommend", '{"features": {"user_id": 04, "user_recent_categories": [1], "user_activity": 0}}',
          400, "malformed JSON: invalid JSON at line 1 (byte 26): a number with a leading zero" },
        { "POST", "/recommend", '{"features": {"user_id": 4, "user_recent_categories": [1], "user_activity": 0}, "exclude": [[1.5]]}',
          400, "\"exclude\" 0: expected integer item ids" },
        { "POST", "/recommend", '{"users": [{"user_id": 4, "user_recent_categories": [1], "user_activity": 0}], "exclude": [[], []]}',
          400, "\"exclude\" must hold one list of item ids per user (1), got 2" },
        { "POST", "/reload", "{", 400, "malformed JSON: the body: invalid JSON at line 1 (byte 1)" },
        { "POST", "/reload", '{"path": -012}', 400, "the body: invalid JSON at line 1 (byte 10): a number with a leading zero" },
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
      assert.equal(reloads + 1, body.swaps)
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

  -- Issue 12: each test starts its own server (its flags), on 127.0.0.1, bounded in time
  -- and connections.
  describe("the HTTP server's limits, signals, reloads and operations", function()
    local servers = {}

    -- Starts the server with these arguments (env: "NAME=value ..." for it); returns
    -- {pid, port, log, code_file} (tests/spec/helpers/server.lua). The exit code lands in
    -- code_file when it exits.
    local function start(args, env)
      local s = server.launch(tmp, "env " .. (env or "") .. " " .. SERVER .. " " .. args)
      servers[#servers + 1] = s
      return server.wait_port(s)
    end

    local stop = server.stop -- its exit code

    after_each(function()
      for _, s in ipairs(servers) do stop(s) end
      servers = {}
    end)

    -- One request; status, decoded body (if JSON), raw output, milliseconds it took.
    local function call(s, method, path, body, extra)
      local cmd = LOADGEN .. " -1 -p " .. s.port .. " -m " .. method .. " -u " .. q(path) .. " " .. (extra or "")
      if body then cmd = cmd .. " -b " .. q(body) end
      local out = run("t0=$(date +%s%N); " .. cmd .. "; echo \"ms=$(( ($(date +%s%N) - t0) / 1000000 ))\"")
      local ms = tonumber(out:match("ms=(%d+)"))
      out = out:gsub("ms=%d+\n", "")
      local status, text = out:match("^(%-?%d+) (.-)\nexit=")
      local ok, decoded = pcall(tk.json.decode, text and text:match("^[^\n]*") or "")
      return tonumber(status), ok and decoded or nil, out, ms
    end

    local function background(s, method, path, body, out_file, extra)
      os.execute(LOADGEN .. " -1 -p " .. s.port .. " -m " .. method .. " -u " .. q(path) .. " -b " .. q(body) ..
        " " .. (extra or "") .. " >" .. q(out_file) .. " 2>&1 &")
    end

    local function wait_file(path, seconds)
      for _ = 1, seconds * 20 do
        if slurp(path) ~= "" then return slurp(path) end
        os.execute("sleep 0.05")
      end
      return slurp(path)
    end

    -- A handler with /slow (sleeps the body's milliseconds in the worker) and /which
    -- (the tag of this file), around the example's handler.
    local function slow_handler(tag)
      local path = tmp .. "/handler_" .. (tag or "slow") .. ".lua"
      local f = assert(io.open(path, "w"))
      f:write(([[
local real = dofile("examples/server/handler.lua")
return function(method, path, body, request)
  if path == "/slow" then
    os.execute("sleep " .. tonumber(body) / 1000)
    return 200, '{"slept": ' .. body .. '}\n'
  elseif path == "/which" then
    return 200, '{"tag": "%s"}\n'
  end
  return real(method, path, body, request)
end
]]):format(tag or "slow"))
      f:close()
      return path
    end

    local ONE = tk.json.encode({ features = QUERY, k = 5 })

    it("answers a declared body over the limit with 413 at once", function()
      local s = start(q(ckpt("m1")) .. " --port 0 --threads 1 --max-body 1000")
      -- two bytes of a declared 10 GB: the answer comes without waiting for the rest
      local st, body, raw, ms = call(s, "POST", "/recommend", "xx", "-C 10000000000 -d 3")
      assert.equal(413, st, raw)
      assert.equal("request body larger than 1000 bytes", body.error)
      assert.is_true(ms < 2000, raw)
      st = call(s, "POST", "/recommend", string.rep(" ", 999) .. "x", "-C 1001 -d 3")
      assert.equal(413, st)
      assert.equal(200, (call(s, "GET", "/health")))
    end)

    it("limits connections per address and drops unfinished headers after --timeout; /health answers", function()
      local s = start(q(ckpt("m1")) .. " --port 0 --threads 1 --timeout 1 --max-connections-per-ip 64")
      local slow_out = tmp .. "/slow_clients.txt"
      os.execute(LOADGEN .. " -p " .. s.port .. " -s 1100 -d 4 >" .. q(slow_out) .. " 2>&1 &")
      os.execute("sleep 0.5")
      -- the 64 held connections fill this address's share: /health is refused until the
      -- server drops them (1 s without finished headers), then answered
      local t0 = tonumber(run("date +%s%N"):match("%d+"))
      local st
      for _ = 1, 30 do
        st = call(s, "GET", "/health", nil, "-d 0.5")
        if st == 200 then break end
        os.execute("sleep 0.1")
      end
      local waited = (tonumber(run("date +%s%N"):match("%d+")) - t0) / 1e6
      assert.equal(200, st)
      assert.is_true(waited < 2500, "waited " .. waited .. " ms")
      local report = wait_file(slow_out, 8)
      local opened, refused, closed = report:match("slow opened (%d+) refused (%d+) closed_by_server (%d+)")
      assert.truthy(opened, report)
      -- all but 64 refused or closed at once, and those 64 closed after the timeout
      assert.equal(1100, tonumber(refused) + tonumber(closed), report)
      assert.equal(200, (call(s, "GET", "/health")))
    end)

    it("answers /health while every worker is busy, and a request past --time-limit-ms with 503", function()
      local s = start(q(ckpt("m1")) .. " --port 0 --threads 1 --time-limit-ms 600 --handler " .. q(slow_handler()))
      local out = tmp .. "/slow_req.txt"
      background(s, "POST", "/slow", "1500", out)
      os.execute("sleep 0.2")
      local st, body, raw, ms = call(s, "GET", "/health")
      assert.equal(200, st, raw)
      assert.equal(1, body.busy)
      assert.is_true(ms < 400, raw .. " in " .. ms .. " ms")
      local slow = wait_file(out, 4)
      assert.truthy(slow:find("^503 "), slow)
      assert.truthy(slow:find("longer than the time limit of 600 ms", 1, true), slow)
      -- the worker is free again and serves
      os.execute("sleep 1")
      assert.equal(200, (call(s, "POST", "/recommend", ONE)))
    end)

    it("caps users x k per request with a 400 naming the cap (--max-results, a config file, flags over it)", function()
      local users = {}
      for u = 1, 1024 do users[u] = QUERY end
      local s = start(q(ckpt("m1")) .. " --port 0 --threads 1")
      local st, body, raw = call(s, "POST", "/recommend", tk.json.encode({ users = users, k = 1000 }))
      assert.equal(400, st, raw:sub(1, 300))
      -- k is the catalogue's 50 at most
      assert.equal("users x k = 1024 x 50 = 51200 is over the limit of 20000 results per request (max_results)",
        body.error)
      stop(s)
      local conf = tmp .. "/server.json"
      local f = assert(io.open(conf, "w"))
      f:write('{"max_results": 5, "threads": 1, "max_body": 100000}\n')
      f:close()
      s = start("--config " .. q(conf) .. " " .. q(ckpt("m1")) .. " --port 0")
      st, body = call(s, "POST", "/recommend", tk.json.encode({ features = QUERY, k = 6 }))
      assert.equal(400, st)
      assert.truthy(body.error:find("over the limit of 5 results", 1, true), body.error)
      stop(s)
      s = start("--config " .. q(conf) .. " " .. q(ckpt("m1")) .. " --port 0 --max-results 7")
      assert.equal(200, (call(s, "POST", "/recommend", tk.json.encode({ features = QUERY, k = 6 }))))
      st, body = call(s, "POST", "/recommend", tk.json.encode({ features = QUERY, k = 8 }))
      assert.equal(400, st)
      assert.truthy(body.error:find("over the limit of 7 results", 1, true), body.error)
      f = assert(io.open(conf, "w"))
      f:write('{"max_results": 5, "colour": 1}\n')
      f:close()
      local out, rc = run(SERVER .. " --config " .. q(conf) .. " " .. q(ckpt("m1")) .. " --port 0")
      assert.equal(2, rc, out)
      assert.truthy(out:find('unknown option "colour"', 1, true), out)
    end)

    it("drains requests in flight on SIGTERM and exits 0; reloads on SIGHUP", function()
      local s = start(q(ckpt("m1")) .. " --port 0 --threads 2 --handler " .. q(slow_handler()))
      os.execute("kill -HUP " .. s.pid)
      os.execute("sleep 0.3")
      local st, body = call(s, "GET", "/health")
      assert.equal(200, st) -- alive
      assert.equal(2, body.swaps)
      assert.truthy(slurp(s.log):find("reloaded ", 1, true), slurp(s.log))
      local _, _, metrics = call(s, "GET", "/metrics")
      assert.truthy(metrics:find('towerkit_reloads_total{result="ok"} 1', 1, true), metrics)
      local out = tmp .. "/drained.txt"
      background(s, "POST", "/slow", "800", out)
      os.execute("sleep 0.2")
      local code = stop(s)
      assert.truthy(slurp(out):find('^200 {"slept": 800}'), slurp(out))
      assert.equal(0, code, slurp(s.log))
      assert.truthy(slurp(s.log):find("SIGTERM: draining 1 request in flight", 1, true), slurp(s.log))
      assert.truthy(slurp(s.log):find("stopped: drained", 1, true), slurp(s.log))
    end)

    it("reloads only checkpoints under the model directory, from loopback or with the token; errors show no path", function()
      local outside = run("mktemp -d"):match("^(%S+)\n")
      os.execute("cp -r " .. q(ckpt("m2")) .. " " .. q(outside .. "/m2"))
      os.execute("ln -s " .. q(outside .. "/m2") .. " " .. q(ckpt("escape")))
      local s = start(q(ckpt("m1")) .. " --port 0 --threads 1")
      local cases = {
        { { path = "/etc" }, "must name a checkpoint under the model directory" },
        { { path = outside .. "/m2" }, "must name a checkpoint under the model directory" },
        { { path = "escape" }, "must name a checkpoint under the model directory" },
        { { path = "m1/../../" }, "must not contain '..'" },
        { { path = "nope" }, "no such checkpoint under the model directory" },
        { { path = "/" }, "must name a checkpoint under the model directory" },
      }
      for _, c in ipairs(cases) do
        local st, body, raw = call(s, "POST", "/reload", tk.json.encode(c[1]))
        assert.equal(400, st, raw)
        assert.truthy(body.error:find(c[2], 1, true), raw)
        assert.falsy(body.error:find("/", 1, true) and body.error:find(tmp, 1, true), raw)
        assert.falsy(body.error:find("/etc", 1, true), raw)
      end
      -- a directory under it that is no checkpoint: the reason goes to the log, not the client
      os.execute("mkdir -p " .. q(ckpt("empty")))
      local st, body, raw = call(s, "POST", "/reload", '{"path": "empty"}')
      assert.equal(400, st, raw)
      assert.equal("reload failed, the current model stays: the checkpoint does not load (see the server log)",
        body.error)
      assert.truthy(slurp(s.log):find("empty", 1, true), slurp(s.log))
      local v1 = select(2, call(s, "GET", "/health")).model_version
      st, body = call(s, "POST", "/reload", '{"path": "m2"}')
      assert.equal(200, st)
      assert.are_not.equal(v1, body.model_version)
      stop(s)
      os.execute("rm -rf " .. q(outside) .. " " .. q(ckpt("escape")) .. " " .. q(ckpt("empty")))
      -- with a token, it is needed from everywhere (loopback too)
      s = start(q(ckpt("m1")) .. " --port 0 --threads 1 --reload-token s3cret")
      st, body = call(s, "POST", "/reload", '{"path": "m2"}')
      assert.equal(403, st)
      assert.truthy(body.error:find("X-Reload-Token", 1, true))
      assert.equal(403, (call(s, "POST", "/reload", '{"path": "m2"}', "-h 'X-Reload-Token: s3cre'")))
      assert.equal(200, (call(s, "POST", "/reload", '{"path": "m2"}', "-h 'X-Reload-Token: s3cret'")))
    end)

    it("answers a second reload 409 while one runs, serving the old model meanwhile; reloads handler.lua", function()
      local handler = slow_handler("A")
      local s = start(q(ckpt("m1")) .. " --port 0 --threads 1 --handler " .. q(handler),
        "TOWERKIT_SERVER_TEST_RELOAD_DELAY_MS=1000")
      local _, h = call(s, "GET", "/health")
      local v1 = h.model_version
      assert.equal("A", select(2, call(s, "GET", "/which")).tag)
      -- the handler changes on disk; a reload starts it again
      local text = slurp(handler):gsub('"tag": "A"', '"tag": "B"')
      local f = assert(io.open(handler, "w"))
      f:write(text)
      f:close()
      local out = tmp .. "/reload_a.txt"
      background(s, "POST", "/reload", '{"path": "m2"}', out)
      os.execute("sleep 0.2")
      local st, body, raw, ms = call(s, "POST", "/reload", '{"path": "m1"}')
      assert.equal(409, st, raw)
      assert.truthy(body.error:find("a reload is in progress", 1, true))
      assert.is_true(ms < 500, raw)
      -- the only worker serves, from the old model
      st, body, raw, ms = call(s, "POST", "/recommend", ONE)
      assert.equal(200, st, raw)
      assert.equal(v1, body.model_version)
      assert.is_true(ms < 500, raw)
      assert.truthy(wait_file(out, 4):find("^200 "), slurp(out))
      _, h = call(s, "GET", "/health")
      assert.are_not.equal(v1, h.model_version)
      assert.equal("B", select(2, call(s, "GET", "/which")).tag)
    end)

    it("reports metrics, logs one line per request with its id, names the model by its weights", function()
      local s = start(q(ckpt("m1")) .. " --port 0 --threads 1")
      local st, body, raw = call(s, "POST", "/recommend", ONE, "-i")
      assert.equal(200, st)
      local id = raw:match("\n< X%-Request%-Id: (%x+)")
      assert.truthy(id, raw)
      assert.truthy(slurp(s.log):find("id=" .. id .. " client=127.0.0.1 method=POST path=/recommend status=200", 1,
        true), slurp(s.log))
      assert.equal(400, (call(s, "POST", "/recommend", "{")))
      local v1 = body.model_version
      assert.truthy(type(v1) == "string" and v1:match("^%x+$") and #v1 == 16, tostring(v1))
      -- the same weights, the same name; other weights, another one (not a swap count)
      local _, r2 = call(s, "POST", "/reload", '{"path": "m2"}')
      local _, r1 = call(s, "POST", "/reload", '{"path": "m1"}')
      assert.are_not.equal(v1, r2.model_version)
      assert.equal(v1, r1.model_version)
      local _, _, m = call(s, "GET", "/metrics")
      for _, want in ipairs {
        '# TYPE towerkit_requests_total counter',
        'towerkit_requests_total{route="/recommend",status="200"} 1',
        'towerkit_requests_total{route="/recommend",status="400"} 1',
        'towerkit_requests_total{route="/reload",status="200"} 2',
        '# TYPE towerkit_request_duration_seconds histogram',
        'towerkit_request_duration_seconds_bucket{route="/recommend",le="+Inf"} 2',
        'towerkit_request_duration_seconds_count{route="/recommend"} 2',
        'towerkit_requests_in_flight 1',
        'towerkit_model_info{model_version="' .. v1 .. '"} 1',
        'towerkit_model_swaps 3',
        'towerkit_reloads_total{result="ok"} 2',
        'towerkit_errors_total{kind="handler"} 0',
      } do
        assert.truthy(m:find(want, 1, true), want .. "\n" .. m)
      end
    end)

    it("follows the out-of-vocabulary policy: error, zeros (configured or saved with the model); excludes items", function()
      local NEW = { user_id = 100, user_recent_categories = { 1, 99 }, user_activity = 0.5 }
      local s = start(q(ckpt("m1")) .. " --port 0 --threads 1")
      local st, body = call(s, "POST", "/recommend", tk.json.encode({ features = NEW, k = 5 }))
      assert.equal(400, st)
      assert.truthy(body.error:find("out of range", 1, true))
      -- a model saved with "oov": "zeros"
      os.execute("cp -r " .. q(ckpt("m1")) .. " " .. q(ckpt("m1z")))
      local mj = tk.json.decode(slurp(ckpt("m1z") .. "/model.json"))
      mj.oov = "zeros"
      local f = assert(io.open(ckpt("m1z") .. "/model.json", "w"))
      f:write(tk.json.encode(mj))
      f:close()
      assert.equal(200, (call(s, "POST", "/reload", '{"path": "m1z"}')))
      local st2, zeros = call(s, "POST", "/recommend", tk.json.encode({ features = NEW, k = 5 }))
      assert.equal(200, st2)
      stop(s)
      -- configured: the unknown ids count as zero vectors, which is the empty list of ids
      s = start(q(ckpt("m1")) .. " --port 0 --threads 1 --oov zeros")
      local st3, conf = call(s, "POST", "/recommend", tk.json.encode({ features = NEW, k = 5 }))
      assert.equal(200, st3)
      local same = { user_id = tk.json.array({}), user_recent_categories = { 1 }, user_activity = 0.5 }
      local _, ref = call(s, "POST", "/recommend", tk.json.encode({ features = same, k = 5 }))
      assert.same(ref.items, conf.items)
      assert.same(ref.items, zeros.items)
      -- exclusions: the top 5 without the best two
      local _, top = call(s, "POST", "/recommend", tk.json.encode({ features = QUERY, k = 7 }))
      local ex = { top.items[1], top.items[2] }
      local _, rest = call(s, "POST", "/recommend", tk.json.encode({ features = QUERY, k = 5, exclude = { ex } }))
      assert.same({ top.items[3], top.items[4], top.items[5], top.items[6], top.items[7] }, rest.items)
      local _, two = call(s, "POST", "/recommend", tk.json.encode({ users = { QUERY, QUERY }, k = 2,
        exclude = { ex, tk.json.array({}) } }))
      assert.same({ top.items[3], top.items[4] }, two.results[1].items)
      assert.same({ top.items[1], top.items[2] }, two.results[2].items)
      os.execute("rm -rf " .. q(ckpt("m1z")))
    end)
  end)
end)
