--- The names of ragged columns. A list feature `f` travels as two columns: `f__values`
-- (the ids of every row, concatenated) and `f__offsets` (N + 1 row starts), the layout
-- the core's blocks read. Every Lua module names them through here; the API is kept
-- small so that it can call a C helper later.
local ragged = {}

local VALUES, OFFSETS = "__values", "__offsets"

--- The column of the values of list feature f.
function ragged.values_name(f) return f .. VALUES end

--- The column of the offsets of list feature f.
function ragged.offsets_name(f) return f .. OFFSETS end

--- part(name) -> feature, "values" | "offsets" when name is a column of a ragged
-- feature; nil otherwise.
function ragged.part(name)
  if name:sub(-#VALUES) == VALUES then return name:sub(1, -#VALUES - 1), "values" end
  if name:sub(-#OFFSETS) == OFFSETS then return name:sub(1, -#OFFSETS - 1), "offsets" end
  return nil
end

--- The feature a column belongs to: f for f, f__values and f__offsets.
function ragged.feature_of(name)
  return (ragged.part(name)) or name
end

return ragged
