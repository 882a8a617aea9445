-- handler.lua: the request handler of examples/server (towerkit-server). Each worker
-- thread of the server runs this file in its own Lua state, with these globals:
--   SLOT        the shared towerkit.ModelSlot (slot:current(), ...)
--   CHECKPOINT  the checkpoint directory the server was started with
--   WORKER      this worker's number
--   SERVER      max_results (users x k of one request), oov ("error" or "zeros", if the
--               server was given a policy), model_version(swap) (the name of a model);
--               under mpirun (a catalogue sharded over the ranks) also ranks and
--               sharded_query(queries, k [, exclude]) -> ids, scores (Lua arrays) or
--               nil, message: the top k of the query embeddings (the float32 tensor
--               model:encode gives) over every rank's shard; exclude as recommend's
-- It returns function(method, path, body, request) -> status, body (JSON text);
-- request.id is the request's id (the X-Request-Id header). /health, /metrics and
-- /reload are answered by the server itself; a reload starts this file again.
local tk = require "towerkit"
local json = tk.json

local MAX_K = 1000

-- The policy for ids outside a feature's range: the server's, else the one the model
-- was saved with (model.json "oov"), else "error".
local function oov_policy(m)
  if SERVER and SERVER.oov then return SERVER.oov end
  local f = io.open(m:dir() .. "/model.json", "rb")
  if not f then return "error" end
  local ok, saved = pcall(json.decode, f:read("*a"))
  f:close()
  local p = ok and type(saved) == "table" and saved.oov
  return (p == "zeros" or p == "error") and p or "error"
end

-- The model this worker uses, its feature description, version and name, refreshed
-- when the slot's version changes (a request keeps the model it started with).
local model, info, version, name, oov

local function current()
  if SLOT:version() ~= version then
    model, version = SLOT:current() -- the model and its version, read together
    info = tk.serving.info(model)
    name = SERVER and SERVER.model_version(version) or version
    oov = oov_policy(model)
  end
  return model, info, name, oov
end

-- A JSON value for a message: json.encode refuses what JSON cannot hold (1e999 is
-- decoded as an infinite number), and the message must not fail in turn.
local function show(v)
  if type(v) == "number" and (v ~= v or v == math.huge or v == -math.huge) then
    return "a number out of range"
  end
  local ok, text = pcall(json.encode, v)
  return ok and text or tostring(v)
end

local is_int = require("towerkit.util").is_integer

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

-- Policy "zeros": an id outside [0, cardinality) of a categorical feature is embedded
-- as a zero vector. The checkpoints have no out-of-vocabulary row, so the id is left out
-- of the row's list of ids: a single id becomes an empty list (the combiner of nothing
-- is zeros), and a list keeps its known ids (with the sum combiner the same as a zero
-- vector in its place; with mean, the mean of the known ones).
local function drop_unknown(inf, users)
  local out = {}
  for r, u in ipairs(users) do
    local copy = {}
    for k, v in pairs(u) do copy[k] = v end
    for _, f in ipairs(inf.features) do
      local v, card = copy[f.name], f.cardinality
      if f.kind ~= "continuous" and card then
        if is_int(v) and (v < 0 or v >= card) then
          copy[f.name] = json.array({})
        elseif type(v) == "table" and v ~= json.null and v[1] ~= nil then
          local kept = {}
          for i = 1, #v do
            if not (is_int(v[i]) and (v[i] < 0 or v[i] >= card)) then kept[#kept + 1] = v[i] end
          end
          copy[f.name] = json.array(kept)
        end
      end
    end
    out[r] = copy
  end
  return out
end

-- "exclude": a list of item ids per user ([[...], [...]]; one user may give [...]).
local function exclusions(ex, n, single)
  if ex == nil or ex == json.null then return nil end
  if type(ex) ~= "table" or is_object(ex) then return nil, "\"exclude\" must be a list of lists of item ids" end
  if single and ex[1] ~= nil and type(ex[1]) ~= "table" then ex = { ex } end
  if #ex ~= n then
    return nil, ("\"exclude\" must hold one list of item ids per user (%d), got %d"):format(n, #ex)
  end
  for r = 1, #ex do
    local l = ex[r]
    if type(l) ~= "table" or is_object(l) then
      return nil, ("\"exclude\" %d must be a list of item ids"):format(r - 1)
    end
    for i = 1, #l do
      if not is_int(l[i]) then
        return nil, ("\"exclude\" %d: expected integer item ids, got %s at position %d"):format(r - 1, show(l[i]), i - 1)
      end
    end
  end
  return ex
end

local function recommend(body)
  local req, err = object_body(body)
  if not req then return bad(400, "%s", err) end
  local m, inf, v, policy = current()
  local k = req.k == nil and 10 or req.k
  if type(k) ~= "number" or k % 1 ~= 0 or k < 1 or k > MAX_K then
    return bad(400, "k must be an integer in [1, %d], got %s", MAX_K, show(k))
  end
  k = math.min(k, m:num_items())
  local users, single = req.users, false
  if users == nil then
    users, single = req.features, true
    if users == nil then return bad(400, "the body needs \"features\" (one user) or \"users\" (a list)") end
    if not is_object(users) then return bad(400, "\"features\" must be an object") end
    users = { users }
  elseif type(users) ~= "table" or is_object(users) then
    return bad(400, "\"users\" must be a list of feature objects")
  elseif #users == 0 or #users > 1024 then
    return bad(400, "\"users\" must hold 1 to 1024 users")
  end
  -- the answer's size and the time it takes grow with users x k: one request may not
  -- take the server's memory and a worker for seconds
  local cap = SERVER and SERVER.max_results
  if cap and #users * k > cap then
    return bad(400, "users x k = %d x %d = %d is over the limit of %d results per request (max_results)",
      #users, k, #users * k, cap)
  end
  local ex, xerr = exclusions(req.exclude, #users, single)
  if xerr then return bad(400, "%s", xerr) end
  for r = 1, #users do
    if not is_object(users[r]) then return bad(400, "user %d: features must be an object", r - 1) end
  end
  if policy == "zeros" then users = drop_unknown(inf, users) end
  local batch, qerr = tk.serving.query(inf, single and users[1] or users)
  if not batch then return bad(400, "%s", qerr) end
  local id_rows, score_rows
  if SERVER and SERVER.sharded_query then
    -- the query tower here, the top k over the ranks' shards by the server's main thread
    local ok, q = pcall(m.encode, m, batch)
    if not ok then return bad(400, "%s", tostring(q)) end
    id_rows, score_rows = SERVER.sharded_query(q, k, ex)
    if not id_rows then error(score_rows, 0) end
  else
    local ids, scores = m:try_recommend(batch, k, ex)
    if not ids then return bad(400, "%s", scores) end
    id_rows, score_rows = ids:totable(), scores:totable()
  end
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

local routes = {
  ["/recommend"] = { POST = recommend },
}

return function(method, path, body, request)
  local route = routes[path:match("^[^?]*")]
  if not route then return bad(404, "no such path: %s", path) end
  local fn = route[method]
  if not fn then
    local allowed = {}
    for m in pairs(route) do allowed[#allowed + 1] = m end
    return bad(405, "%s does not allow %s (use %s)", path, method, table.concat(allowed, ", "))
  end
  return fn(body, request)
end
