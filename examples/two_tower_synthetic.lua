-- The main example (`make run`): a two-tower retriever trained on synthetic interactions
-- with a planted structure, evaluated on the full item catalogue next to a popularity
-- baseline.
--   build/towerkit examples/two_tower_synthetic.lua [rows [seed [global_batch]]]
-- Under `mpirun -np N` it trains data-parallel (docs/distributed.md) and only rank 0
-- prints. batch_size is a rank's: each rank takes global_batch / N rows of every global
-- batch, so N ranks train on the batches one process does and reach its quality.
local tk = require "towerkit"

local rows = tonumber(arg and arg[1]) or 300000
local seed = tonumber(arg and arg[2]) or 1 -- the weights' and the shuffle's
local global_batch = tonumber(arg and arg[3]) or 1024
tk.manual_seed(41 + seed)
-- every rank runs this script; rank 0 reports (fit logs on rank 0 only by itself)
local say = tk.distributed.rank() == 0 and print or function() end

-- The features of bench/WORKLOAD.md's W1, with smaller id spaces so it runs in under a minute.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local schema = dofile(here .. "/w1_schema.lua")(tk, { users = 10000, items = 5000, brands = 500,
  shared_categories = true })

local t0 = tk.core.clock()
local data, items = tk.data.synthetic(schema, rows, { seed = 1, clusters = 50 })
local train, test = data:split(0.9, 7)
say(("data: %d training and %d test interactions, %d items (%.1f s)"):format(train:size(), test:size(),
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
model:fit(train, { batch_size = math.floor(global_batch / tk.distributed.size()), epochs = 3, seed = seed })

local ours = model:evaluate(test, { item_corpus = items })
local popular = tk.popularity_baseline(train, test, "item_id")
say()
say(("%-22s %10s %10s"):format("full catalogue", "recall@10", "ndcg@10"))
say(("%-22s %10.4f %10.4f"):format("two-tower (towerkit)", ours.recall_at_10, ours.ndcg_at_10))
say(("%-22s %10.4f %10.4f"):format("popularity baseline", popular.recall_at_10, popular.ndcg_at_10))
say(("two-tower / popularity: recall %.1fx, ndcg %.1fx"):format(ours.recall_at_10 / popular.recall_at_10,
  ours.ndcg_at_10 / popular.ndcg_at_10))
