--- Optimizers to train by hand: SGD (momentum, nesterov), Adam, AdamW, Adagrad.
--
--   local opt = tk.optim.Adam{ learning_rate = 1e-2 }
--   for step = 1, 200 do
--     tk.reset()                                  -- free the last step
--     local loss = tk.mse(model(x), y)
--     loss:backward()
--     opt:step(model)                             -- or a list from named_parameters()
--   end
--
-- Embedding tables with sparse row gradients are updated at the cost of the rows a batch
-- touched. `lazy = true`: only those rows change, moments included (TF's LazyAdam);
-- `lazy = false`: every row follows the dense rule (Keras, PyTorch), an untouched row
-- catching up on the steps it skipped when next read (docs/optimizers.md). The default
-- is the core's (tk.optim.default_lazy()).
local core = require "towerkit.core"
local util = require "towerkit.util"
local context = require "towerkit.context"

local argerror = util.argerror

local optim = {}

local Optimizer = {}
Optimizer.__index = Optimizer

local function params_of(x, what)
  if core.is_block(x) then return x:parameters(true, true, true) end -- row-sharded tables' shards too
  if type(x) ~= "table" then
    argerror("%s: a block or a list of parameters expected, got %s", what, type(x))
  end
  return x
end

--- opt:step(params [, ctx]): params is a block, a list of tensors, or the
-- {name, tensor} pairs of named_parameters(). Uses the gradients of ctx (default:
-- the current context) and applies its deferred updates (batch-norm statistics).
function Optimizer:step(params, ctx)
  self._impl:step(params_of(params, "step"), ctx)
end

--- Clears gradients by resetting the current context (its intermediates go too).
function Optimizer:zero_grad()
  context.reset()
end

function Optimizer:learning_rate() return self._impl:lr() end
function Optimizer:set_learning_rate(lr) self._impl:set_lr(lr) end
function Optimizer:iterations() return self._impl:steps() end
--- Whether sparse gradients update only the touched rows (see the top of this file).
function Optimizer:lazy() return self._impl:lazy() end

local function make(kind, impl, opts)
  return setmetatable({ kind = kind, _impl = impl, config = opts }, Optimizer)
end

local function set(...)
  local s = {}
  for _, k in ipairs { ... } do s[k] = true end
  return s
end
local KNOWN = {
  SGD = set("learning_rate", "lr", "momentum", "nesterov", "weight_decay", "lazy"),
  Adam = set("learning_rate", "lr", "beta_1", "beta_2", "epsilon", "lazy"),
  AdamW = set("learning_rate", "lr", "beta_1", "beta_2", "epsilon", "weight_decay", "lazy"),
  Adagrad = set("learning_rate", "lr", "initial_accumulator_value", "epsilon", "lazy"),
}

-- A copy of the caller's options (never changed) with lr as learning_rate; unknown
-- keys are an error naming the known ones.
local function check(opts, name)
  if opts ~= nil and type(opts) ~= "table" then argerror("%s: options must be a table", name) end
  local copy = {}
  for k, v in pairs(opts or {}) do copy[k] = v end
  if name == "Adam" and copy.weight_decay ~= nil then
    if copy.weight_decay ~= 0 then argerror("Adam: weight_decay is decoupled in towerkit; use AdamW") end
    copy.weight_decay = nil -- 0: no decay, as without it
  end
  util.check_options(copy, KNOWN[name], name)
  if copy.lazy ~= nil and type(copy.lazy) ~= "boolean" then
    argerror("%s: lazy must be true or false, got %s", name, type(copy.lazy))
  end
  if copy.lr ~= nil and copy.learning_rate == nil then copy.learning_rate = copy.lr end
  copy.lr = nil
  return copy
end

--- SGD{learning_rate = 0.01, momentum = 0, nesterov = false, weight_decay = 0, lazy}
function optim.SGD(opts)
  opts = check(opts, "SGD")
  return make("SGD", core.sgd(opts), opts)
end

--- Adam{learning_rate = 0.001, beta_1 = 0.9, beta_2 = 0.999, epsilon = 1e-7, lazy}
function optim.Adam(opts)
  opts = check(opts, "Adam")
  return make("Adam", core.adam(opts), opts)
end

--- AdamW{learning_rate = 0.001, weight_decay = 0.004, ...}: decoupled weight decay.
function optim.AdamW(opts)
  opts = check(opts, "AdamW")
  if opts.weight_decay == nil then opts.weight_decay = 0.004 end
  return make("AdamW", core.adam(opts), opts)
end

--- Adagrad{learning_rate = 0.001, initial_accumulator_value = 0.1, epsilon = 1e-7, lazy}
function optim.Adagrad(opts)
  opts = check(opts, "Adagrad")
  return make("Adagrad", core.adagrad(opts), opts)
end

--- Scales all gradients of ctx (default: current) to a global norm of at most
-- max_norm; returns the norm before clipping.
optim.clip_grad_norm = core.clip_grad_norm

--- The default of `lazy` when an optimizer is built without it.
optim.default_lazy = core.optim_default_lazy

-- Learning-rate schedules: functions (step, base_lr) -> lr for compile{schedule =}.
-- step counts from 1.
local schedules = {}
optim.schedules = schedules

local function positive(v, what)
  if type(v) ~= "number" or v <= 0 then argerror("%s must be a positive number", what) end
end

--- The base learning rate throughout.
function schedules.constant()
  return function(_, base) return base end
end

--- Linear warm-up from 0 to the base rate over `steps` steps, then `after` (another
-- schedule, default constant) counted from the end of the warm-up.
function schedules.warmup(steps, after)
  positive(steps, "warmup: steps")
  after = after or schedules.constant()
  return function(step, base)
    if step <= steps then return base * step / steps end
    return after(step - steps, base)
  end
end

--- base * rate ^ (step / decay_steps) (staircase: the exponent floored).
function schedules.exponential_decay(o)
  o = o or {}
  positive(o.decay_steps, "exponential_decay: decay_steps")
  positive(o.decay_rate, "exponential_decay: decay_rate")
  return function(step, base)
    local e = step / o.decay_steps
    if o.staircase then e = math.floor(e) end
    return base * o.decay_rate ^ e
  end
end

--- Cosine decay from the base rate to base * alpha over decay_steps, then flat.
function schedules.cosine_decay(o)
  o = o or {}
  positive(o.decay_steps, "cosine_decay: decay_steps")
  local alpha = o.alpha or 0
  return function(step, base)
    local t = math.min(step, o.decay_steps) / o.decay_steps
    return base * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * t)) + alpha)
  end
end

return optim
