--- Serving: a checkpoint loaded once in C and shared by threads and Lua states
-- (towerkit.Model), the slot that swaps it while requests run (towerkit.ModelSlot),
-- and the conversion of plain Lua values (decoded JSON) into a query batch.
--
--   local model = tk.Model.load("model/")          -- + model/item_embeddings.safetensors
--   local ids, scores = model:recommend(batch, 10)  -- batch: feature name -> tensor
--   local q = tk.serving.query(model, { user_id = 7, user_recent_categories = { 3, 9 } })
--   local ids, scores = model:recommend(q, 10)
--
-- C hosts push a model they loaded with towerkit_lua_push_model (towerkit_lua.h).
local core = require "towerkit.core"
local json = require "towerkit.json"
local ragged = require "towerkit.ragged"

local serving = {}

--- tk.Model: Model.load(dir [, {items = path, batch_size = 4096}]) -> towerkit.Model.
serving.Model = {
  load = core.model_load,
  is = core.is_model,
}
--- tk.ModelSlot(model) -> a slot whose current model is `model` (slot:reload(dir) swaps).
serving.ModelSlot = core.model_slot

--- The description of a model's query features: {features = {...}, by_name = {},
-- known = {name = true for every schema column}}. Cache it per model.
function serving.info(model)
  local info = { features = model:features(), by_name = {}, known = {} }
  for _, f in ipairs(info.features) do
    info.by_name[f.name] = f
    info.known[f.name] = true
  end
  local text = model:schema()
  if text then
    local s = json.decode(text)
    for _, f in ipairs(type(s) == "table" and type(s.feature) == "table" and s.feature or {}) do
      if type(f) == "table" and type(f.name) == "string" then info.known[f.name] = true end
    end
  end
  return info
end

local is_int = require("towerkit.util").is_integer

--- query(model_or_info, users) -> batch (a table of tensors) or nil, message.
-- users: one user's features ({user_id = 7, tags = {1, 5}, activity = 0.3}) or an
-- array of them. An id is an integer, a list of ids an array of integers, a
-- continuous feature a number. A name that is not a column of the schema is an
-- error; columns of the item tower are ignored. Ranges are checked by recommend.
function serving.query(model, users)
  local info = core.is_model(model) and serving.info(model) or model
  if type(users) ~= "table" then return nil, "features must be an object of feature name -> value" end
  if users[1] == nil then
    if next(users) == nil then return nil, "no features given" end
    users = { users }
  end
  local B = #users
  local cols = {}
  for _, f in ipairs(info.features) do
    cols[f.name] = f.kind == "continuous" and {} or { ids = {}, offsets = { 0 }, list = false }
  end
  for r = 1, B do
    local u = users[r]
    if type(u) ~= "table" or u[1] ~= nil then
      return nil, ("user %d: features must be an object of feature name -> value"):format(r - 1)
    end
    for name in pairs(u) do
      if type(name) ~= "string" then return nil, "feature names must be strings" end
      if not info.known[name] then
        local names = {}
        for _, f in ipairs(info.features) do names[#names + 1] = f.name end
        return nil, ("unknown feature '%s' (the query tower reads: %s)"):format(name, table.concat(names, ", "))
      end
    end
    for _, f in ipairs(info.features) do
      local v, c = u[f.name], cols[f.name]
      local where = B > 1 and ("user %d: "):format(r - 1) or ""
      if v == nil or v == json.null then
        return nil, ("%smissing feature '%s'"):format(where, f.name)
      end
      if f.kind == "continuous" then
        if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
          return nil, ("%sfeature '%s': expected a finite number, got %s"):format(where, f.name, tostring(v))
        end
        c[r] = v
      elseif type(v) == "table" then
        if next(v) ~= nil and v[1] == nil then
          return nil, ("%sfeature '%s': expected a list of integer ids, got an object"):format(where, f.name)
        end
        c.list = true
        for i = 1, #v do
          if not is_int(v[i]) then
            return nil, ("%sfeature '%s': expected a list of integer ids, got %s at position %d"):format(where,
              f.name, type(v[i]) == "number" and tostring(v[i]) or type(v[i]), i - 1)
          end
          c.ids[#c.ids + 1] = v[i]
        end
        c.offsets[r + 1] = #c.ids
      elseif is_int(v) then
        c.ids[#c.ids + 1] = v
        c.offsets[r + 1] = #c.ids
      else
        return nil, ("%sfeature '%s': expected an integer id%s, got %s"):format(where, f.name,
          f.is_list and " or a list of ids" or "", type(v) == "number" and tostring(v) or type(v))
      end
    end
  end
  local batch = {}
  for _, f in ipairs(info.features) do
    local c = cols[f.name]
    if f.kind == "continuous" then
      batch[f.name] = core.tensor(c)
    elseif c.list or f.is_list then
      batch[ragged.values_name(f.name)] = #c.ids > 0 and core.tensor(c.ids, "int64") or core.zeros({ 0 }, "int64")
      batch[ragged.offsets_name(f.name)] = core.tensor(c.offsets, "int64")
    else
      batch[f.name] = core.tensor(c.ids, "int64")
    end
  end
  return batch
end

return serving
