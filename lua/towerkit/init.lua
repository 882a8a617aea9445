--- towerkit: two-tower retrieval models in LuaJIT on a C core.
--
-- This module is the facade over the C binding `towerkit.core`: tensors and their
-- ops, contexts, blocks with Merlin's methods (towerkit.block), and optimizers
-- (towerkit.optim).
local core = require "towerkit.core"

local function pack(...) return { n = select("#", ...), ... } end

local tk = {
  _VERSION = core.version,
  core = core,
}

-- Tensors -------------------------------------------------------------------------
tk.tensor = core.tensor
tk.zeros = core.zeros
tk.ones = core.ones
tk.full = core.full
tk.randn = core.randn
tk.rand = core.rand
tk.matmul = core.matmul
tk.concat = core.concat
tk.stack = core.stack
tk.cosine = core.cosine
tk.embedding_lookup = core.embedding_lookup
tk.is_tensor = core.is_tensor
tk.Tensor = core.Tensor

--- Fills a new tensor with a named initializer ("glorot_uniform", "he_normal", ...).
-- @param shape table of dimensions
-- @param initializer name or {kind =, a =, b =}
-- @param seed number (default 0)
function tk.initialized(shape, initializer, seed)
  return core.init(shape, initializer, seed)
end

-- Activations as tensor methods: t:relu(), t:sigmoid(), ...
for _, name in ipairs { "relu", "sigmoid", "tanh", "gelu", "selu", "elu", "softplus" } do
  core.Tensor[name] = function(self) return self:activate(name) end
end
core.Tensor.pow2 = core.Tensor.square

-- Losses --------------------------------------------------------------------------
tk.losses = {
  cross_entropy = core.cross_entropy,
  mse = core.mse,
  bce_with_logits = core.bce_with_logits,
}
tk.mse = core.mse
tk.cross_entropy = core.cross_entropy

-- Contexts ------------------------------------------------------------------------
-- Ops run in a context: the context of their inputs when those were computed, else
-- the current one (the default context, or the one `ctx:run(fn)` makes current).
-- A context keeps every intermediate tensor and the gradient tape until it is reset.
tk.Context = core.Context
tk.current_context = core.current_context
tk.default_context = core.default_context

--- Resets the current context: frees the intermediates and gradients of the last
-- step. Tensors computed before are released (use t:clone() to keep one).
function tk.reset()
  core.current_context():reset()
end

--- Sets the training flag of the current context (dropout, batch-norm statistics).
function tk.set_training(on)
  core.current_context():train(on and true or false)
end

--- Runs fn with gradients off in the current context; returns its results.
function tk.no_grad(fn, ...)
  local ctx = core.current_context()
  local was = ctx:grad_enabled()
  ctx:grad_enabled(false)
  local res = pack(pcall(fn, ...))
  ctx:grad_enabled(was)
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, res.n)
end

tk.set_num_threads = core.set_num_threads
tk.get_num_threads = core.get_num_threads
--- blas_info() -> {kernel, best, below_best, user_set, threads, blas_threads, cpu, advice}:
-- the OpenBLAS kernel that runs and the best one for this CPU (towerkit.h, "BLAS kernel").
tk.blas_info = core.blas_info

--- JSON: decode(text) -> value (or nil, message), encode(value [, pretty]) -> text with
-- sorted keys, array(t) marks a table as an array, null is JSON's null.
tk.json = { decode = core.json_decode, encode = core.json_encode, array = core.json_array, null = core.json_null }

-- Schemas ------------------------------------------------------------------------
require("towerkit.schema")(tk)

-- Blocks and optimizers ------------------------------------------------------------
require("towerkit.block")(tk)
tk.optim = require("towerkit.optim")(tk)

-- Inputs, towers and the two-tower block --------------------------------------------
require("towerkit.inputs")(tk)
require("towerkit.mlp")(tk)
require("towerkit.two_tower")(tk)

-- Data, metrics, models ----------------------------------------------------------------
tk.data = require("towerkit.data")(tk)
tk.metrics = require("towerkit.metrics")(tk)
require("towerkit.model")(tk)
require("towerkit.merlin_methods")(tk)
require("towerkit.serving")(tk)

return tk
