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

--- A model with seeded weights (the same on every rank and in every call with seed).
function M.model(seed, opts)
  tk.manual_seed(seed)
  local o = { embedding_options = tk.EmbeddingOptions { embedding_dim_default = 8 }, post = "l2-norm" }
  for k, v in pairs(opts or {}) do o[k] = v end
  local model = tk.TwoTowerModel(M.schema, tk.MLPBlock({ 16, 8 }, { no_activation_last_layer = true }), o)
  model:compile { optimizer = tk.optim.Adam { learning_rate = 1e-2 } }
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

return M
