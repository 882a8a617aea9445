--- Contexts. Ops run in a context: the context of their inputs when those were
-- computed, else the current one (the default context, or the one `ctx:run(fn)` makes
-- current). A context keeps every intermediate tensor and the gradient tape until it is
-- reset.
local core = require "towerkit.core"

local context = {
  Context = core.Context,
  current_context = core.current_context,
  default_context = core.default_context,
}

local function pack(...) return { n = select("#", ...), ... } end

--- Resets the current context: frees the intermediates and gradients of the last
-- step. Tensors computed before are released (use t:clone() to keep one).
function context.reset()
  core.current_context():reset()
end

--- Sets the training flag of the current context (dropout, batch-norm statistics).
function context.set_training(on)
  core.current_context():train(on and true or false)
end

--- Runs fn with gradients off in the current context; returns its results.
function context.no_grad(fn, ...)
  local ctx = core.current_context()
  local was = ctx:grad_enabled()
  ctx:grad_enabled(false)
  local res = pack(pcall(fn, ...))
  ctx:grad_enabled(was)
  if not res[1] then error(res[2], 0) end -- fn's error, passed on as it is
  return unpack(res, 2, res.n)
end

return context
