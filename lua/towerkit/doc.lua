--- help(x) and the API reference: one entry per public name, written once in
-- lua/towerkit/doc/*.lua (one file per part of the library, beside the modules it
-- describes); `help` reads them, scripts/gen-api-doc.lua renders docs/api.md from them,
-- and tests/spec/doc_spec.lua fails when a public name has no entry.
--
-- An entry: doc.define "tk.Dense" { "Dense(units, opts) -> Block", "What it does.",
--   options = { { "name", "default", "meaning" }, ... }, merlin = "mm.X", example = "code" }
-- Names: "tk.x" / "tk.data.x" for functions and classes of `tk`, "Class:method" for the
-- methods of Block, Tensor, TwoTowerModel, Schema, ColumnSchema, Dataset and History.
local doc = {}

local entries = {} -- name -> entry
local order = {}   -- names in definition order

local FILES = { "tk", "tensor", "block", "schema", "data", "model", "history", "distributed" }

--- define(name)(entry): registers the entry of a public name (once).
function doc.define(name)
  return function(e)
    if entries[name] then error(("doc: %s is documented twice"):format(name), 2) end
    e.name = name
    e.signature = e.signature or e[1]
    e.summary = e.summary or e[2]
    if not e.signature or not e.summary then error(("doc: %s needs a signature and a summary"):format(name), 2) end
    entries[name] = e
    order[#order + 1] = name
  end
end

local loaded = false
local function load()
  if loaded then return end
  loaded = true
  for _, f in ipairs(FILES) do require("towerkit.doc." .. f) end
end

--- entry(name) -> the entry of a public name, or nil.
function doc.entry(name)
  load()
  return entries[name]
end

-- The classes whose methods are public: name -> method table (instances' __index).
local function classes()
  local tk = require "towerkit"
  return {
    Block = tk.Block,
    Tensor = tk.Tensor,
    TwoTowerModel = require("towerkit.model").Model,
    Schema = tk.Schema.methods,
    ColumnSchema = tk.ColumnSchema.methods,
    Dataset = require("towerkit.data").methods,
    History = require "towerkit.history",
    ShardedIndex = require("towerkit.distributed")._ShardedIndex,
  }
end
doc.classes = classes

local CLASS_ORDER = { "Block", "Tensor", "TwoTowerModel", "Schema", "ColumnSchema", "Dataset", "History",
  "ShardedIndex" }
doc.CLASS_ORDER = CLASS_ORDER

-- Namespaces of tk whose functions are public one by one.
local NAMESPACES = { data = true, optim = true, ["optim.schedules"] = true, metrics = true, callbacks = true,
  losses = true, serving = true, json = true, plot = true, distributed = true }
-- tk fields that are not API: the binding, internal hooks.
local HIDDEN = { core = true, registry = true, ["data.methods"] = true, ["distributed.fit_plan"] = true,
  ["distributed.evaluate"] = true, ["distributed.export"] = true, ["distributed.allreduce_options"] = true,
  ["distributed.set_sharding"] = true, ["distributed.with_whole_tables"] = true,
  ["distributed.need_ranks"] = true }

local function sorted(t)
  local k = {}
  for n in pairs(t) do k[#k + 1] = n end
  table.sort(k)
  return k
end

--- public() -> a sorted list of {name =, value =} for every public name: the functions
-- and classes of tk (and of its namespaces tk.data, tk.optim, ...), and the methods of
-- the classes above.
function doc.public()
  local tk = require "towerkit"
  local out = {}
  local function walk(t, prefix, ns)
    for _, k in ipairs(sorted(t)) do
      local v = t[k]
      local sub = ns and (ns .. "." .. tostring(k)) or k
      if type(k) == "string" and not k:match("^_") and not HIDDEN[sub] then
        local name = prefix .. k
        if type(v) == "table" and NAMESPACES[sub] then
          walk(v, name .. ".", sub)
        elseif type(v) == "function" or type(v) == "table" then
          out[#out + 1] = { name = name, value = v }
        end
      end
    end
  end
  walk(tk, "tk.", nil)
  local cl = classes()
  for _, c in ipairs(CLASS_ORDER) do
    for _, k in ipairs(sorted(cl[c])) do
      local v = rawget(cl[c], k)
      if type(v) == "function" and not k:match("^_") and not (c == "History" and k == "new") then
        out[#out + 1] = { name = c .. ":" .. k, value = v }
      end
    end
  end
  return out
end

--- missing() -> the public names that have no entry (and entries that name nothing).
function doc.missing()
  load()
  local missing, known = {}, {}
  for _, p in ipairs(doc.public()) do
    known[p.name] = true
    if not entries[p.name] then missing[#missing + 1] = p.name end
  end
  local stale = {}
  for _, n in ipairs(order) do
    if not known[n] and not entries[n].topic then stale[#stale + 1] = n end
  end
  return missing, stale
end

--- names() -> every documented name, in definition order.
function doc.names()
  load()
  local t = {}
  for i, n in ipairs(order) do t[i] = n end
  return t
end

-- Text ----------------------------------------------------------------------------------

local function indent(text, pad)
  return pad .. tostring(text):gsub("\n", "\n" .. pad)
end

--- render(entry) -> the text help prints.
function doc.render(e)
  local out = { e.signature, indent(e.summary, "  ") }
  if e.alias then out[#out + 1] = "  The same function as " .. e.alias .. "." end
  if e.options and #e.options > 0 then
    out[#out + 1] = "  Options:"
    local w = 0
    for _, o in ipairs(e.options) do w = math.max(w, #o[1] + 3 + #o[2]) end
    for _, o in ipairs(e.options) do
      local head = o[1] .. " = " .. o[2]
      out[#out + 1] = ("    %-" .. w .. "s  %s"):format(head, o[3])
    end
  end
  if e.returns then out[#out + 1] = "  Returns: " .. e.returns end
  if e.merlin then out[#out + 1] = "  Merlin: " .. e.merlin end
  if e.example then
    out[#out + 1] = "  Example:"
    out[#out + 1] = indent(e.example, "    ")
  end
  if e.methods then
    out[#out + 1] = "  Methods (help(\"" .. e.name .. ":name\")):"
    for _, m in ipairs(e.methods) do out[#out + 1] = m end
  end
  return table.concat(out, "\n")
end

-- The class of a value, for help(value).
local function class_of(v)
  local core = require "towerkit.core"
  if core.is_block(v) then return "Block" end
  if core.is_tensor(v) then return "Tensor" end
  if require("towerkit.model").is_model(v) then return "TwoTowerModel" end
  if require("towerkit.schema.schema").is_schema(v) then return "Schema" end
  if require("towerkit.data").is_dataset(v) then return "Dataset" end
  local mt = getmetatable(v)
  if mt == require "towerkit.history" then return "History" end
  if type(mt) == "table" and rawget(mt, "__index") == require("towerkit.schema.column").class then
    return "ColumnSchema"
  end
  local cl = classes()
  for _, c in ipairs(CLASS_ORDER) do if v == cl[c] then return c end end
end

-- The class topic: its entry and a line per method.
local function class_topic(c)
  local cls = classes()[c]
  local e = entries["tk." .. c] or entries["tk.data." .. c] or { name = c, signature = c, summary = "" }
  local lines = {}
  local names = {}
  for _, k in ipairs(sorted(cls)) do
    if type(rawget(cls, k)) == "function" and not k:match("^_") and entries[c .. ":" .. k] then
      names[#names + 1] = k
    end
  end
  local w = 0
  for _, k in ipairs(names) do w = math.max(w, #k) end
  for _, k in ipairs(names) do
    local s = entries[c .. ":" .. k].summary:match("^[^\n]*")
    lines[#lines + 1] = ("    %-" .. w .. "s  %s"):format(k, s)
  end
  local copy = {}
  for k, v in pairs(e) do copy[k] = v end
  copy.name = c
  copy.methods = lines
  return doc.render(copy)
end

-- Identity map: function or table -> its public name (the first, for aliases).
local by_value
local function value_names()
  if by_value then return by_value end
  by_value = {}
  for _, p in ipairs(doc.public()) do
    if by_value[p.value] == nil then by_value[p.value] = p.name end
  end
  return by_value
end

--- lookup(x) -> the text of help(x), or nil and a message.
function doc.lookup(x)
  load()
  if x == nil then return doc.topics() end
  local cl = class_of(x)
  if cl and type(x) ~= "function" then return class_topic(cl) end
  if type(x) == "function" or type(x) == "table" then
    local n = value_names()[x]
    if n and entries[n] then return doc.render(entries[n]) end
    if type(x) == "function" then return nil, "help: no entry for this function" end
  end
  if type(x) ~= "string" then return nil, "help: no entry for a " .. type(x) .. " value" end
  local name = x:gsub("%(.*$", "")
  for _, c in ipairs(CLASS_ORDER) do
    if name == c or name == "tk." .. c then return class_topic(c) end
  end
  local e = entries[name] or entries["tk." .. name]
  if e then return doc.render(e) end
  -- a method or field name alone: every entry that ends with it
  local found = {}
  for _, n in ipairs(order) do
    local tail = n:match("[%.:]([%w_]+)$")
    if tail == name or n:lower():find(name:lower(), 1, true) then found[#found + 1] = n end
  end
  if #found == 1 then return doc.render(entries[found[1]]) end
  if #found > 1 then
    local exact = {}
    for _, n in ipairs(found) do if n:match("[%.:]([%w_]+)$") == name then exact[#exact + 1] = n end end
    if #exact == 1 then return doc.render(entries[exact[1]]) end
    return "Several topics match '" .. name .. "': " .. table.concat(#exact > 0 and exact or found, ", ")
  end
  return nil, "help: no topic '" .. name .. "'; help() lists them"
end

--- topics() -> the text of help(): every documented function and class, by part.
function doc.topics()
  load()
  local groups, heads = {}, {}
  for _, n in ipairs(order) do
    local g = n:match("^(tk%.[%w_]+)%.") or (n:match("^tk%.") and "tk") or n:match("^([%w_]+):")
    if g then
      if not groups[g] then groups[g] = {} heads[#heads + 1] = g end
      local short = n:match("[%.:]([%w_]+)$")
      groups[g][#groups[g] + 1] = short
    end
  end
  local out = { "towerkit help: help(x) for a function, a class, a method or a value",
    "  (help(tk.Dense), help(\"Block:summary\"), help(model), help(\"fit\")). Topics:" }
  local function wrap(head, names)
    local line, lines = "  " .. head .. ": ", {}
    for i, s in ipairs(names) do
      local piece = s .. (i < #names and ", " or "")
      if #line + #piece > 92 then lines[#lines + 1] = line line = "      " end
      line = line .. piece
    end
    lines[#lines + 1] = line
    return table.concat(lines, "\n")
  end
  for _, g in ipairs(heads) do
    local label = g
    for _, c in ipairs(CLASS_ORDER) do if g == c then label = c .. " methods" end end
    out[#out + 1] = wrap(label, groups[g])
  end
  return table.concat(out, "\n")
end

--- help(x): prints the entry of x (a function, class, method name, or value); with no
-- argument, the list of topics.
function doc.help(...)
  local text, err = doc.lookup(...)
  print(text or err)
end

return doc
