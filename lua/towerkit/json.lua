--- JSON: decode(text) -> value (or nil, message), encode(value [, pretty]) -> text with
-- sorted keys, array(t) marks a table as an array, null is JSON's null.
local core = require "towerkit.core"

return { decode = core.json_decode, encode = core.json_encode, array = core.json_array, null = core.json_null }
