-- Two-tower retrieval on MovieLens-100k with user and item features, evaluated
-- leave-last-out (each user's latest rating is the test query) on the full catalogue.
--   build/towerkit examples/movielens.lua ML100K_DIR [epochs]
-- ML100K_DIR is the unpacked "ml-100k" folder of the public MovieLens-100k archive from
-- GroupLens (files u.data, u.user, u.item); towerkit ships no dataset.
local tk = require "towerkit"

local dir = arg and arg[1]
if not dir then
  io.stderr:write("usage: towerkit examples/movielens.lua ML100K_DIR [epochs]\n")
  os.exit(2)
end
local epochs = tonumber(arg[2]) or 10
tk.manual_seed(7)

local here = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".")
local convert = dofile(here .. "/../scripts/movielens_convert.lua")
local out_dir = os.getenv("TMPDIR") and (os.getenv("TMPDIR") .. "/towerkit-movielens") or "/tmp/towerkit-movielens"
local csv, schema_path = convert(dir, out_dir)
local schema = tk.Schema.read_json(schema_path)
local data = tk.data.read_csv(csv, schema)

-- leave-last-out: the latest interaction of each user (ties: the larger movie id)
local users = data:column("userId"):totable()
local times = data:column("timestamp"):totable()
local movies = data:column("movieId"):totable()
local last = {}
for r = 1, #users do
  local u, best = users[r], last[users[r]]
  if not best or times[r] > times[best] or (times[r] == times[best] and movies[r] > movies[best]) then last[u] = r end
end
local is_test, train_rows, test_rows = {}, {}, {}
for _, r in pairs(last) do is_test[r] = true end
for r = 1, #users do
  if is_test[r] then test_rows[#test_rows + 1] = r - 1 else train_rows[#train_rows + 1] = r - 1 end
end
local train = data:select(tk.tensor(train_rows, "int64"))
local test = data:select(tk.tensor(test_rows, "int64"))
local items = data:unique_by("movieId")
print(("movielens: %d training interactions, %d test users, %d movies"):format(train:size(), test:size(), items:size()))

local model = tk.TwoTowerModel(schema, tk.MLPBlock({ 128, 64 }, { no_activation_last_layer = true }), {
  embedding_options = tk.EmbeddingOptions { infer_embedding_sizes = true, infer_embedding_sizes_multiplier = 4.0 },
  post = "l2-norm",
  logits_temperature = 0.1,
})
model:compile { optimizer = tk.optim.Adam { learning_rate = 2e-3 } }
model:fit(train, { batch_size = 256, epochs = epochs, seed = 1 })

-- Both rankings skip the movies each user rated in training (except the held-out one):
-- the same protocol for the model and the baseline.
local metrics = { tk.metrics.RecallAt(10), tk.metrics.NDCGAt(10), tk.metrics.RecallAt(50) }
local ours = model:evaluate(test, { item_corpus = items, exclude_seen = train, metrics = metrics })
local popular = model:popularity_baseline(train, test, { exclude_seen = train, metrics = metrics })
print()
print(("%-22s %10s %10s %10s"):format("leave-last-out", "recall@10", "ndcg@10", "recall@50"))
for _, row in ipairs { { "two-tower (towerkit)", ours }, { "popularity baseline", popular } } do
  local m = row[2]
  print(("%-22s %10.4f %10.4f %10.4f"):format(row[1], m.recall_at_10, m.ndcg_at_10, m.recall_at_50))
end
print(("two-tower / popularity: recall@10 %.2fx, ndcg@10 %.2fx, recall@50 %.2fx"):format(
  ours.recall_at_10 / popular.recall_at_10, ours.ndcg_at_10 / popular.ndcg_at_10,
  ours.recall_at_50 / popular.recall_at_50))
