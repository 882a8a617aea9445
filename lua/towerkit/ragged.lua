--- The names of ragged columns. A list feature `f` travels as two columns, its values
-- (the ids of every row, concatenated) and its offsets (N + 1 row starts), the layout the
-- core's blocks read. The names come from the core's one helper (tk_ragged_name_split and
-- tk_ragged_name_join in towerkit.h), so C and Lua agree on them; every Lua module names
-- the columns through here.
local core = require "towerkit.core"

local ragged = {}

--- The column of the values of list feature f.
function ragged.values_name(f) return core.ragged_join(f, "values") end

--- The column of the offsets of list feature f.
function ragged.offsets_name(f) return core.ragged_join(f, "offsets") end

--- part(name) -> feature, "values" | "offsets" when name is a column of a ragged
-- feature; nil otherwise.
ragged.part = core.ragged_split

--- The feature a column belongs to: f for f, f__values and f__offsets.
function ragged.feature_of(name)
  return (core.ragged_split(name)) or name
end

return ragged
