-- The features of bench/WORKLOAD.md's W1 as a Merlin schema: four user features (id, country,
-- age bucket, recent categories as a list of 1 to 5 ids) and a continuous activity; three
-- item features (id, category, brand) and a continuous price.
--   local w1_schema = dofile("examples/w1_schema.lua")
--   local schema = w1_schema(tk, { users = 10000, items = 5000, brands = 500,
--                                  shared_categories = true })
-- shared_categories: the recent categories and the item category read one table (their
-- domains share the name "category"); W1 itself gives each feature its own table.
return function(tk, o)
  local T = tk.Tags
  local category = o.shared_categories and "category" or nil
  return tk.Schema {
    tk.ColumnSchema("user_id", { tags = { T.USER_ID, T.CATEGORICAL }, int_domain = { max = o.users - 1 } }),
    tk.ColumnSchema("user_country", { tags = { T.USER, T.CATEGORICAL }, int_domain = { max = 199 } }),
    tk.ColumnSchema("user_age_bucket", { tags = { T.USER, T.CATEGORICAL }, int_domain = { max = 15 } }),
    tk.ColumnSchema("user_recent_categories", { tags = { T.USER, T.CATEGORICAL, T.LIST },
      int_domain = { max = 999, name = category }, value_count = { min = 1, max = 5 } }),
    tk.ColumnSchema("user_activity", { tags = { T.USER, T.CONTINUOUS } }),
    tk.ColumnSchema("item_id", { tags = { T.ITEM_ID, T.CATEGORICAL }, int_domain = { max = o.items - 1 } }),
    tk.ColumnSchema("item_category", { tags = { T.ITEM, T.CATEGORICAL }, int_domain = { max = 999, name = category } }),
    tk.ColumnSchema("item_brand", { tags = { T.ITEM, T.CATEGORICAL }, int_domain = { max = o.brands - 1 } }),
    tk.ColumnSchema("item_price", { tags = { T.ITEM, T.CONTINUOUS } }),
  }
end
