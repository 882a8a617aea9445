--- A block's meta: a JSON-encodable table stored with the block (it travels with
-- configs and copies). Merlin's class names (TwoTowerBlock, InputBlock, MLPBlock,
-- TabularBlock) and the schemas of blocks built from one live there.
local json = require "towerkit.json"

local meta = {}

--- tk.set_meta(block, meta): stores meta (nil removes it).
function meta.set(block, t)
  block:set_meta_json(t ~= nil and json.encode(t) or nil)
end

--- tk.get_meta(block) -> the stored table, or nil.
function meta.get(block)
  local text = block:meta_json()
  return text and json.decode(text) or nil
end

--- Changes the meta in place: fn(t) edits the table; an empty one is removed.
function meta.update(block, fn)
  local t = meta.get(block) or {}
  fn(t)
  meta.set(block, next(t) ~= nil and t or nil)
end

--- Merlin's class name of a block: meta.class, else the core kind.
function meta.class_of(block)
  local t = meta.get(block)
  return (t and type(t.class) == "string") and t.class or block:kind()
end

--- "<class> '<name>'", as error messages name a block.
function meta.label(block)
  return ("%s '%s'"):format(meta.class_of(block), block:name())
end

return meta
