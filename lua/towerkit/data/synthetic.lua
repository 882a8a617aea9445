--- Synthetic interactions with a planted structure (synthetic below), for examples,
-- tests and benchmarks without a data set.
local bit = require "bit"
local util = require "towerkit.util"
local dataset = require "towerkit.data.dataset"
local random = require "towerkit.data.random"
local Schema = require "towerkit.schema.schema"
local Tags = require("towerkit.schema.tags").Tags

local argerror = util.argerror

local synthetic = {}

local function mix(a, b)
  local h = bit.tobit(a * 73856093 % 4294967296)
  h = bit.bxor(h, bit.tobit(b * 19349663 % 4294967296))
  h = bit.bxor(h, bit.rshift(h, 15))
  h = bit.tobit((h % 4294967296) * 2246822519 % 4294967296)
  h = bit.bxor(h, bit.rshift(h, 13))
  return h % 4294967296
end

local function first_with(schema, tag)
  local s = schema:select_by_tag(tag)
  return s[1]
end

--- synthetic(schema, n, {seed = 1, clusters = 20, affinity = 0.9, zipf = 1.1}) ->
-- dataset, items. Interactions with a planted structure: users and items belong to
-- latent clusters; a user picks an item of its own cluster with probability
-- `affinity` (popular items more often), else any item. Every other feature is derived
-- from the user or item (categorical features lean on the cluster, continuous ones
-- carry a cluster signal plus noise), so a model can learn the clusters from the
-- features as well as from the ids. `items` is the catalogue: one row per item id with
-- its features. The schema needs a user_id and an item_id column with domains.
function synthetic.synthetic(schema, n, opts)
  if not Schema.is_schema(schema) then argerror("synthetic: a Schema expected, got %s", type(schema)) end
  if type(n) ~= "number" or n < 1 or n % 1 ~= 0 then argerror("synthetic: n must be a positive integer") end
  opts = util.known_options(opts, { seed = true, clusters = true, affinity = true, zipf = true }, "synthetic")
  local rng = random.Random(opts.seed or 1)
  local C = opts.clusters or 20
  local affinity = opts.affinity or 0.9
  local zipf = opts.zipf or 1.1
  local ucol = first_with(schema, Tags.USER_ID)
  local icol = first_with(schema, Tags.ITEM_ID)
  if not ucol or not icol then argerror("synthetic: the schema needs a user_id and an item_id column (tags user_id, item_id)") end
  local U, I = ucol:cardinality(), icol:cardinality()
  if not U or not I then argerror("synthetic: the user_id and item_id columns need int domains") end
  if I < C then C = I end

  -- items by cluster, each cluster's items in a popularity order
  local item_cluster, cluster_items = {}, {}
  for c = 0, C - 1 do cluster_items[c] = {} end
  for i = 0, I - 1 do
    local c = mix(i, 7) % C
    item_cluster[i] = c
    local list = cluster_items[c]
    list[#list + 1] = i
  end
  for c = 0, C - 1 do
    if #cluster_items[c] == 0 then cluster_items[c] = { c % I } end
  end
  local cluster_pick, global_pick = {}, random.zipf_sampler(I, zipf, rng)
  for c = 0, C - 1 do cluster_pick[c] = random.zipf_sampler(#cluster_items[c], zipf, rng) end
  local function user_cluster(u) return mix(u, 3) % C end
  local user_pick = random.zipf_sampler(U, 0.8, rng)

  -- per-entity feature values, derived once
  local function derived(col, entity, cluster)
    local name = col.name
    local salt = #name * 131 + name:byte(1)
    if col:has_tag(Tags.CATEGORICAL) then
      local K = col:cardinality() or 2
      local function one(j)
        if mix(entity, salt + j) % 10 < 7 then return (cluster * 7 + j) % K end
        return mix(entity, salt + 17 * j + 1) % K
      end
      if col.is_list then
        local vc = col.value_count or {}
        local lo, hi = vc.min or 1, vc.max or 3
        if lo < 1 and hi >= 1 then lo = 1 end
        local len = lo + mix(entity, salt + 5) % (hi - lo + 1)
        local l = {}
        for j = 1, len do l[j] = one(j) end
        return l
      end
      return one(0)
    end
    -- continuous: a cluster signal and noise in [-0.5, 0.5]
    return (cluster % 5) / 4 - 0.5 + (mix(entity, salt) % 1000) / 1000 - 0.5
  end

  local features = schema:remove_by_tag(Tags.TARGET)
  local cols = {}
  local user_cols, item_cols = {}, {}
  for _, col in ipairs(features) do
    if col.name ~= ucol.name and col.name ~= icol.name and
        (col:has_tag(Tags.CATEGORICAL) or col:has_tag(Tags.CONTINUOUS)) then
      if col:has_tag(Tags.ITEM) then
        item_cols[#item_cols + 1] = col
      else
        user_cols[#user_cols + 1] = col
      end
    end
  end

  local users, items = {}, {}
  for r = 1, n do
    local u = user_pick()
    local c = user_cluster(u)
    local i
    if rng:next() < affinity then
      local list = cluster_items[c]
      i = list[cluster_pick[c]() + 1]
    else
      i = global_pick()
    end
    users[r], items[r] = u, i
  end
  cols[ucol.name], cols[icol.name] = users, items
  local item_values = {}
  for _, col in ipairs(item_cols) do
    local per_item = {}
    for i = 0, I - 1 do per_item[i] = derived(col, i, item_cluster[i]) end
    item_values[col.name] = per_item
    local v = {}
    for r = 1, n do v[r] = per_item[items[r]] end
    cols[col.name] = v
  end
  for _, col in ipairs(user_cols) do
    local cache, v = {}, {}
    for r = 1, n do
      local u = users[r]
      local x = cache[u]
      if x == nil then
        x = derived(col, u, user_cluster(u))
        cache[u] = x
      end
      v[r] = x
    end
    cols[col.name] = v
  end
  for _, col in ipairs(schema:select_by_tag(Tags.TARGET)) do
    local v = {}
    for r = 1, n do v[r] = 1 end
    cols[col.name] = v
  end
  local ds = dataset.Dataset(cols, { schema = schema })

  local catalogue = { [icol.name] = util.range(0, I - 1) }
  for _, col in ipairs(item_cols) do
    local v = {}
    for i = 0, I - 1 do v[i + 1] = item_values[col.name][i] end
    catalogue[col.name] = v
  end
  return ds, dataset.Dataset(catalogue, { schema = schema })
end

return synthetic
