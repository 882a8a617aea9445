--- Block methods that look at a block: layers, submodules, select_by_name, is_input,
-- is_tabular, registry and summary (a table of the blocks of a forward pass).
local core = require "towerkit.core"
local util = require "towerkit.util"
local meta = require "towerkit.block.meta"
local registry = require "towerkit.block.registry"

local sorted_keys = util.sorted_keys

local methods = util.methods("block/introspection.lua")

function methods:select_by_name(name)
  return self:find(name)
end

--- block:layers() -> {block, ...}: the direct children (a sequential block's layers, a
-- parallel block's branches), in order.
function methods:layers()
  local out = {}
  for i, c in ipairs(self:children()) do out[i] = c.block end
  return out
end

--- block:submodules() -> {block, ...}: every block below this one (pre, children,
-- post, recursively, in forward order), each once, without the block itself.
function methods:submodules()
  local out, seen = {}, { [self:id()] = true }
  local function visit(b)
    if b == nil then return end
    local id = b:id()
    if seen[id] then return end
    seen[id] = true
    out[#out + 1] = b
    local pre = b:pre()
    visit(pre)
    for _, c in ipairs(b:children()) do visit(c.block) end
    visit(b:post())
  end
  visit(self:pre())
  for _, c in ipairs(self:children()) do visit(c.block) end
  visit(self:post())
  return out
end

--- block:registry() -> tk.registry: the table of named blocks that `post = "l2-norm"`,
-- parse and set_post resolve names with (tk.register_block adds to it).
function methods.registry() return registry.blocks end

--- block:is_input() -> boolean: true for an input block (tk.InputBlock).
function methods:is_input()
  local t = meta.get(self)
  return t ~= nil and t.class == "InputBlock"
end

-- Whether a block's output is tabular, given whether its input is. Derived from the
-- kinds: filter, as_tabular, embeddings and parallel make a table; activation, l2norm
-- and dropout keep the input's form; the others (and Lua blocks) give a tensor; an
-- aggregation makes a tensor of a table.
local TABULAR_KINDS = { filter = true, as_tabular = true, embeddings = true, parallel = true, shortcut = true }
local KEEP_KINDS = { activation = true, l2norm = true, dropout = true }
local function gives_table(b, input_tabular)
  local t = input_tabular
  local pre = b:pre()
  if pre then t = gives_table(pre, t) end
  local kind = b:kind()
  if kind == "sequential" then
    for _, c in ipairs(b:children()) do t = gives_table(c.block, t) end
  elseif TABULAR_KINDS[kind] then
    t = true
  elseif not KEEP_KINDS[kind] then
    t = false
  end
  local post = b:post()
  if post then t = gives_table(post, t) end
  if b:aggregation() ~= nil then t = false end
  return t
end

--- block:is_tabular() -> boolean: whether the block outputs a table of tensors (a
-- parallel block, a two-tower block, an input block without aggregation, ...).
function methods:is_tabular()
  return gives_table(self, false)
end

local function shape_text(s)
  if type(s) == "string" then return s end
  local parts = {}
  for _, k in ipairs(sorted_keys(s)) do parts[#parts + 1] = k .. "=" .. s[k] end
  return "{" .. table.concat(parts, ", ") .. "}"
end

--- A table of the blocks of a forward pass on `input`: name, kind, output shape and
-- parameter count, indented by depth. Prints it and returns nothing (so the REPL does
-- not print it twice), or with opts.quiet returns the text and prints nothing.
function methods:summary(input, opts)
  opts = util.known_options(opts, { quiet = true }, "summary")
  local rows = {}
  if input ~= nil then
    local ctx = core.Context()
    ctx:grad_enabled(false)
    local _, events = self:trace(input, ctx)
    -- events finish children before parents: rebuild the tree, then list it
    local stack = {}
    for _, e in ipairs(events) do
      e.children = {}
      while #stack > 0 and stack[#stack].depth > e.depth do
        table.insert(e.children, 1, table.remove(stack))
      end
      stack[#stack + 1] = e
    end
    local function walk(e)
      rows[#rows + 1] = { string.rep("  ", e.depth) .. e.name, e.kind, shape_text(e.shape), e.params }
      for _, c in ipairs(e.children) do walk(c) end
    end
    for _, e in ipairs(stack) do walk(e) end
  else
    local function walk(b, depth, name)
      rows[#rows + 1] = { string.rep("  ", depth) .. (name or b:name()), b:kind(), "?", b:count_params() }
      for _, c in ipairs(b:children()) do walk(c.block, depth + 1, c.name) end
    end
    walk(self, 0)
  end
  local header = { "Block", "Kind", "Output shape", "Params" }
  local widths = {}
  for i, h in ipairs(header) do widths[i] = #h end
  for _, r in ipairs(rows) do
    for i = 1, 4 do widths[i] = math.max(widths[i], #tostring(r[i])) end
  end
  local function line(r)
    local cells = {}
    for i = 1, 4 do
      local fmt = i == 4 and "%" .. widths[i] .. "s" or "%-" .. widths[i] .. "s"
      cells[i] = fmt:format(tostring(r[i]))
    end
    return table.concat(cells, "  ")
  end
  local out = { line(header), string.rep("-", widths[1] + widths[2] + widths[3] + widths[4] + 6) }
  for _, r in ipairs(rows) do out[#out + 1] = line(r) end
  out[#out + 1] = ("Total params: %d"):format(self:count_params())
  local text = table.concat(out, "\n")
  if opts.quiet then return text end
  print(text)
end

return { methods = methods }
