--- towerkit: two-tower retrieval models in LuaJIT on a C core.
--
-- This module only assembles the public table `tk` from the modules below; each of
-- them requires what it uses. The C binding is `towerkit.core`.
local core = require "towerkit.core"
local tensor = require "towerkit.tensor"
local context = require "towerkit.context"
local json = require "towerkit.json"
local seed = require "towerkit.seed"
local schema = require "towerkit.schema"
local block = require "towerkit.block"
local model = require "towerkit.model"
local serving = require "towerkit.serving"

local tk = {
  _VERSION = core.version,
  core = core,
}

-- Copies the named entries of a module into tk.
local function export(module, names)
  for _, name in ipairs(names) do tk[name] = assert(module[name], name) end
end

-- Tensors, losses and contexts
export(tensor, { "tensor", "zeros", "ones", "full", "randn", "rand", "matmul", "concat", "stack", "cosine",
  "embedding_lookup", "is_tensor", "Tensor", "initialized", "losses" })
tk.mse = tensor.losses.mse
tk.cross_entropy = tensor.losses.cross_entropy
export(context, { "Context", "current_context", "default_context", "reset", "set_training", "no_grad" })
tk.set_num_threads = core.set_num_threads
tk.get_num_threads = core.get_num_threads
--- blas_info() -> {kernel, best, below_best, user_set, threads, blas_threads, cpu, advice}:
-- the OpenBLAS kernel that runs and the best one for this CPU (towerkit.h, "BLAS kernel").
tk.blas_info = core.blas_info
tk.json = json
--- tk.io.write_atomic(path, text): the atomic file write every file of the Lua layer uses.
tk.io = { write_atomic = require("towerkit.util").write_atomic }

-- Schemas
export(schema, { "Tags", "Schema", "ColumnSchema" })

-- Blocks
tk.manual_seed = seed.manual_seed
tk._take_seed = seed.take
tk._check_activation = block.check_activation
export(block, { "Block", "Dense", "Activation", "L2Norm", "Dropout", "BatchNormalization", "Filter", "AsTabular",
  "Aggregation", "LuaBlock", "Debug", "SequentialBlock", "ParallelBlock", "ResidualBlock", "WithShortcut",
  "as_block", "resolve_post", "MLPBlock", "DenseResidualBlock", "InputBlock", "EmbeddingOptions",
  "EmbeddingOptionsClass", "infer_embedding_dim", "apply_initializer", "TwoTowerBlock", "registry",
  "register_block", "set_meta", "get_meta", "from_config", "requires_schema", "rest_branch" })
tk.BatchNorm = block.BatchNormalization

-- Optimizers, data, metrics, models
tk.optim = require "towerkit.optim"
tk.data = require "towerkit.data"
tk.metrics = require "towerkit.metrics"
export(model, { "TwoTowerModel", "is_model", "load", "popularity_baseline" })
tk.History = require("towerkit.history").new
tk.callbacks = require "towerkit.callbacks"
--- tk.distributed: data-parallel training under mpirun (docs/distributed.md)
tk.distributed = require "towerkit.distributed"

-- Serving
tk.Model = serving.Model
tk.ModelSlot = serving.ModelSlot
tk.serving = { info = serving.info, query = serving.query }

-- help(x) and the REPL (towerkit.doc reads lua/towerkit/doc/*.lua on first use)
tk.help = require("towerkit.doc").help
local plot = require "towerkit.plot"
tk.plot = { recall_at_k = plot.recall_at_k, history = plot.history }
tk.VERSION = tk._VERSION

return tk
