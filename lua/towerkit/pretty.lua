--- How models, schemas and datasets print (their __tostring): what the REPL shows.
local core = require "towerkit.core"
local ragged = require "towerkit.ragged"
local Tags = require("towerkit.schema.tags").Tags

local pretty = {}

-- Left-aligned columns of rows of strings, with a header and a rule.
function pretty.table(header, rows)
  local widths = {}
  for i, h in ipairs(header) do widths[i] = #h end
  for _, r in ipairs(rows) do
    for i = 1, #header do widths[i] = math.max(widths[i], #tostring(r[i] or "")) end
  end
  local function line(r)
    local cells = {}
    for i = 1, #header do cells[i] = ("%-" .. widths[i] .. "s"):format(tostring(r[i] or "")) end
    return (table.concat(cells, "  "):gsub("%s+$", ""))
  end
  local total = 2 * (#header - 1)
  for _, w in ipairs(widths) do total = total + w end
  local out = { line(header), string.rep("-", total) }
  for _, r in ipairs(rows) do out[#out + 1] = line(r) end
  return table.concat(out, "\n")
end

local function domain_text(col)
  local d = col.int_domain
  if not d then return "" end
  local s = ("[%s, %s]"):format(tostring(d.min or 0), tostring(d.max or "?"))
  if d.name then s = s .. " " .. d.name end
  return s
end

--- schema(s) -> "Schema: 5 columns" and a table of name, tags, dtype, domain.
function pretty.schema(s)
  local rows = {}
  for i, col in ipairs(s) do
    local tags = {}
    for j, t in ipairs(col.tags or {}) do tags[j] = tostring(t) end
    local dtype = col.dtype or "?"
    if col.is_list then dtype = dtype .. (col.is_ragged and " list (ragged)" or " list") end
    rows[i] = { col.name, table.concat(tags, ", "), dtype, domain_text(col) }
  end
  return ("Schema: %d column%s\n"):format(#rows, #rows == 1 and "" or "s") ..
    pretty.table({ "Column", "Tags", "Dtype", "Domain" }, rows)
end

local function cell(v)
  if type(v) == "number" then
    if v == math.floor(v) and math.abs(v) < 1e15 then return ("%d"):format(v) end
    return ("%.4g"):format(v)
  end
  return tostring(v)
end

--- dataset(d [, n = 5]) -> rows, columns and the first n rows.
function pretty.dataset(d, n)
  n = math.min(n or 5, d:size() or 0)
  local names = d:column_names()
  local header, rows = {}, {}
  for i, name in ipairs(names) do header[i] = name end
  if n > 0 then
    local idx = core.tensor(require("towerkit.data").range(0, n - 1), "int64")
    local batch = d:rows(idx)
    for r = 1, n do rows[r] = {} end
    for i, name in ipairs(names) do
      local t = batch[name]
      if t then
        local vals = t:totable()
        for r = 1, n do
          local v = vals[r]
          rows[r][i] = type(v) == "table" and cell(v[1]) .. (#v > 1 and ", ..." or "") or cell(v)
        end
      else -- a list column: its values and offsets
        local vals, off = batch[ragged.values_name(name)]:totable(), batch[ragged.offsets_name(name)]:totable()
        for r = 1, n do
          local parts = {}
          for j = off[r] + 1, off[r + 1] do parts[#parts + 1] = cell(vals[j]) end
          rows[r][i] = "{" .. table.concat(parts, ", ") .. "}"
        end
      end
    end
  end
  local text = ("Dataset: %d row%s, %d column%s"):format(d:size(), d:size() == 1 and "" or "s", #names,
    #names == 1 and "" or "s")
  if #names == 0 then return text end
  text = text .. "\n" .. pretty.table(header, rows)
  if d:size() > n then text = text .. ("\n... (%d more rows)"):format(d:size() - n) end
  return text
end

local function shape_text(t)
  if not core.is_tensor(t) then return "?" end
  local s = t:shape()
  s[1] = "B"
  for i = 2, #s do s[i] = tostring(s[i]) end
  return "[" .. table.concat(s, ", ") .. "]"
end

--- model(m) -> the towers with their output shapes and parameter counts.
function pretty.model(m)
  local q, it = m.block:query_block(), m.block:item_block()
  local out = {}
  local ok = pcall(function()
    local ctx = core.Context()
    ctx:grad_enabled(false)
    out = m.block:forward(require("towerkit.block.shapes").zeros_from_schema(m.schema), ctx)
  end)
  if not ok then out = {} end
  local function cols(tag)
    local names = {}
    for i, c in ipairs(m.schema:select_by_tag(tag)) do names[i] = c.name end
    return table.concat(names, ", ")
  end
  local rows = {
    { "query", shape_text(out.query), tostring(q:count_params()), cols(Tags.USER) },
    { "item", shape_text(out.item), tostring(it:count_params()), cols(Tags.ITEM) },
  }
  local o = m.opts
  local lines = {
    ("TwoTowerModel: %d parameters, item id '%s'%s, %s"):format(m.block:count_params(), m.item_id,
      m.query_id and (", query id '" .. m.query_id .. "'") or "",
      m.optimizer and ("compiled, %d steps trained"):format(m.step_count or 0) or "not compiled"),
    pretty.table({ "Tower", "Output shape", "Params", "Features" }, rows),
    ("logits_temperature %g%s%s"):format(o.logits_temperature, o.logq and ("  logq " .. o.logq) or "",
      o.negatives and ("  negatives %d %s"):format(o.negatives.num, o.negatives.sampler) or ""),
  }
  return table.concat(lines, "\n")
end

return pretty
