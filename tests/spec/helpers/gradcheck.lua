-- Finite-difference gradient checks from Lua (float32 tolerances).
local tk = require "towerkit"

local M = {}

-- Flat element access of a heap tensor through get/set with multi-indices.
local function index_of(shape, flat)
  local idx = {}
  for d = #shape, 1, -1 do
    idx[d] = flat % shape[d] + 1
    flat = math.floor(flat / shape[d])
  end
  return idx
end

-- Reduces a tensor to a scalar with fixed pseudo-random weights, so every element of
-- the output matters.
function M.project(out)
  local shape = out:shape()
  local n = out:numel()
  local w, s = {}, 12345
  for i = 1, n do
    s = (s * 1103515245 + 12345) % 2147483648
    w[i] = s / 2147483648 * 2 - 1
  end
  local flat = tk.tensor(w)
  return (out:reshape(n) * flat):sum()
end

-- loss_fn(ctx) builds a scalar loss in ctx. Returns the largest error found and a
-- description of it; params are heap tensors with requires_grad.
function M.check(loss_fn, params, opts)
  opts = opts or {}
  local eps, tol = opts.eps or 1e-2, opts.tol or 2e-2
  local ctx = tk.Context(7)
  ctx:train(opts.training or false)
  local loss = ctx:run(loss_fn, ctx)
  loss:backward()
  local worst, where = 0, "none"
  local function eval()
    local c = tk.Context(7)
    c:train(opts.training or false)
    c:grad_enabled(false)
    return c:run(loss_fn, c):item()
  end
  for pi, p in ipairs(params) do
    local g = ctx:grad(p)
    local shape, n = p:shape(), p:numel()
    local step = math.max(1, math.floor(n / 40))
    for flat = 0, n - 1, step do
      local idx = index_of(shape, flat)
      local keep = p:get(unpack(idx))
      p:set(keep + eps, unpack(idx))
      local up = eval()
      p:set(keep - eps, unpack(idx))
      local down = eval()
      p:set(keep, unpack(idx))
      local numeric = (up - down) / (2 * eps)
      local analytic = g and g:get(unpack(idx)) or 0
      local err = math.abs(numeric - analytic) / (1 + math.abs(numeric))
      if err > worst then
        worst = err
        where = ("param %d element %d: analytic %.6g numeric %.6g"):format(pi, flat, analytic, numeric)
      end
    end
  end
  return worst <= tol, where, worst
end

return M
