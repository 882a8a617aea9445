--- Lua initializer functions fn(shape, seed) for weights the core's named initializers
-- do not cover (MLPBlock kernel_initializer, EmbeddingOptions embeddings_initializers),
-- and the pending ones: a function for a weight whose shape is not known yet (the kernel
-- of a Dense without input_dim) is applied once the block is built.
local core = require "towerkit.core"
local meta = require "towerkit.block.meta"
local argerror = require("towerkit.util").argerror

local initializers = {}

--- tk.apply_initializer(param, fn, seed, what): fills a parameter from fn(shape, seed),
-- which returns a tensor or a nested table of that shape.
function initializers.apply(param, fn, seed, what)
  local value = fn(param:shape(), seed)
  if type(value) == "table" and not core.is_tensor(value) then value = core.tensor(value) end
  if not core.is_tensor(value) then
    argerror("%s: the initializer function returned %s, expected a tensor", what, type(value))
  end
  local ok, err = pcall(param.copy_from, param, value)
  if not ok then argerror("%s: the initializer function returned the wrong shape (%s)", what, err) end
end

-- Pending initializers by id: {{param = "kernel", fn =, seed =, what =}, ...}. The block
-- they belong to carries the id in its meta (pending_init), so that a copy made before
-- the build carries it too; a block's id is removed from its meta once applied there.
-- `waiting` counts the blocks that carry an id (forward looks for them only then).
local pending, next_id, waiting = {}, 1, 0

--- initializers.defer(block, entries): entries are applied to block's parameters by
-- flush once they exist.
function initializers.defer(block, entries)
  local id = next_id
  next_id = next_id + 1
  pending[id] = entries
  meta.update(block, function(t) t.pending_init = id end)
  waiting = waiting + 1
end

-- Calls fn(b, id) for every block of the tree under block that carries a pending id.
local function each_pending(block, fn)
  local m = block:meta_json()
  if m and m:find("pending_init", 1, true) then
    local id = meta.get(block).pending_init
    if pending[id] then fn(block, id) end
  end
  for _, c in ipairs(block:children()) do each_pending(c.block, fn) end
  for _, hook in ipairs { block:pre(), block:post() } do
    if core.is_block(hook) then each_pending(hook, fn) end
  end
end

--- initializers.waiting() -> whether some block carries a pending initializer.
function initializers.waiting() return waiting > 0 end

--- initializers.has_pending(block) -> whether the tree under block has a pending
-- initializer.
function initializers.has_pending(block)
  if waiting == 0 then return false end
  local found = false
  each_pending(block, function() found = true end)
  return found
end

--- initializers.flush(block): applies the pending initializers of the tree under
-- block whose parameters exist (the blocks built).
function initializers.flush(block)
  if waiting == 0 then return end
  each_pending(block, function(b, id)
    for _, e in ipairs(pending[id]) do
      if not b:param(e.param) then return end -- not built yet
    end
    for _, e in ipairs(pending[id]) do initializers.apply(b:param(e.param), e.fn, e.seed, e.what) end
    meta.update(b, function(t) t.pending_init = nil end)
    waiting = waiting - 1
  end)
end

--- initializers.copied(copy): counts the pending initializers a copy carries.
function initializers.copied(copy)
  each_pending(copy, function() waiting = waiting + 1 end)
end

return initializers
