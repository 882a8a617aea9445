-- handler.lua: the request handler of examples/server (towerkit-server). Each worker
-- thread of the server runs this file in its own Lua state, with these globals:
--   SLOT        the shared towerkit.ModelSlot (slot:current(), slot:reload(dir), ...)
--   CHECKPOINT  the checkpoint directory the server was started with
--   WORKER      this worker's number
-- It returns function(method, path, body) -> status, body (JSON text).
local tk = require "towerkit"
local json = tk.json

local MAX_K = 1000

-- The model this worker uses and its feature description, refreshed when the slot's
-- version changes (a request keeps the model it started with).
local model, info, version

local function current()
  if SLOT:version() ~= version then
    model, version = SLOT:current() -- the model and its version, read together
    info = tk.serving.info(model)
  end
  return model, info, version
end

local function reply(status, value)
  return status, json.encode(value) .. "\n"
end

local function bad(status, fmt, ...)
  return reply(status, { error = fmt:format(...) })
end

-- Decoded arrays carry a metatable with __jsontype = "array"; objects have none.
local function is_object(v)
  if type(v) ~= "table" or v == json.null then return false end
  local mt = getmetatable(v)
  return not (mt and mt.__jsontype == "array")
end

-- Decodes a JSON object body; returns the object or nil and a 400 response.
local function object_body(body, optional)
  if optional and body:match("^%s*$") then return {} end
  local ok, value, err = pcall(json.decode, body)
  if not ok then value, err = nil, tostring(value) end
  if value == nil then return nil, "malformed JSON: " .. tostring(err) end
  if not is_object(value) then return nil, "the body must be a JSON object" end
  return value
end

local function array(t) return json.array(t) end

local function recommend(body)
  local req, err = object_body(body)
  if not req then return bad(400, "%s", err) end
  local m, inf, v = current()
  local k = req.k == nil and 10 or req.k
  if type(k) ~= "number" or k % 1 ~= 0 or k < 1 or k > MAX_K then
    return bad(400, "k must be an integer in [1, %d], got %s", MAX_K, json.encode(k))
  end
  k = math.min(k, m:num_items())
  local users, single = req.users, false
  if users == nil then
    users, single = req.features, true
    if users == nil then return bad(400, "the body needs \"features\" (one user) or \"users\" (a list)") end
    if not is_object(users) then return bad(400, "\"features\" must be an object") end
  elseif type(users) ~= "table" or is_object(users) then
    return bad(400, "\"users\" must be a list of feature objects")
  elseif #users == 0 or #users > 1024 then
    return bad(400, "\"users\" must hold 1 to 1024 users")
  end
  local batch, qerr = tk.serving.query(inf, users)
  if not batch then return bad(400, "%s", qerr) end
  local ids, scores = m:try_recommend(batch, k)
  if not ids then return bad(400, "%s", scores) end
  local id_rows, score_rows = ids:totable(), scores:totable()
  local results = {}
  for r = 1, #id_rows do
    results[r] = { items = array(id_rows[r]), scores = array(score_rows[r]) }
  end
  if single then
    results[1].model_version = v
    return reply(200, results[1])
  end
  return reply(200, { results = array(results), model_version = v })
end

local function health()
  local m, _, v = current()
  return reply(200, { status = "ok", model = m:dir(), model_version = v, items = m:num_items(), dim = m:dim(),
    worker = WORKER })
end

local function reload(body)
  local req, err = object_body(body, true)
  if not req then return bad(400, "%s", err) end
  local path = req.path == nil and CHECKPOINT or req.path
  if type(path) ~= "string" or path == "" then return bad(400, "\"path\" must be a checkpoint directory") end
  local ok, v = pcall(SLOT.reload, SLOT, path)
  if not ok then return bad(400, "reload failed, the current model stays: %s", tostring(v)) end
  return reply(200, { status = "reloaded", model = path, model_version = v })
end

local routes = {
  ["/recommend"] = { POST = recommend },
  ["/health"] = { GET = health },
  ["/reload"] = { POST = reload },
}

return function(method, path, body)
  local route = routes[path:match("^[^?]*")]
  if not route then return bad(404, "no such path: %s", path) end
  local fn = route[method]
  if not fn then
    local allowed = {}
    for m in pairs(route) do allowed[#allowed + 1] = m end
    return bad(405, "%s does not allow %s (use %s)", path, method, table.concat(allowed, ", "))
  end
  return fn(body)
end
