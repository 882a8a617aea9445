--- Sampled negatives of TwoTowerModel (its `negatives` option): extra negatives drawn
-- from an item corpus by a uniform, popularity or log-uniform sampler, with each draw's
-- probability for the sampling correction of the retrieval loss.
local core = require "towerkit.core"
local random = require "towerkit.data.random"

local negatives = {}

--- probs(model, data) -> prob, cdf: the sampling probability of each corpus row (a function
-- of the 1-based row) and, but for the uniform sampler, the cumulative weights to draw from.
function negatives.probs(self, data)
  local corpus = self.negative_corpus
  local n = corpus:size()
  if self.opts.negatives.sampler == "uniform" then
    local p = 1 / n
    return function() return p end, nil
  end
  -- popularity: counts of each corpus item in the training data (+1 smoothing);
  -- log_uniform: P(rank r) = log((r + 2) / (r + 1)) / log(n + 1) over the items
  -- ranked by those counts (TensorFlow's log-uniform candidate sampler)
  local index, counts, total = {}, {}, 0
  for r, id in ipairs(corpus:column(self.item_id):totable()) do
    index[id] = r
    counts[r] = 1
  end
  for _, id in ipairs(data:column(self.item_id):totable()) do
    local r = index[id]
    if r then counts[r] = counts[r] + 1 end
  end
  if self.opts.negatives.sampler == "log_uniform" then
    local order = {}
    for r = 1, n do order[r] = r end
    table.sort(order, function(a, b)
      if counts[a] ~= counts[b] then return counts[a] > counts[b] end
      return a < b
    end)
    local weights = {}
    for rank, r in ipairs(order) do weights[r] = math.log((rank + 1) / rank) end
    counts = weights
  end
  local cdf = {}
  for r = 1, n do
    total = total + counts[r]
    cdf[r] = total
  end
  return function(r) return counts[r] / total end, cdf
end

--- sample(model, rng) -> the batch of model.opts.negatives.num corpus rows drawn from
-- model._neg (what probs gave) and the log of each row's expected count (logQ).
function negatives.sample(self, rng)
  local neg = self._neg
  local n, num = self.negative_corpus:size(), self.opts.negatives.num
  local rows = {}
  for j = 1, num do
    if neg.cdf then
      rows[j] = random.search(neg.cdf, n, rng:next() * neg.cdf[n])
    else
      rows[j] = rng:int(n)
    end
  end
  local logq = {}
  for j = 1, num do logq[j] = math.log(neg.prob(rows[j] + 1)) + math.log(num) end
  local idx = core.tensor(rows, "int64")
  return self.negative_corpus:rows(idx), core.tensor(logq)
end

return negatives
