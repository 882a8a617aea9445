--- Shared helpers of the towerkit benchmarks (bench/WORKLOAD.md): the W1 schema and data,
-- Zipf-like ids, timing statistics and JSON lines.
local tk = require "towerkit"

local M = {}

M.B = 1024
M.THREADS = tonumber(os.getenv("TK_BENCH_THREADS") or "2")
-- TK_BENCH_LAZY=1 / 0: the optimizer's lazy option (unset: the default, tk.optim.default_lazy())
M.LAZY = ({ ["1"] = true, ["0"] = false })[os.getenv("TK_BENCH_LAZY") or ""]

--- The W1 schema: four query features and three item features (plus one continuous
-- each), every categorical feature with its own table of dimension 64.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local w1_schema = dofile(here .. "/../examples/w1_schema.lua")

--- scale (default 1) multiplies the user, item and brand tables' cardinalities (W1 x 10:
-- 1M users, 2M items, 50k brands).
function M.schema(scale)
  scale = scale or 1
  return w1_schema(tk, { users = 100000 * scale, items = 200000 * scale, brands = 5000 * scale })
end

--- The W1 model: towers 256-128 (no activation on the last layer), L2 norm, embeddings
-- of dimension 64, temperature 0.05, plain in-batch softmax (label = diagonal, no
-- false-negative masking: the peers do none), Adam lr 1e-3, betas (0.9, 0.999), eps 1e-8.
-- compile_opts (optional) are added to compile's (embedding_sharding, ...), model_opts
-- (optional) to TwoTowerModel's (embedding_sharding = "row": the tables built sharded).
function M.model(schema, compile_opts, model_opts)
  tk.manual_seed(42)
  local tower = tk.MLPBlock({ 256, 128 }, { no_activation_last_layer = true })
  local mo = {
    embedding_options = tk.EmbeddingOptions { embedding_dim_default = 64, combiner = "mean" },
    post = "l2-norm",
    logits_temperature = 0.05,
    remove_false_negatives = false,
  }
  for k, v in pairs(model_opts or {}) do mo[k] = v end
  local model = tk.TwoTowerModel(schema, tower, mo)
  local o = {
    optimizer = tk.optim.Adam { learning_rate = 1e-3, beta_1 = 0.9, beta_2 = 0.999, epsilon = 1e-8, lazy = M.LAZY },
  }
  for k, v in pairs(compile_opts or {}) do o[k] = v end
  model:compile(o)
  return model
end

-- Zipf(s)-like ranks in [0, n): P(r) ~ 1 / (r + 1)^s, by inverse CDF (as the peers do).
local function zipf(n, s, rng)
  return tk.data.zipf_sampler(n, s, rng)
end

--- n interactions of W1 (seeded), as a Dataset; scale as M.schema's (the user, item and
-- brand ids drawn from the larger id spaces).
function M.w1_data(n, seed, scale)
  scale = scale or 1
  local rng = tk.data.Random(seed or 1)
  local uid, ucountry, uage, uact = zipf(100000 * scale, 1.1, rng), zipf(200, 1.1, rng), zipf(16, 1.1, rng), nil
  local cat = zipf(1000, 1.1, rng)
  local iid, brand = zipf(200000 * scale, 1.1, rng), zipf(5000 * scale, 1.1, rng)
  local c = { user_id = {}, user_country = {}, user_age_bucket = {}, user_activity = {},
    item_id = {}, item_category = {}, item_brand = {}, item_price = {} }
  local values, offsets = {}, { 0 }
  for r = 1, n do
    c.user_id[r] = uid()
    c.user_country[r] = ucountry()
    c.user_age_bucket[r] = uage()
    local len = 1 + rng:int(5)
    for _ = 1, len do values[#values + 1] = cat() end
    offsets[#offsets + 1] = #values
    c.user_activity[r] = rng:next()
    c.item_id[r] = iid()
    c.item_category[r] = cat()
    c.item_brand[r] = brand()
    c.item_price[r] = rng:next()
  end
  local cols = {}
  for name, v in pairs(c) do
    local float = name == "user_activity" or name == "item_price"
    cols[name] = tk.tensor(v, float and "float32" or "int64")
  end
  cols.user_recent_categories__values = tk.tensor(values, "int64")
  cols.user_recent_categories__offsets = tk.tensor(offsets, "int64")
  return tk.data.Dataset(cols)
end

--- W2's catalogue of n items (default 200,000) as a Dataset: every item id 0..n-1 once,
-- its category (of 1000) and brand (of 5000) Zipf-like, its price uniform (seed 3).
function M.w2_items(n)
  n = n or 200000
  local rng = tk.data.Random(3)
  local cat, brand = zipf(1000, 1.1, rng), zipf(5000, 1.1, rng)
  local ids, cats, brands, prices = {}, {}, {}, {}
  for i = 1, n do
    ids[i], cats[i], brands[i], prices[i] = i - 1, cat(), brand(), rng:next()
  end
  return tk.data.Dataset {
    item_id = tk.tensor(ids, "int64"), item_category = tk.tensor(cats, "int64"),
    item_brand = tk.tensor(brands, "int64"), item_price = tk.tensor(prices, "float32"),
  }
end

function M.median(xs)
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  local n = #s
  if n % 2 == 1 then return s[(n + 1) / 2] end
  return (s[n / 2] + s[n / 2 + 1]) / 2
end

function M.minmax(xs)
  local lo, hi = math.huge, -math.huge
  for _, x in ipairs(xs) do lo, hi = math.min(lo, x), math.max(hi, x) end
  return lo, hi
end

--- Peak resident memory of this process in MiB (VmHWM).
function M.peak_rss_mib()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local kb
  for line in f:lines() do
    local v = line:match("^VmHWM:%s+(%d+)")
    if v then kb = tonumber(v) end
  end
  f:close()
  return kb and kb / 1024
end

--- One line naming the OpenBLAS kernel that runs, the best one for this CPU and the CPU:
-- figures compare only between runs of one kernel.
function M.print_blas()
  local b = tk.blas_info()
  print(("# openblas kernel %s (best for this CPU: %s), cpu %s"):format(b.kernel, b.best, b.cpu))
  io.stdout:flush()
end

--- One JSON line: {"workload":..., "system":"towerkit", "figure":..., "unit":..., "median":..., "min":..., "max":..., "runs":[...], extra...}
function M.emit(fields)
  local keys = {}
  for k in pairs(fields) do keys[#keys + 1] = k end
  local order = { workload = 1, system = 2, figure = 3, unit = 4, median = 5, min = 6, max = 7 }
  table.sort(keys, function(a, b)
    local oa, ob = order[a] or 100, order[b] or 100
    if oa ~= ob then return oa < ob end
    return a < b
  end)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = fields[k]
    local s
    if type(v) == "number" then
      s = (v == math.floor(v) and math.abs(v) < 1e15) and ("%d"):format(v) or ("%.6g"):format(v)
    elseif type(v) == "table" then
      local a = {}
      for i, x in ipairs(v) do a[i] = ("%.6g"):format(x) end
      s = "[" .. table.concat(a, ", ") .. "]"
    elseif type(v) == "boolean" then
      s = tostring(v)
    else
      s = ('"%s"'):format(tostring(v))
    end
    parts[#parts + 1] = ('"%s": %s'):format(k, s)
  end
  print("{" .. table.concat(parts, ", ") .. "}")
  io.stdout:flush()
end

return M
