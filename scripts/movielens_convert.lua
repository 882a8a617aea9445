-- Converts the public MovieLens-100k files (u.data, u.user, u.item) into a CSV of
-- interactions with user and item features, and a Merlin schema.json.
--   build/towerkit scripts/movielens_convert.lua ML100K_DIR OUT_DIR
-- Also usable as a module: local convert = dofile("scripts/movielens_convert.lua");
-- convert(in_dir, out_dir) -> csv_path, schema_path.
--
-- Columns: userId, age_bucket (age // 10), gender (0 M, 1 F), occupation (index in sorted
-- order), zip_prefix (first digit, 10 for non-numeric), movieId, genres (the genre flags
-- as a list of indices, '|'-separated), rating, timestamp.
local GENRES = 19

local function lines(path)
  local f, err = io.open(path, "rb")
  if not f then error(("movielens: cannot open %s: %s"):format(path, err), 0) end
  local text = f:read("*a")
  f:close()
  local out = {}
  for line in text:gmatch("[^\r\n]+") do out[#out + 1] = line end
  return out
end

local function split(line, sep)
  local fields = {}
  for field in (line .. sep):gmatch("(.-)" .. (sep == "|" and "%|" or sep)) do fields[#fields + 1] = field end
  return fields
end

local function int(s, path, n, what)
  local v = tonumber(s)
  if not v or v % 1 ~= 0 then
    error(("movielens: %s line %d: %s is not an integer: %q"):format(path, n, what, tostring(s)), 0)
  end
  return v
end

local function convert(in_dir, out_dir)
  local tk = require "towerkit"
  local T = tk.Tags
  -- users
  local users, occupations, occ_list = {}, {}, {}
  local upath = in_dir .. "/u.user"
  for n, line in ipairs(lines(upath)) do
    local f = split(line, "|")
    if #f < 5 then error(("movielens: %s line %d: expected 5 fields, got %d"):format(upath, n, #f), 0) end
    local id = int(f[1], upath, n, "user id")
    local zip = f[5]:sub(1, 1)
    users[id] = {
      age_bucket = math.floor(int(f[2], upath, n, "age") / 10),
      gender = f[3] == "F" and 1 or 0,
      occupation = f[4],
      zip_prefix = tonumber(zip) or 10,
    }
    if not occupations[f[4]] then
      occupations[f[4]] = true
      occ_list[#occ_list + 1] = f[4]
    end
  end
  table.sort(occ_list)
  local occ_index = {}
  for i, o in ipairs(occ_list) do occ_index[o] = i - 1 end
  -- items
  local items, max_movie = {}, 0
  local ipath = in_dir .. "/u.item"
  for n, line in ipairs(lines(ipath)) do
    local f = split(line, "|")
    if #f < 5 + GENRES then
      error(("movielens: %s line %d: expected %d fields, got %d"):format(ipath, n, 5 + GENRES, #f), 0)
    end
    local id = int(f[1], ipath, n, "movie id")
    local genres = {}
    for g = 0, GENRES - 1 do
      if f[6 + g] == "1" then genres[#genres + 1] = g end
    end
    items[id] = table.concat(genres, "|")
    if id > max_movie then max_movie = id end
  end
  -- interactions
  local dpath = in_dir .. "/u.data"
  local out = { "userId,age_bucket,gender,occupation,zip_prefix,movieId,genres,rating,timestamp" }
  local max_user = 0
  for n, line in ipairs(lines(dpath)) do
    local f = split(line, "\t")
    if #f < 4 then error(("movielens: %s line %d: expected 4 tab-separated fields, got %d"):format(dpath, n, #f), 0) end
    local u, m = int(f[1], dpath, n, "user id"), int(f[2], dpath, n, "item id")
    local user, genres = users[u], items[m]
    if not user then error(("movielens: %s line %d: user %d is not in u.user"):format(dpath, n, u), 0) end
    if not genres then error(("movielens: %s line %d: item %d is not in u.item"):format(dpath, n, m), 0) end
    if u > max_user then max_user = u end
    out[#out + 1] = table.concat({ u, user.age_bucket, user.gender, occ_index[user.occupation], user.zip_prefix, m,
      genres, int(f[3], dpath, n, "rating"), int(f[4], dpath, n, "timestamp") }, ",")
  end
  os.execute("mkdir -p '" .. out_dir:gsub("'", "'\\''") .. "'")
  local csv = out_dir .. "/interactions.csv"
  tk.io.write_atomic(csv, table.concat(out, "\n") .. "\n")
  local schema = tk.Schema {
    tk.ColumnSchema("userId", { tags = { T.USER_ID, T.CATEGORICAL }, int_domain = { max = max_user } }),
    tk.ColumnSchema("age_bucket", { tags = { T.USER, T.CATEGORICAL }, int_domain = { max = 9 } }),
    tk.ColumnSchema("gender", { tags = { T.USER, T.CATEGORICAL }, int_domain = { max = 1 } }),
    tk.ColumnSchema("occupation", { tags = { T.USER, T.CATEGORICAL }, int_domain = { max = math.max(#occ_list - 1, 0) } }),
    tk.ColumnSchema("zip_prefix", { tags = { T.USER, T.CATEGORICAL }, int_domain = { max = 10 } }),
    tk.ColumnSchema("movieId", { tags = { T.ITEM_ID, T.CATEGORICAL }, int_domain = { max = max_movie } }),
    tk.ColumnSchema("genres", { tags = { T.ITEM, T.CATEGORICAL, T.LIST }, int_domain = { max = GENRES - 1 },
      value_count = { min = 0, max = GENRES } }),
    tk.ColumnSchema("rating", { tags = { T.TARGET, T.REGRESSION }, dtype = "int64" }),
    tk.ColumnSchema("timestamp", { tags = { T.TIME }, dtype = "int64" }),
  }
  local schema_path = out_dir .. "/schema.json"
  schema:write_json(schema_path)
  return csv, schema_path
end

if arg and arg[0] and arg[0]:match("movielens_convert%.lua$") and select("#", ...) >= 0 and arg[1] then
  if not arg[2] then
    io.stderr:write("usage: towerkit scripts/movielens_convert.lua ML100K_DIR OUT_DIR\n")
    os.exit(2)
  end
  local csv, schema = convert(arg[1], arg[2])
  print("wrote " .. csv .. " and " .. schema)
end

return convert
