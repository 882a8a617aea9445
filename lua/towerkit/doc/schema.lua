--- help entries: the methods of Schema and ColumnSchema (lua/towerkit/schema/).
local D = require("towerkit.doc").define

local function S(name, sig, summary, example)
  D("Schema:" .. name) { "schema:" .. sig, summary, merlin = "Schema." .. name, example = example }
end
S("column", "column(name) -> ColumnSchema", "The column called name; an error naming the known columns when absent.",
  "schema:column(\"item_id\")")
S("get", "get(name) -> ColumnSchema or nil", "The column called name, or nil.", "schema:get(\"item_id\")")
S("column_names", "column_names() -> {name, ...}", "The names of the columns, in order.", "schema:column_names()")
S("columns", "columns() -> iterator", "Iterates (index, column).", "for i, col in schema:columns() do print(col.name) end")
S("first", "first() -> ColumnSchema", "The first column (an error when the schema is empty).", "schema:first()")
S("select_by_tag", "select_by_tag(tags) -> Schema", "The columns that have any of tags (a tag or a list), in schema order;\n" ..
  "a compound tag (USER_ID) needs all of its parts.", "schema:select_by_tag(tk.Tags.USER)")
S("remove_by_tag", "remove_by_tag(tags) -> Schema", "The columns that have none of tags.", "schema:remove_by_tag(tk.Tags.TARGET)")
S("select_by_name", "select_by_name(names) -> Schema", "The columns named in names, in that order (unknown names\nskipped).",
  "schema:select_by_name { \"user_id\", \"item_id\" }")
S("without", "without(names) -> Schema", "The schema without the named columns.", "schema:without(\"user_activity\")")
S("copy", "copy() -> Schema", "A deep copy.", "schema:copy()")
S("equals", "equals(other) -> boolean", "Same columns, order and fields (compares to_table()).", "schema:equals(schema:copy())")
S("to_table", "to_table() -> table", "The schema as Merlin's schema.json structure (plain tables).", "schema:to_table()")
S("to_json", "to_json([pretty = true]) -> text", "The schema as schema.json text.", "print(schema:to_json())")
S("write_json", "write_json(path) -> path", "Writes schema.json atomically.", "schema:write_json(\"schema.json\")")

local function C(name, sig, summary, example)
  D("ColumnSchema:" .. name) { "col:" .. sig, summary, merlin = "ColumnSchema." .. name, example = example }
end
C("cardinality", "cardinality() -> n or nil", "int_domain.max + 1, or nil without a domain.", "schema:column(\"item_id\"):cardinality()")
C("has_tag", "has_tag(tag) -> boolean", "Whether the column has tag (a compound tag needs all its parts).",
  "col:has_tag(tk.Tags.ITEM_ID)")
C("copy", "copy() -> ColumnSchema", "A deep copy.", "col:copy()")
C("to_table", "to_table() -> table", "The feature object of schema.json (name, type, intDomain, valueCount,\nannotation).",
  "col:to_table()")
C("with_dtype", "with_dtype(dtype [, {is_list =, is_ragged =}]) -> ColumnSchema",
  "A copy with another dtype (a non-integer dtype drops the domain).", "col:with_dtype(\"float32\")")
C("with_name", "with_name(name) -> ColumnSchema", "A copy with another name.", "col:with_name(\"movie_id\")")
C("with_properties", "with_properties(properties) -> ColumnSchema", "A copy with properties merged in (new values win).",
  "col:with_properties { domain = { min = 0, max = 9 } }")
C("with_tags", "with_tags(tags) -> ColumnSchema", "A copy with tags added.", "col:with_tags { tk.Tags.ITEM }")
