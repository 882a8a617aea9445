--- The popularity baseline (tk.popularity_baseline) and what it shares with
-- TwoTowerModel:evaluate: the exclusion lists of exclude_seen (seen_lists), the metrics
-- reported by default and the k they need.
local util = require "towerkit.util"
local ranking = require "towerkit.metrics"
local is_dataset = require("towerkit.data.dataset").is_dataset
local Tags = require("towerkit.schema.tags").Tags

local argerror = util.argerror

local baseline = {}

--- The options of popularity_baseline (TwoTowerModel:popularity_baseline takes the same).
baseline.OPTIONS = { metrics = true, k = true, exclude_seen = true, user_id = true }

--- The metrics evaluate and the baseline report when none are given.
function baseline.default_metrics() return { ranking.RecallAt(10), ranking.NDCGAt(10) } end

-- The column tagged USER_ID in a dataset's schema, if it has one.
local function user_column(d)
  local col = d.schema and d.schema:select_by_tag(Tags.USER_ID)[1]
  return col and col.name
end

--- seen_lists(user_col, item_col, seen, data, key_of, what) -> off, list: per query row
-- of `data`, the items (as keys of `key_of`: corpus rows, or ids) its user has in `seen`,
-- without the row's own positive: CSR lists (off, list) as Lua arrays.
function baseline.seen_lists(user_col, item_col, seen, data, key_of, what)
  for _, d in ipairs { seen, data } do
    if not d:has_column(user_col) then argerror("%s: exclude_seen needs the user id column '%s' in the data", what, user_col) end
  end
  local by_user = {}
  local users, its = seen:column(user_col):totable(), seen:column(item_col):totable()
  for r = 1, #users do
    local s = by_user[users[r]]
    if not s then s = {} by_user[users[r]] = s end
    local key = key_of(its[r])
    if key then s[#s + 1] = key end
  end
  local off, list = { 0 }, {}
  local qusers, positives = data:column(user_col):totable(), data:column(item_col):totable()
  for q = 1, #qusers do
    local own, done = key_of(positives[q]), {}
    for _, key in ipairs(by_user[qusers[q]] or {}) do
      if key ~= own and not done[key] then
        list[#list + 1] = key
        done[key] = true
      end
    end
    off[#off + 1] = #list
  end
  return off, list
end

--- The k the metrics need (the largest of theirs, at least k).
function baseline.metrics_k(metrics, k)
  k = k or 0
  for _, m in ipairs(metrics) do k = math.max(k, m.k) end
  return k
end

--- tk.popularity_baseline(train, data, item_col, {metrics =, k =, exclude_seen = dataset,
-- user_id = column}): the items of train ranked by count (ties by id). With exclude_seen,
-- each row's ranking skips the items its user has in that dataset, except its own, as
-- evaluate does; the user column is user_id, or the one tagged USER_ID in the data's
-- schema.
function baseline.popularity_baseline(train, data, item_col, opts)
  opts = util.known_options(opts, baseline.OPTIONS, "popularity_baseline")
  for name, d in pairs { train = train, data = data } do
    if not is_dataset(d) then argerror("popularity_baseline: %s must be a Dataset", name) end
    if not d:has_column(item_col) then argerror("popularity_baseline: %s has no item column '%s'", name, item_col) end
  end
  local metrics = opts.metrics or baseline.default_metrics()
  local counts = {}
  for _, id in ipairs(train:column(item_col):totable()) do counts[id] = (counts[id] or 0) + 1 end
  local order = {}
  for id in pairs(counts) do order[#order + 1] = id end
  table.sort(order, function(a, b)
    if counts[a] ~= counts[b] then return counts[a] > counts[b] end
    return a < b
  end)
  local k = math.min(baseline.metrics_k(metrics, opts.k), #order)
  local top = {}
  for i = 1, k do top[i] = order[i] end
  local positives = data:column(item_col):totable()
  local ranked, relevant = {}, {}
  local off, list
  if opts.exclude_seen then
    if type(opts.exclude_seen) ~= "table" or not is_dataset(opts.exclude_seen) then
      argerror("popularity_baseline: exclude_seen must be a Dataset of interactions, got %s", util.describe(opts.exclude_seen))
    end
    local user_col = opts.user_id or user_column(data) or user_column(opts.exclude_seen)
    if not user_col then
      argerror("popularity_baseline: exclude_seen needs the user id column: pass user_id = name (no column is tagged USER_ID)")
    end
    off, list = baseline.seen_lists(user_col, item_col, opts.exclude_seen, data, function(id) return id end, "popularity_baseline")
  end
  for q, id in ipairs(positives) do
    relevant[q] = { [id] = true }
    if not off or off[q] == off[q + 1] then
      ranked[q] = top
    else -- walk the popularity order past this user's seen items
      local skip, row = {}, {}
      for e = off[q] + 1, off[q + 1] do skip[list[e]] = true end
      for _, item in ipairs(order) do
        if not skip[item] then
          row[#row + 1] = item
          if #row == k then break end
        end
      end
      ranked[q] = row
    end
  end
  return ranking.average(metrics, ranked, relevant)
end

return baseline
