-- Shared set-up of the MPI specs (tests/mpi, run by scripts/run-tests.sh under
-- `mpirun --oversubscribe -np 2`): a small two-tower model on synthetic data.
local tk = require "towerkit"
local T = tk.Tags
local M = {}

M.schema = tk.Schema {
  tk.ColumnSchema("user_id", { tags = { T.USER_ID, T.CATEGORICAL }, int_domain = { max = 99 } }),
  tk.ColumnSchema("user_activity", { tags = { T.USER, T.CONTINUOUS } }),
  tk.ColumnSchema("item_id", { tags = { T.ITEM_ID, T.CATEGORICAL }, int_domain = { max = 59 } }),
  tk.ColumnSchema("item_category", { tags = { T.ITEM, T.CATEGORICAL }, int_domain = { max = 9 } }),
}

--- A model with seeded weights (the same on every rank and in every call with seed),
-- compiled with Adam (learning rate 1e-2); opts are added to TwoTowerModel's options,
-- compile_opts to compile's (embedding_sharding, clip_grad_norm, another optimizer).
function M.model(seed, opts, compile_opts)
  tk.manual_seed(seed)
  local o = { embedding_options = tk.EmbeddingOptions { embedding_dim_default = 8 }, post = "l2-norm" }
  for k, v in pairs(opts or {}) do o[k] = v end
  local model = tk.TwoTowerModel(M.schema, tk.MLPBlock({ 16, 8 }, { no_activation_last_layer = true }), o)
  local c = { optimizer = tk.optim.Adam { learning_rate = 1e-2 } }
  for k, v in pairs(compile_opts or {}) do c[k] = v end
  model:compile(c)
  return model
end

function M.data(n, seed) return tk.data.synthetic(M.schema, n, { seed = seed or 3, clusters = 4 }) end

--- Every weight of a model as one flat Lua array (named_parameters order).
function M.flat_weights(model)
  local out = {}
  for _, p in ipairs(model.block:named_parameters()) do
    local t = p[2]:totable()
    local function add(v)
      if type(v) == "table" then for _, x in ipairs(v) do add(x) end else out[#out + 1] = v end
    end
    add(t)
  end
  return out
end

--- m:fit(data) for a spec: batch size 16 a rank, one epoch, quiet, seed 5; opts override.
function M.fit(m, data, opts)
  local o = { batch_size = 16, epochs = 1, verbose = false, seed = 5 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return m:fit(data, o)
end

--- Raises, naming the first weight that differs, unless a and b (flat arrays) are equal
-- bit for bit.
function M.same_bits(a, b, what)
  if #a ~= #b then error(("%s: %d weights vs %d"):format(what, #a, #b), 2) end
  for i = 1, #a do
    if a[i] ~= b[i] then error(("%s: weight %d: %.9g vs %.9g"):format(what, i, a[i], b[i]), 2) end
  end
end

--- The largest |a[i] - b[i]| of two flat arrays of one length.
function M.max_diff(a, b)
  if #a ~= #b then error(("max_diff: %d values vs %d"):format(#a, #b), 2) end
  local d = 0
  for i = 1, #a do d = math.max(d, math.abs(a[i] - b[i])) end
  return d
end

--- Raises unless every rank's flat weights w are rank 0's, bit for bit (any number of
-- ranks; a collective: every rank calls it).
function M.ranks_agree(w)
  local all = tk.distributed.allgather(tk.tensor(w)):totable()
  local n = #w
  if #all ~= n * tk.distributed.size() then
    error(("ranks_agree: %d values gathered, %d weights on each of %d ranks expected"):format(#all, n,
      tk.distributed.size()), 2)
  end
  for r = 1, tk.distributed.size() - 1 do
    for i = 1, n do
      if all[i] ~= all[r * n + i] then
        error(("weight %d: %.9g on rank 0, %.9g on rank %d"):format(i, all[i], all[r * n + i], r), 2)
      end
    end
  end
end

--- The row-sharded tables of a model: {path = {lo =, count =, rows =, tensor =}} (this
-- rank's rows [lo, lo + count) of rows; tensor the parameter, the shard).
function M.shards(m)
  local out = {}
  for _, p in ipairs(m.block:parameters(true, true, true)) do
    local lo, count, rows = tk.core.dist_table_info(p[2])
    if lo then out[p[1]] = { lo = lo, count = count, rows = rows, tensor = p[2] } end
  end
  return out
end

--- A temporary directory name every rank agrees on and no other run uses: name, rank
-- 0's pid (summed over the ranks) and the time.
function M.shared_dir(name)
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("*n")
  f:close()
  local id = tk.distributed.allreduce(tk.distributed.rank() == 0 and pid or 0)
  return ("/tmp/towerkit-mpi-%s-%d-%d"):format(name, id, os.time() % 100000)
end

return M
