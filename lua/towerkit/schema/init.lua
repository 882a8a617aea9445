--- Schemas: Merlin's Schema, ColumnSchema and Tags in pure Lua, one module each
-- (towerkit.schema.schema, .column, .tags) and Merlin's schema.json format
-- (towerkit.schema.json_format). See docs/schema.md.
return {
  Tags = require("towerkit.schema.tags").Tags,
  ColumnSchema = require("towerkit.schema.column").class,
  Schema = require "towerkit.schema.schema",
}
