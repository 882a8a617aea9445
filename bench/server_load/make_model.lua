-- Trains the load-test model: the W1 features of examples/two_tower_synthetic.lua
-- (5000 items, 64-dimensional towers) for one short epoch, saved with its item
-- embeddings, plus BODIES: one /recommend request body per line for 1000 users.
--   towerkit bench/server_load/make_model.lua DIR BODIES
local tk = require "towerkit"
local dir, bodies = arg[1], arg[2]
tk.manual_seed(42)
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local schema = dofile(here .. "/../../examples/w1_schema.lua")(tk, { users = 10000, items = 5000, brands = 500,
  shared_categories = true })
local data, items = tk.data.synthetic(schema, 20000, { seed = 1, clusters = 50 })
local model = tk.TwoTowerModel(schema, tk.MLPBlock({ 128, 64 }, { no_activation_last_layer = true }), {
  embedding_options = tk.EmbeddingOptions { embedding_dim_default = 32 }, post = "l2-norm",
  logits_temperature = 0.05 })
model:compile { optimizer = tk.optim.Adam { learning_rate = 3e-3 } }
model:fit(data, { batch_size = 1024, epochs = 1, seed = 1, verbose = false })
model:save(dir)
model:item_embeddings(items):save(dir .. "/item_embeddings.safetensors")
local f = assert(io.open(bodies, "w"))
for u = 0, 999 do
  f:write(tk.json.encode({ k = 10, features = {
    user_id = (u * 7919) % 10000, user_country = u % 200, user_age_bucket = u % 16,
    user_recent_categories = tk.json.array { u % 1000, (u * 31) % 1000, (u * 17) % 1000 },
    user_activity = (u % 100) / 100 } }), "\n")
end
f:close()
print(("model: %d items, saved to %s"):format(items:size(), dir))
