--- The REPL's Lua side: completion candidates, error tracebacks cut to the user's own
-- frames. scripts/towerkit.c is a thin bridge that calls these; specs call them
-- directly.
local repl = {}

local KEYWORDS = { "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
  "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while" }

local function is_ident(s) return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil end

-- Reads t[k] without raising (userdata without __index, __index functions that error).
local function get(t, k)
  local ok, v = pcall(function() return t[k] end)
  if ok then return v end
end

-- Adds the identifier keys of the table t (and of the tables its metatables' __index
-- chain leads to, when `chain`) to `out`; `want(v)` filters on the value.
local function add_keys(out, t, want, chain, seen)
  seen = seen or {}
  if type(t) ~= "table" or seen[t] then return end
  seen[t] = true
  for k, v in pairs(t) do
    if is_ident(k) and (not want or want(v)) then out[k] = true end
  end
  if chain then
    local mt = getmetatable(t)
    if type(mt) == "table" and type(rawget(mt, "__index")) == "table" then
      add_keys(out, rawget(mt, "__index"), want, chain, seen)
    end
  end
end

-- The method names of any value: the functions of its metatable's __index chain (for
-- tables also its own function fields).
local function method_names(v)
  local out = {}
  local function is_fn(x) return type(x) == "function" end
  if type(v) == "table" then add_keys(out, v, is_fn, false) end
  local mt
  if type(v) == "string" then mt = { __index = string } else mt = getmetatable(v) end
  local seen = {}
  while type(mt) == "table" and not seen[mt] do
    seen[mt] = true
    local idx = rawget(mt, "__index")
    if type(idx) == "table" then
      add_keys(out, idx, is_fn, true)
      mt = getmetatable(idx)
    else
      break
    end
  end
  return out
end

-- Evaluates a dotted path of names ("tk.data") in env without running user code beyond
-- __index; nil when a step is missing.
local function lookup(env, path)
  local v = env
  for name in path:gmatch("[^%.]+") do
    if v == nil then return nil end
    if type(v) ~= "table" and type(v) ~= "userdata" then return nil end
    v = get(v, name)
  end
  return v
end

--- complete(line, cursor, env) -> list of completions of the word that ends at byte
-- `cursor` of `line` (default: its end), each the whole word ("tk.TwoTowerBlock"):
-- globals and keywords for a name, the keys of a table after `.`, the methods of any
-- value after `:` (from its metatables, following __index chains). Sorted.
function repl.complete(line, cursor, env)
  env = env or _G
  cursor = cursor or #line
  local text = line:sub(1, cursor)
  local word = text:match("[%a_][%w_%.:]*$")
  if not word then return {} end
  -- a name that follows a digit or another word character is not a word start
  local before = text:sub(1, #text - #word)
  if before:match("[%w_]$") then return {} end
  local base, sep, partial = word:match("^(.-)([%.:])([%w_]*)$")
  local names = {}
  if not base then
    partial = word
    add_keys(names, env, nil, true)
    for _, k in ipairs(KEYWORDS) do names[k] = true end
  else
    if base:find(":", 1, true) or base == "" then return {} end
    local v = lookup(env, base)
    if v == nil then return {} end
    if sep == "." then
      if type(v) == "table" then add_keys(names, v, nil, true) end
      if type(v) == "userdata" or type(v) == "table" then
        -- fields a userdata (or table) answers through __index tables
        local mt = getmetatable(v)
        if type(mt) == "table" and type(rawget(mt, "__index")) == "table" and type(v) == "userdata" then
          add_keys(names, rawget(mt, "__index"), nil, true)
        end
      end
    else
      names = method_names(v)
    end
  end
  local out = {}
  local prefix = base and (base .. sep) or ""
  for k in pairs(names) do
    if k:sub(1, #partial) == partial and not (sep and k:match("^__")) then out[#out + 1] = prefix .. k end
  end
  table.sort(out)
  return out
end

--- The longest common prefix of a list of strings ("" for none).
function repl.common_prefix(list)
  local p = list[1] or ""
  for i = 2, #list do
    local s = list[i]
    local n = 0
    while n < #p and n < #s and p:byte(n + 1) == s:byte(n + 1) do n = n + 1 end
    p = p:sub(1, n)
  end
  return p
end

--- clean_traceback(text) -> the message and a traceback of the user's frames only:
-- no [C] frames, no frames inside the library, no REPL wrapper frames ("stdin:1: in
-- function <stdin:1>" of the printed-expression wrapper), no "(tail call)" lines. The
-- traceback header goes when no frame is left.
function repl.clean_traceback(text)
  text = tostring(text)
  local msg, tb = text:match("^(.-)\nstack traceback:\n(.*)$")
  if not msg then return text end
  local keep = {}
  for line in tb:gmatch("[^\n]+") do
    local frame = line:match("^%s*(.-)%s*$")
    local drop = frame:match("^%[C%]") or frame:match("^%(tail call%)") or frame:match("^%.%.%.")
      or frame:match("towerkit/[%w_/]*%.lua:%d+:") -- the library (short_src may elide the path)
      or frame:match("^stdin:%d+: in function <stdin:%d+>$")
      or frame:match("^stdin:%d+: in main chunk$")
      or frame:match("^%[string \"")
    if not drop then keep[#keep + 1] = "\t" .. frame end
  end
  if #keep == 0 then return msg end
  return msg .. "\nstack traceback:\n" .. table.concat(keep, "\n")
end

return repl
