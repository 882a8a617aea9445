--- Tags: Merlin's feature tags (tk.Tags, read-only) and the tag rules columns follow:
-- compound tags stand for their parts, some tags cannot be on one column together.
local common = require "towerkit.schema.common"

local concat = table.concat
local raise, repr, sorted_keys, is_array = common.raise, common.repr, common.sorted_keys, common.is_array

local TAG_VALUES = {
  -- feature types
  CATEGORICAL = "categorical", CONTINUOUS = "continuous", LIST = "list",
  SEQUENCE = "sequence", TEXT = "text", TOKENIZED = "tokenized", TIME = "time",
  EMBEDDING = "embedding",
  -- feature context
  ID = "id", USER = "user", ITEM = "item", SESSION = "session", CONTEXT = "context",
  -- targets
  TARGET = "target", REGRESSION = "regression", CLASSIFICATION = "classification",
  BINARY = "binary", MULTI_CLASS = "multi_class",
  -- compound tags: they stand for all of their parts
  USER_ID = "user_id", ITEM_ID = "item_id", SESSION_ID = "session_id",
  TEXT_TOKENIZED = "text_tokenized", BINARY_CLASSIFICATION = "binary_classification",
  MULTI_CLASS_CLASSIFICATION = "multi_class_classification",
}

local COMPOUND = {
  user_id = { "user", "id" },
  item_id = { "item", "id" },
  session_id = { "session", "id" },
  text_tokenized = { "text", "tokenized" },
  binary_classification = { "binary", "classification" },
  multi_class_classification = { "multi_class", "classification" },
}

-- Tags that cannot be on one column together (Merlin's TAG_COLLISIONS).
local COLLISIONS = {
  categorical = { "continuous", "embedding" },
  continuous = { "categorical", "embedding", "id" },
  embedding = { "categorical", "continuous", "id" },
  id = { "continuous", "embedding" },
}

--- The atomic tags a tag stands for: {"user", "id"} for "user_id", {tag} otherwise.
local function tag_parts(tag)
  local parts = COMPOUND[tag]
  if not parts then return { tag } end
  return { parts[1], parts[2] }
end

local tag_helpers = {
  split = tag_parts,
  --- True when tag is a compound tag (user_id, item_id, ...).
  is_compound = function(tag) return COMPOUND[tag] ~= nil end,
}

local Tags = {}
for k, v in pairs(TAG_VALUES) do Tags[k] = v end
setmetatable(Tags, {
  __index = function(_, key)
    if tag_helpers[key] then return tag_helpers[key] end
    raise("tk.Tags has no tag %s (known: %s)", repr(key), concat(sorted_keys(TAG_VALUES), ", "))
  end,
  __newindex = function() raise("tk.Tags is read-only") end,
})

-- Checks a tag or a list of tags and returns them as a list of strings.
local function tag_list(tags, where, what)
  what = what or "tags"
  if type(tags) == "string" then tags = { tags } end
  if not is_array(tags) then
    raise("%s: %s must be a tag or a list of tags, got %s", where, what, repr(tags))
  end
  for i, t in ipairs(tags) do
    if type(t) ~= "string" or t == "" then
      raise("%s: %s[%d] must be a non-empty string, got %s", where, what, i, repr(t))
    end
  end
  return tags
end

-- The sorted, duplicate-free atomic tags of a list of tags (compound ones split).
local function atomic_set(tags)
  local set = {}
  for _, t in ipairs(tags) do
    for _, p in ipairs(tag_parts(t)) do set[p] = true end
  end
  return set
end

local function set_to_list(set)
  local list = sorted_keys(set)
  return list
end

local function check_collisions(set, where)
  for _, t in ipairs(sorted_keys(set)) do
    for _, c in ipairs(COLLISIONS[t] or {}) do
      if set[c] then
        local a, b = t, c
        if b < a then a, b = b, a end
        raise("%s: tags %s and %s cannot be used together", where, a, b)
      end
    end
  end
end

-- True when the sorted tag list has every part of tag.
local function has_all_parts(tags, tag)
  for _, p in ipairs(tag_parts(tag)) do
    local found = false
    for _, t in ipairs(tags) do
      if t == p then
        found = true
        break
      end
    end
    if not found then return false end
  end
  return true
end

return {
  Tags = Tags,
  COLLISIONS = COLLISIONS,
  parts = tag_parts,
  list = tag_list,
  atomic_set = atomic_set,
  set_to_list = set_to_list,
  check_collisions = check_collisions,
  has_all_parts = has_all_parts,
}
