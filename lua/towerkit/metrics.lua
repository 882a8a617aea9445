--- Ranking metrics at k (Merlin's formulas), computed from ranked item ids and the set
-- of relevant items of each query.
--
--   precision@k  = hits@k / k
--   recall@k     = hits@k / |relevant|
--   mrr@k        = 1 / rank of the first relevant item in the top k (0 if none)
--   map@k        = sum over relevant ranks i <= k of precision@i, / min(|relevant|, k)
--   ndcg@k       = dcg@k / idcg@k, dcg = sum over relevant ranks i <= k of 1 / log2(i + 1)
--
-- A metric object has a name ("recall_at_10"), k, and :score(ranked, relevant) for one
-- query (ranked: a Lua array of item ids, best first; relevant: a set id -> true).
-- Evaluation averages the scores over queries.
local argerror = require("towerkit.util").argerror

local metrics = {}

local Metric = {}
Metric.__index = Metric

local function make(kind, k, score)
  if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then
    argerror("%s: k must be a positive integer, got %s", kind, tostring(k))
  end
  return setmetatable({ kind = kind, k = k, name = kind .. "_at_" .. k, score = score }, Metric)
end

local function count(set)
  local n = 0
  for _ in pairs(set) do n = n + 1 end
  return n
end

-- The relevant items among the first k of ranked.
local function hits_at(k, ranked, relevant)
  local hits = 0
  for i = 1, math.min(k, #ranked) do
    if relevant[ranked[i]] then hits = hits + 1 end
  end
  return hits
end

local function log2(x) return math.log(x) / math.log(2) end

function metrics.RecallAt(k)
  return make("recall", k, function(self, ranked, relevant)
    local total = count(relevant)
    if total == 0 then return 0 end
    return hits_at(self.k, ranked, relevant) / total
  end)
end

function metrics.PrecisionAt(k)
  return make("precision", k, function(self, ranked, relevant)
    return hits_at(self.k, ranked, relevant) / self.k
  end)
end

function metrics.MRRAt(k)
  return make("mrr", k, function(self, ranked, relevant)
    for i = 1, math.min(self.k, #ranked) do
      if relevant[ranked[i]] then return 1 / i end
    end
    return 0
  end)
end

function metrics.AvgPrecisionAt(k)
  return make("map", k, function(self, ranked, relevant)
    local total = count(relevant)
    if total == 0 then return 0 end
    local hits, sum = 0, 0
    for i = 1, math.min(self.k, #ranked) do
      if relevant[ranked[i]] then
        hits = hits + 1
        sum = sum + hits / i
      end
    end
    return sum / math.min(total, self.k)
  end)
end

function metrics.NDCGAt(k)
  return make("ndcg", k, function(self, ranked, relevant)
    local total = count(relevant)
    if total == 0 then return 0 end
    local dcg = 0
    for i = 1, math.min(self.k, #ranked) do
      if relevant[ranked[i]] then dcg = dcg + 1 / log2(i + 1) end
    end
    local idcg = 0
    for i = 1, math.min(total, self.k) do idcg = idcg + 1 / log2(i + 1) end
    return dcg / idcg
  end)
end

function metrics.is_metric(x) return getmetatable(x) == Metric end

--- Mean of each metric over queries: ranked[q] is a Lua array of ids, relevant[q] a
-- set. Returns {name = value}.
function metrics.average(list, ranked, relevant)
  local out = {}
  local n = #ranked
  for _, m in ipairs(list) do
    local sum = 0
    for q = 1, n do sum = sum + m:score(ranked[q], relevant[q]) end
    out[m.name] = n > 0 and sum / n or 0
  end
  return out
end

return metrics
