-- Trains a tiny two-tower model for a few steps and saves it for the serving specs:
--   towerkit tests/spec/helpers/tiny_model.lua DIR [SEED [ITEMS]]
-- DIR gets the checkpoint plus item_embeddings.safetensors, and DIR/expected.txt the
-- top-5 ids of the to_top_k_encoder for user 4 (categories {1, 2, 3}, activity 0.5).
-- ITEMS: the catalogue's size (50; the sharded server's spec uses more than 4096).
local tk = require "towerkit"
local T = tk.Tags
local dir, seed, n_items = arg[1], tonumber(arg[2]) or 1, tonumber(arg[3]) or 50
tk.manual_seed(seed)
local schema = tk.Schema {
  tk.ColumnSchema("user_id", { tags = { T.USER_ID, T.CATEGORICAL }, int_domain = { max = 99 } }),
  tk.ColumnSchema("user_recent_categories", { tags = { T.USER, T.CATEGORICAL, T.LIST },
    int_domain = { max = 19, name = "category" }, value_count = { min = 1, max = 3 } }),
  tk.ColumnSchema("user_activity", { tags = { T.USER, T.CONTINUOUS } }),
  tk.ColumnSchema("item_id", { tags = { T.ITEM_ID, T.CATEGORICAL }, int_domain = { max = n_items - 1 } }),
  tk.ColumnSchema("item_category", { tags = { T.ITEM, T.CATEGORICAL }, int_domain = { max = 19, name = "category" } }),
}
local data, items = tk.data.synthetic(schema, 1000, { seed = seed, clusters = 5 })
local model = tk.TwoTowerModel(schema, tk.MLPBlock({ 16, 8 }, { no_activation_last_layer = true }),
  { embedding_options = tk.EmbeddingOptions { embedding_dim_default = 8 }, post = "l2-norm" })
model:compile { optimizer = tk.optim.Adam { learning_rate = 1e-2 } }
model:fit(data, { batch_size = 250, epochs = 1, verbose = false, seed = seed })
model:save(dir)
model:item_embeddings(items):save(dir .. "/item_embeddings.safetensors")
local enc = model:to_top_k_encoder(items, { k = 5 })
local ids = enc:query({ user_id = tk.tensor({ 4 }, "int64"),
  user_recent_categories__values = tk.tensor({ 1, 2, 3 }, "int64"),
  user_recent_categories__offsets = tk.tensor({ 0, 3 }, "int64"), user_activity = tk.tensor({ 0.5 }) })
local f = assert(io.open(dir .. "/expected.txt", "w"))
f:write(table.concat(ids:totable()[1], ","), "\n")
f:close()
print("saved " .. dir)
