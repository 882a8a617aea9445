--- Random: the generator's random numbers (xorshift32, seeded, independent of
-- math.random), and draws from a cumulative table of weights (the Zipf sampler of
-- towerkit.data.synthetic, the negative samplers of TwoTowerModel).
local bit = require "bit"

local random = {}

local Random = {}
Random.__index = Random

--- Random(seed = 1) -> a generator.
function random.Random(seed)
  local s = bit.tobit((seed or 1) * 2654435761 % 4294967296)
  if s == 0 then s = 1 end
  return setmetatable({ s = s }, Random)
end

--- A number in [0, 1).
function Random:next()
  local x = self.s
  x = bit.bxor(x, bit.lshift(x, 13))
  x = bit.bxor(x, bit.rshift(x, 17))
  x = bit.bxor(x, bit.lshift(x, 5))
  self.s = x
  return (x % 4294967296) / 4294967296
end

--- An integer in [0, n).
function Random:int(n) return math.floor(self:next() * n) end

--- A standard normal number (Box-Muller).
function Random:normal()
  local u1, u2 = 1 - self:next(), self:next()
  return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
end

--- search(cdf, n, u) -> the 0-based index of the first of cdf[1..n] (a non-decreasing
-- cumulative table of weights) that is >= u: with u uniform in [0, cdf[n]), index r is
-- drawn with probability proportional to its weight.
function random.search(cdf, n, u)
  local lo, hi = 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo - 1
end

--- Zipf-like sampler over ranks 0..n-1 with exponent s: P(r) ~ 1 / (r + 1)^s.
function random.zipf_sampler(n, s, rng)
  local cdf, total = {}, 0
  for r = 1, n do
    total = total + 1 / r ^ s
    cdf[r] = total
  end
  return function() return random.search(cdf, n, rng:next() * total) end
end

return random
