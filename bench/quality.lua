--- Quality against PyTorch (issue 11): the same two-tower model trained on the same
-- synthetic data, from the same initial weights, on the same batches in the same order,
-- by towerkit and by PyTorch (bench/peers/torch_quality.py), over several seeds; both
-- evaluated by towerkit's Model:evaluate (one metric implementation: PyTorch's final
-- weights are loaded back into a towerkit model).
--   build/towerkit bench/quality.lua [seeds=10] [dir]     (make bench-quality)
-- The files of each seed go to dir (kept), else to a temporary directory (removed).
-- Per seed s: tk.data.synthetic(seed = s), a 90/10 split (seed s), tk.manual_seed(s) for
-- the initial weights, fit's shuffles from seed s. The model: embeddings 32, MLP 64-32
-- (no activation on the last layer), l2 norm, temperature 0.05, in-batch softmax with
-- false-negative masking, batch 256, dense Adam (lr 3e-3, betas 0.9 and 0.999, eps
-- 1e-8: PyTorch's defaults), 3 epochs. The figure: recall@10
-- over the full catalogue (1000 items) on the test rows, mean and standard error over
-- the seeds; towerkit's mean must not be below PyTorch's by more than one standard error.
local tk = require "towerkit"
local common = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/common.lua")

local SEEDS = tonumber(arg and arg[1]) or tonumber(os.getenv("TK_QUALITY_SEEDS") or "") or 10
local dir = arg and arg[2]
local ROWS, BATCH, EPOCHS, LR = 50000, 256, 3, 3e-3
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

local T = tk.Tags
local schema = tk.Schema {
  tk.ColumnSchema("user_id", { tags = { T.USER_ID, T.CATEGORICAL }, int_domain = { max = 1999 } }),
  tk.ColumnSchema("user_group", { tags = { T.USER, T.CATEGORICAL }, int_domain = { max = 49 } }),
  tk.ColumnSchema("item_id", { tags = { T.ITEM_ID, T.CATEGORICAL }, int_domain = { max = 999 } }),
  tk.ColumnSchema("item_category", { tags = { T.ITEM, T.CATEGORICAL }, int_domain = { max = 99 } }),
}

local function new_model(seed)
  tk.manual_seed(seed)
  local model = tk.TwoTowerModel(schema, tk.MLPBlock({ 64, 32 }, { no_activation_last_layer = true }), {
    embedding_options = tk.EmbeddingOptions { embedding_dim_default = 32 },
    post = "l2-norm",
    logits_temperature = 0.05,
  })
  model:compile { optimizer = tk.optim.Adam { learning_rate = LR, beta_1 = 0.9, beta_2 = 0.999, epsilon = 1e-8, lazy = false } }
  model.block:build()
  return model
end

local function write_params(path, model)
  local names, tensors = {}, {}
  for i, p in ipairs(model.block:named_parameters()) do names[i], tensors[i] = p[1], p[2] end
  tk.core.safetensors_write(path, names, tensors)
end

local function write_columns(path, datasets)
  local names, tensors = {}, {}
  for prefix, d in pairs(datasets) do
    for _, c in ipairs(d:column_names()) do
      names[#names + 1], tensors[#tensors + 1] = prefix .. "/" .. c, d:column(c)
    end
  end
  tk.core.safetensors_write(path, names, tensors)
end

local function stats(xs)
  local n, sum = #xs, 0
  for _, x in ipairs(xs) do sum = sum + x end
  local mean, ss = sum / n, 0
  for _, x in ipairs(xs) do ss = ss + (x - mean) ^ 2 end
  return mean, math.sqrt(ss / (n - 1) / n)
end

local keep = dir ~= nil -- a directory given is kept; a temporary one is removed at the end
if not dir then
  dir = os.tmpname()
  os.remove(dir)
end
os.execute("mkdir -p " .. dir)
common.print_blas()
print(("# %d seeds, %d interactions each, batch %d, %d epochs, Adam %g (dense); files in %s"):format(SEEDS, ROWS,
  BATCH, EPOCHS, LR, dir))
io.stdout:flush()

-- 1. towerkit: data, initial weights and batch orders written for the peer; then trained.
local runs = {}
local tk_recall, tk_seconds = {}, 0
for s = 1, SEEDS do
  local data, items = tk.data.synthetic(schema, ROWS, { seed = s, clusters = 20 })
  local train, test = data:split(0.9, s)
  local model = new_model(s)
  local sdir = ("%s/seed_%d"):format(dir, s)
  os.execute("mkdir -p " .. sdir)
  write_params(sdir .. "/init.safetensors", model)
  write_columns(sdir .. "/data.safetensors", { train = train, test = test, items = items })
  -- fit's orders: epoch e shuffles with seed s * 1000 + e (Model:fit, Dataset:batches)
  local names, orders = {}, {}
  for e = 1, EPOCHS do
    names[e], orders[e] = "epoch_" .. e, tk.core.shuffle(tk.core.arange(train:size()), s * 1000 + e)
  end
  names[#names + 1], orders[#orders + 1] = "initial_item_embeddings", model:item_embeddings(items).embeddings
  tk.core.safetensors_write(sdir .. "/order.safetensors", names, orders)
  local t0 = tk.core.clock()
  model:fit(train, { batch_size = BATCH, epochs = EPOCHS, seed = s, verbose = false })
  tk_seconds = tk_seconds + tk.core.clock() - t0
  tk_recall[s] = model:evaluate(test, { item_corpus = items }).recall_at_10
  runs[s] = { test = test, items = items, dir = sdir }
  print(("seed %2d  towerkit recall@10 %.4f"):format(s, tk_recall[s]))
  io.stdout:flush()
end

-- 2. PyTorch on the same files: it writes seed_s/final.safetensors.
local cmd = ("/usr/bin/python3 %s/peers/torch_quality.py %s %d %d %d %g"):format(here, dir, SEEDS, BATCH, EPOCHS, LR)
local ok = os.execute(cmd)
if ok ~= 0 and ok ~= true then error("bench/quality.lua: the PyTorch peer failed: " .. cmd) end

-- 3. PyTorch's final weights evaluated by towerkit's evaluate.
local pt_recall = {}
for s = 1, SEEDS do
  local model = new_model(s)
  local final = tk.core.safetensors_read(runs[s].dir .. "/final.safetensors")
  local weights = {}
  for i, p in ipairs(model.block:named_parameters()) do
    weights[i] = final[p[1]] or error("final.safetensors has no " .. p[1])
  end
  model.block:set_weights(weights)
  pt_recall[s] = model:evaluate(runs[s].test, { item_corpus = runs[s].items }).recall_at_10
  print(("seed %2d  towerkit %.4f  pytorch %.4f"):format(s, tk_recall[s], pt_recall[s]))
end

local tm, tse = stats(tk_recall)
local pm, pse = stats(pt_recall)
local diffs = {}
for s = 1, SEEDS do diffs[s] = tk_recall[s] - pt_recall[s] end
local dm, dse = stats(diffs)
local se = math.sqrt(tse ^ 2 + pse ^ 2)
print()
print(("recall@10 over %d seeds (mean +- standard error):"):format(SEEDS))
print(("  towerkit %.4f +- %.4f"):format(tm, tse))
print(("  pytorch  %.4f +- %.4f"):format(pm, pse))
print(("  difference (towerkit - pytorch) %+.4f = %+.2f standard errors of the difference (%.4f);" ..
  " paired over seeds %+.2f (%.4f)"):format(tm - pm, (tm - pm) / se, se, dm / dse, dse))
print(("  towerkit training: %.2f s per seed"):format(tk_seconds / SEEDS))
local pass = tm >= pm - math.max(tse, pse)
print(pass and "ok: towerkit's mean is not below PyTorch's by more than one standard error"
  or "FAIL: towerkit's mean is below PyTorch's by more than one standard error")
common.emit { workload = "quality", system = "towerkit", figure = "recall_at_10", unit = "recall", median = tm,
  mean = tm, se = tse, runs = tk_recall }
common.emit { workload = "quality", system = "pytorch", figure = "recall_at_10", unit = "recall", median = pm,
  mean = pm, se = pse, runs = pt_recall }
if not keep then os.execute("rm -rf " .. dir) end
os.exit(pass and 0 or 1)
