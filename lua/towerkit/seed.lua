--- Seeds: each block constructor without an explicit seed takes the next one, so weights
-- differ between blocks and a script is reproducible after tk.manual_seed(n).
local argerror = require("towerkit.util").argerror

local seed = {}
local next_seed = 1

--- tk.manual_seed(n): the seeds of the blocks built next start again from n.
function seed.manual_seed(n)
  if type(n) ~= "number" then argerror("manual_seed: a number expected") end
  next_seed = n
end

--- The seed of a new block: opts.seed when given, else the next one.
function seed.take(opts)
  if opts and opts.seed then return opts.seed end
  next_seed = next_seed + 1
  return next_seed * 7919
end

return seed
