-- The HTTP server (examples/server) under `mpirun -np 2`: the catalogue (5,000 items)
-- sharded over the two ranks, rank 0 serving HTTP. Its answers are compared with those
-- of the one-process server on the same checkpoint; then it is stopped and both ranks
-- must exit within a bound; a rank that cannot start ends the job.
-- (scripts/run-tests.sh allows mpirun to run as root.)
local tk = require "towerkit"
local files = require "tests.spec.helpers.files"
local server = require "tests.spec.helpers.server"
local mpi = require "tests.spec.helpers.mpi"

local BUILD = os.getenv("TOWERKIT_BUILD") or "build"
local SERVER = BUILD .. "/examples/towerkit-server"
local LOADGEN = BUILD .. "/examples/loadgen"

local MPIRUN, mpi_it = mpi.MPIRUN, mpi.it -- (no leak checks under the sanitizers)
local q, slurp, run = files.q, files.slurp, files.run

local USER = { user_id = 4, user_recent_categories = { 1, 2, 3 }, user_activity = 0.5 }
local USERS = {
  USER,
  { user_id = 7, user_recent_categories = { 5 }, user_activity = 0.1 },
  { user_id = 93, user_recent_categories = { 19, 0 }, user_activity = 2.5 },
}

describe("the HTTP server under mpirun -np 2 (a sharded catalogue)", function()
  local tmp
  local servers = {}

  setup(function()
    tmp = files.sh("mktemp -d"):match("%S+")
    local out, rc = run(BUILD .. "/towerkit tests/spec/helpers/tiny_model.lua " .. q(tmp .. "/big") .. " 1 5000")
    assert(rc == 0, out)
    out, rc = run(BUILD .. "/towerkit tests/spec/helpers/tiny_model.lua " .. q(tmp .. "/small") .. " 2")
    assert(rc == 0, out)
  end)

  -- Starts `prefix SERVER args` in the background (tests/spec/helpers/server.lua).
  local function launch(prefix, args)
    local s = server.launch(tmp, prefix .. " " .. SERVER .. " " .. args)
    servers[#servers + 1] = s
    return s
  end

  local function start(prefix, ckpt, more)
    return server.wait_port(launch(prefix, q(ckpt) .. " --port 0 --threads 2" .. (more or "")), 60)
  end

  -- The example's handler, and POST /probe: SERVER.sharded_query called with the body's
  -- arguments as they are (rows x dim zeros as the queries, or a table with table = true;
  -- k; exclude), so that its own checks answer: {rows =} or {error =}.
  local function probe_handler()
    local path = tmp .. "/probe_handler.lua"
    local f = assert(io.open(path, "w"))
    f:write([[
local tk = require "towerkit"
local real = dofile("examples/server/handler.lua")
return function(method, path, body, request)
  if path ~= "/probe" then return real(method, path, body, request) end
  local req = tk.json.decode(body)
  local queries = req.table and {} or tk.zeros({ req.rows or 1, req.dim or SLOT:current():dim() })
  local ids, err = SERVER.sharded_query(queries, req.k or 3, req.exclude)
  return 200, tk.json.encode(ids and { rows = #ids, k = #ids[1] } or { error = err }) .. "\n"
end
]])
    f:close()
    return path
  end

  local wait_for, wait_exit = server.wait_for, server.wait_exit

  -- (a spec that failed half-way leaves its servers running: mpirun ends its ranks on
  -- SIGTERM, SIGKILL if it does not exit)
  teardown(function()
    for _, s in ipairs(servers) do
      local pid = server.pid(s)
      if pid and not server.stop(s, 20) then os.execute("kill -9 " .. pid .. " 2>/dev/null") end
    end
    if tmp then os.execute("rm -rf " .. q(tmp)) end
  end)

  local function call(s, method, path, body)
    local cmd = LOADGEN .. " -1 -p " .. s.port .. " -m " .. method .. " -u " .. q(path)
    if body then cmd = cmd .. " -b " .. q(body) end
    local out = run(cmd)
    local status, text = out:match("^(%-?%d+) (.-)\nexit=")
    local ok, decoded = pcall(tk.json.decode, text or "")
    return tonumber(status), ok and decoded or nil, out
  end

  -- The ids equal; the scores within 1e-6 (measured: the same bits, as the shards are
  -- cut at 4096 rows and each request's queries form one batch; other batchings of the
  -- queries may change the last bit).
  local function same_answer(want, got, what)
    assert.same(want.items, got.items, what)
    assert.equals(#want.scores, #got.scores, what)
    for j = 1, #want.scores do
      assert.is_true(math.abs(want.scores[j] - got.scores[j]) <= 1e-6,
        ("%s: score %d: %.9g alone, %.9g sharded"):format(what, j, want.scores[j], got.scores[j]))
    end
  end

  mpi_it("answers as the one-process server, stops cleanly on SIGTERM to rank 0", function()
    local ckpt = tmp .. "/big"
    local one = start("", ckpt)
    local sh = start(MPIRUN .. " -np 2", ckpt, " --handler " .. q(probe_handler()))
    assert.truthy(slurp(sh.log):find("catalogue sharded over 2 ranks", 1, true), slurp(sh.log))
    assert.truthy(wait_for(sh, "rank 1 of 2 %(pid %d+%): items %[4096, 5000%) of 5000", 10), slurp(sh.log))
    local st, health = call(sh, "GET", "/health")
    assert.equals(200, st)
    assert.equals(2, health.ranks)
    assert.equals(5000, health.items)
    -- the ids of rank 1's rows (4096 on): some answers must come from its shard
    local saved = tk.core.safetensors_read(ckpt .. "/item_embeddings.safetensors")
    local on_rank1 = {}
    for i, id in ipairs(saved.ids:totable()) do if i > 4096 then on_rank1[id] = true end end
    local from_rank1 = 0
    local bodies = {
      { features = USER, k = 5 },
      { features = USER, k = 40 },
      { users = USERS, k = 25 },
    }
    local none = tk.json.array({})
    -- exclusions: the first answer's top 7 ids, and (second user) ids of both shards
    local _, first = call(one, "POST", "/recommend", tk.json.encode({ features = USER, k = 7 }))
    bodies[#bodies + 1] = { features = USER, k = 10, exclude = first.items }
    bodies[#bodies + 1] = { users = USERS, k = 10, exclude = { none, first.items, none } }
    local ex2 = {}
    for id in pairs(on_rank1) do if #ex2 < 30 then ex2[#ex2 + 1] = id end end
    for _, id in ipairs(first.items) do ex2[#ex2 + 1] = id end
    bodies[#bodies + 1] = { users = USERS, k = 30, exclude = { first.items, ex2, { 123456789 } } }
    for i, b in ipairs(bodies) do
      local text = tk.json.encode(b)
      local s1, a = call(one, "POST", "/recommend", text)
      local s2, got, raw = call(sh, "POST", "/recommend", text)
      assert.equals(200, s1, text)
      assert.equals(200, s2, raw)
      local wa, ga = a.results or { a }, got.results or { got }
      assert.equals(#wa, #ga)
      for r = 1, #wa do
        same_answer(wa[r], ga[r], ("request %d, user %d"):format(i, r))
        for _, id in ipairs(ga[r].items) do if on_rank1[id] then from_rank1 = from_rank1 + 1 end end
      end
      if b.exclude then -- none of a user's excluded ids comes back
        local lists = b.users and b.exclude or { b.exclude }
        for r = 1, #ga do
          local banned = {}
          for _, id in ipairs(lists[r] or {}) do banned[id] = true end
          for _, id in ipairs(ga[r].items) do assert.is_nil(banned[id], "an excluded id came back: " .. id) end
        end
      end
    end
    assert.is_true(from_rank1 > 0, "no answer came from rank 1's shard")
    -- a bad request: the same 400 and message as one process
    local bad = '{"features": {"user_id": 400, "user_recent_categories": [1], "user_activity": 0}}'
    local b1, m1 = call(one, "POST", "/recommend", bad)
    local b2, m2 = call(sh, "POST", "/recommend", bad)
    assert.equals(400, b1)
    assert.equals(400, b2)
    assert.equals(m1.error, m2.error)
    -- SERVER.sharded_query itself: a query tensor and exclusion lists read as
    -- model:recommend reads them (the example's handler checks them before)
    local st_p, got_p, raw_p = call(sh, "POST", "/probe", '{"rows": 2, "k": 4, "exclude": [[1], [2, 3]]}')
    assert.equals(200, st_p, raw_p)
    assert.same({ rows = 2, k = 4 }, got_p, raw_p)
    for _, c in ipairs {
      { '{"rows": 2, "exclude": [[], [], []]}', "sharded_query: exclude has 3 lists for 2 query rows" },
      { '{"rows": 2, "exclude": [[], 7]}', "sharded_query: exclude: list 1 is not a list of item ids" },
      { '{"exclude": [[1.5]]}', "sharded_query: exclude: list 0 holds something other than an integer id at position 0" },
      { '{"exclude": 5}', "sharded_query: exclude must be a list of lists of item ids" },
      { '{"dim": 3}', "sharded_query: the queries must be a float32 tensor" },
      { '{"table": true}', "sharded_query: the queries must be a float32 tensor" },
      { '{"k": 0}', "sharded_query: k must be an integer in [1, 1000000]" },
    } do
      st_p, got_p, raw_p = call(sh, "POST", "/probe", c[1])
      assert.equals(200, st_p, raw_p)
      assert.truthy(got_p.error and got_p.error:find(c[2], 1, true), c[1] .. ": " .. raw_p)
    end
    -- reloads are refused, and say why
    local r, body = call(sh, "POST", "/reload")
    assert.equals(409, r)
    assert.truthy(body.error:find("sharded over MPI ranks", 1, true), body.error)
    -- concurrent requests: batched on rank 0's main thread, all answered
    local load = run(LOADGEN .. " -p " .. sh.port .. " -c 4 -n 200 -d 30 -b " ..
      q(tk.json.encode({ users = USERS, k = 10, exclude = { first.items, none, none } })))
    assert.truthy(load:find("requests 200 errors 0", 1, true), load)
    -- SIGTERM to rank 0: it drains, stops rank 1, and both exit 0
    local rank0 = slurp(sh.log):match("rank 0 of 2 %(pid (%d+)%)")
    os.execute("kill -TERM " .. rank0)
    local code, took = wait_exit(sh, 20)
    assert.equals(0, code, slurp(sh.log))
    assert.is_true(took <= 20)
    assert.truthy(slurp(sh.log):find("rank 1: stopped", 1, true), slurp(sh.log))
    assert.truthy(slurp(sh.log):find("stopped: drained", 1, true), slurp(sh.log))
    os.execute("kill " .. one.pid)
    assert.equals(0, (wait_exit(one, 20)))
  end)

  mpi_it("ends every rank on SIGTERM to mpirun, and when a rank cannot start", function()
    local sh = start(MPIRUN .. " -np 2", tmp .. "/big")
    os.execute("kill -TERM " .. sh.pid)
    local code = wait_exit(sh, 30)
    assert.is_not_nil(code, "mpirun did not exit: " .. slurp(sh.log))
    -- mpirun passes the SIGTERM on: rank 0 drains and stops rank 1, as when rank 0 is
    -- signalled. The status is mpirun's own (Open MPI 4.1: 1), not the ranks': it
    -- signals them odls_base_sigkill_timeout (1 s) after its SIGTERM and then kills them
    assert.truthy(slurp(sh.log):find("stopped: drained", 1, true), slurp(sh.log))
    assert.truthy(slurp(sh.log):find("rank 1: stopped", 1, true), slurp(sh.log))
    -- rank 1 loads another catalogue (50 items): every rank stops, with the reason
    local mm = launch(MPIRUN .. " -np 1", q(tmp .. "/big") .. " --port 0 : -np 1 " .. SERVER .. " " ..
      q(tmp .. "/small") .. " --port 0")
    code = wait_exit(mm, 60)
    assert.is_not_nil(code, "the job did not end: " .. slurp(mm.log))
    assert.is_true(code ~= 0)
    assert.truthy(slurp(mm.log):find("rank 1 loaded a catalogue of 50 items, rank 0 one of 5000", 1, true), slurp(mm.log))
    -- rank 1's checkpoint does not exist: it ends the job with its message
    local bad = launch(MPIRUN .. " -np 1", q(tmp .. "/big") .. " --port 0 : -np 1 " .. SERVER .. " " ..
      q(tmp .. "/nope") .. " --port 0")
    code = wait_exit(bad, 60)
    assert.is_not_nil(code, "the job did not end: " .. slurp(bad.log))
    assert.is_true(code ~= 0)
    assert.truthy(slurp(bad.log):find("towerkit: rank 1 of 2:", 1, true), slurp(bad.log))
    assert.truthy(slurp(bad.log):find("nope", 1, true), slurp(bad.log))
  end)
end)
