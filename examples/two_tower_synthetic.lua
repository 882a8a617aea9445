-- The main example (`make run`): a two-tower retriever trained on synthetic interactions
-- with a planted structure, evaluated on the full item catalogue next to a popularity
-- baseline.
--   build/towerkit examples/two_tower_synthetic.lua [rows]
local tk = require "towerkit"

local rows = tonumber(arg and arg[1]) or 300000
tk.manual_seed(42)

-- The features of bench/WORKLOAD.md's W1, with smaller id spaces so it runs in under a minute.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local schema = dofile(here .. "/w1_schema.lua")(tk, { users = 10000, items = 5000, brands = 500,
  shared_categories = true })

local t0 = tk.core.clock()
local data, items = tk.data.synthetic(schema, rows, { seed = 1, clusters = 50 })
local train, test = data:split(0.9, 7)
print(("data: %d training and %d test interactions, %d items (%.1f s)"):format(train:size(), test:size(),
  items:size(), tk.core.clock() - t0))

local tower = tk.MLPBlock({ 128, 64 }, { no_activation_last_layer = true })
local model = tk.TwoTowerModel(schema, tower, {
  embedding_options = tk.EmbeddingOptions { embedding_dim_default = 32 },
  post = "l2-norm",
  logits_temperature = 0.05,
  logq = "streaming",
})
model:compile {
  optimizer = tk.optim.Adam { learning_rate = 3e-3 },
  metrics = { tk.metrics.RecallAt(10), tk.metrics.NDCGAt(10) },
}
model:fit(train, { batch_size = 1024, epochs = 3, seed = 1 })

local ours = model:evaluate(test, { item_corpus = items })
local popular = tk.popularity_baseline(train, test, "item_id")
print()
print(("%-22s %10s %10s"):format("full catalogue", "recall@10", "ndcg@10"))
print(("%-22s %10.4f %10.4f"):format("two-tower (towerkit)", ours.recall_at_10, ours.ndcg_at_10))
print(("%-22s %10.4f %10.4f"):format("popularity baseline", popular.recall_at_10, popular.ndcg_at_10))
print(("two-tower / popularity: recall %.1fx, ndcg %.1fx"):format(ours.recall_at_10 / popular.recall_at_10,
  ours.ndcg_at_10 / popular.ndcg_at_10))
