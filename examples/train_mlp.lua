-- Builds a small block graph with Merlin's combinators and trains it by hand.
--   build/towerkit examples/train_mlp.lua
local tk = require "towerkit"

tk.manual_seed(1)

-- y = sin(3 x1) * x2 + 0.5 x3 on 512 points
local n, xs, ys = 512, {}, {}
local s = 7
local function rnd()
  s = (s * 1103515245 + 12345) % 2147483648
  return s / 2147483648 * 2 - 1
end
for i = 1, n do
  local a, b, c = rnd(), rnd(), rnd()
  xs[i], ys[i] = { a, b, c }, { math.sin(3 * a) * b + 0.5 * c }
end
local x, y = tk.tensor(xs), tk.tensor(ys)

-- dense -> (residual dense) -> shortcut back to the input -> dense
local model = tk.Dense(32, { activation = "tanh" })
  :connect_with_residual(tk.Dense(32, { activation = "tanh" }))
  :connect_with_shortcut(tk.Dense(16, { activation = "relu" }), { block_outputs_name = "deep" })
  :connect(tk.Dense(1))

local opt = tk.optim.Adam { learning_rate = 0.01 }
for step = 1, 300 do
  tk.reset()                            -- frees the previous step's tensors
  local loss = tk.mse(model(x), y)
  loss:backward()
  opt:step(model)
  if step % 50 == 0 then print(("step %3d  mse %.5f"):format(step, loss:item())) end
end
model:summary(x)
