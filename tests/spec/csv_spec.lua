local tk = require "towerkit"
local T = tk.Tags

local files = require "tests.spec.helpers.files"
local tmpdir = files.tmpdir

local write = files.write

local function schema()
  return tk.Schema {
    tk.ColumnSchema("user_id", { tags = { T.USER_ID, T.CATEGORICAL }, int_domain = { max = 9 } }),
    tk.ColumnSchema("genres", { tags = { T.ITEM, T.CATEGORICAL, T.LIST }, int_domain = { max = 5 },
      value_count = { min = 0, max = 3 } }),
    tk.ColumnSchema("price", { tags = { T.ITEM, T.CONTINUOUS } }),
    tk.ColumnSchema("title", { dtype = "string" }),
  }
end

describe("read_csv", function()
  local dir
  setup(function() dir = tmpdir() end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("reads typed columns and lists by the schema", function()
    write(dir .. "/a.csv", "title,user_id,genres,price\n\"A, b\",3,1|2,0.5\nc,7,,1.25\nd,0,5,-2\n")
    local ds = tk.data.read_csv(dir .. "/a.csv", schema())
    assert.equal(3, ds:size())
    assert.same({ 3, 7, 0 }, ds:column("user_id"):totable())
    assert.same({ 1, 2, 5 }, ds:column("genres__values"):totable())
    assert.same({ 0, 2, 2, 3 }, ds:column("genres__offsets"):totable())
    assert.same({ 0.5, 1.25, -2 }, ds:column("price"):totable()) -- parsed correctly rounded: exact
    assert.same({ "genres", "price", "user_id" }, ds:column_names())
    local chunks, rows = 0, 0
    for chunk in tk.data.csv_chunks(dir .. "/a.csv", schema(), { chunk_rows = 2 }) do
      chunks, rows = chunks + 1, rows + chunk:size()
    end
    assert.equal(2, chunks)
    assert.equal(3, rows)
  end)

  it("names the file, row and column of a bad cell", function()
    write(dir .. "/b.csv", "user_id,genres,price\n1,1,0.5\nx,2,1\n")
    local ok, err = pcall(tk.data.read_csv, dir .. "/b.csv", schema())
    assert.is_false(ok)
    assert.truthy(err:find(dir .. "/b.csv: row 3, column 'user_id': \"x\" is not an integer", 1, true), err)
    write(dir .. "/c.csv", "user_id,price\n1,0.5\n")
    ok, err = pcall(tk.data.read_csv, dir .. "/c.csv", schema())
    assert.is_false(ok)
    assert.truthy(err:find("genres", 1, true), err)
    ok, err = pcall(tk.data.read_csv, dir .. "/missing.csv", schema())
    assert.is_false(ok)
    assert.truthy(err:find("missing.csv", 1, true), err)
  end)

  it("refuses a list cell longer than the schema's value count max", function()
    write(dir .. "/long.csv", "user_id,genres,price\n1,1|2|3,0.5\n2,1|2|3|4,1\n")
    local ok, err = pcall(tk.data.read_csv, dir .. "/long.csv", schema())
    assert.is_false(ok)
    assert.truthy(err:find(dir .. "/long.csv: row 3, column 'genres'", 1, true), err)
    assert.truthy(err:find("has more than 3 ids", 1, true), err)
  end)

  it("names the file, row and column of a categorical id out of range", function()
    -- user_id has cardinality 10, genres 6; data row r is file row r + 1
    write(dir .. "/ids.csv", "user_id,genres,price\n1,1,0.5\n9,0|5,1\n2,3,1\n10,1,2\n")
    local ok, err = pcall(tk.data.read_csv, dir .. "/ids.csv", schema())
    assert.is_false(ok)
    assert.truthy(err:find(dir .. "/ids.csv: row 5, column 'user_id': id 10 is out of range [0, 10)", 1, true), err)
    write(dir .. "/neg.csv", "user_id,genres,price\n-1,1,0.5\n")
    ok, err = pcall(tk.data.read_csv, dir .. "/neg.csv", schema())
    assert.truthy(err:find("neg.csv: row 2, column 'user_id': id -1 is out of range [0, 10)", 1, true), err)
    -- a list id: the row whose list holds it (empty lists in between)
    write(dir .. "/list.csv", "user_id,genres,price\n1,,0.5\n2,,1\n3,1|6,1\n")
    ok, err = pcall(tk.data.read_csv, dir .. "/list.csv", schema())
    assert.truthy(err:find("list.csv: row 4, column 'genres': id 6 is out of range [0, 6)", 1, true), err)
    -- in chunks: rows count from the start of the file
    local chunks = {}
    ok, err = pcall(function()
      for chunk in tk.data.csv_chunks(dir .. "/ids.csv", schema(), { chunk_rows = 2 }) do
        chunks[#chunks + 1] = chunk:size()
      end
    end)
    assert.is_false(ok)
    assert.same({ 2 }, chunks)
    assert.truthy(err:find(dir .. "/ids.csv: row 5, column 'user_id': id 10 is out of range [0, 10)", 1, true), err)
    -- a column that is not read is not checked
    local only = tk.data.read_csv(dir .. "/ids.csv", schema(), { columns = { "price", "genres" } })
    assert.equal(4, only:size())
    -- ids in range read as before
    write(dir .. "/ok.csv", "user_id,genres,price\n0,0|5,0.5\n9,,1\n")
    assert.equal(2, tk.data.read_csv(dir .. "/ok.csv", schema()):size())
  end)
end)

describe("the MovieLens converter", function()
  local dir
  setup(function() dir = tmpdir() end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  -- A tiny folder in the MovieLens-100k format: 6 users, 5 movies, 19 genre flags.
  local function fake_ml100k(path)
    os.execute("mkdir -p " .. path)
    write(path .. "/u.user", table.concat({
      "1|24|M|technician|85711", "2|53|F|other|94043", "3|23|M|writer|32067",
      "4|24|M|technician|43537", "5|33|F|other|15213", "6|42|M|executive|98101" }, "\n") .. "\n")
    local items = {}
    for m = 1, 5 do
      local flags = {}
      for g = 0, 18 do flags[#flags + 1] = (g == m or g == m + 5) and "1" or "0" end
      items[m] = m .. "|Movie " .. m .. " (1995)|01-Jan-1995||http://x|" .. table.concat(flags, "|")
    end
    write(path .. "/u.item", table.concat(items, "\n") .. "\n")
    local rows = {}
    for u = 1, 6 do
      for m = 1, 5 do
        if (u + m) % 3 ~= 0 then rows[#rows + 1] = table.concat({ u, m, (u * m) % 5 + 1, 880000000 + u * 100 + m }, "\t") end
      end
    end
    write(path .. "/u.data", table.concat(rows, "\n") .. "\n")
    return #rows
  end

  it("writes a CSV and a schema that read back", function()
    local n = fake_ml100k(dir .. "/ml")
    local convert = dofile("scripts/movielens_convert.lua")
    local csv, schema_path = convert(dir .. "/ml", dir .. "/out")
    local schema = tk.Schema.read_json(schema_path)
    local ds = tk.data.read_csv(csv, schema)
    assert.equal(n, ds:size())
    assert.equal(6, schema:column("userId"):cardinality() - 1)
    assert.same({ "userId" }, schema:select_by_tag(T.USER_ID):column_names())
    assert.same({ "movieId" }, schema:select_by_tag(T.ITEM_ID):column_names())
    -- movie 1 has genres 1 and 6
    local movies = ds:column("movieId"):totable()
    local offsets, values = ds:column("genres__offsets"):totable(), ds:column("genres__values"):totable()
    for r = 1, #movies do
      if movies[r] == 1 then
        assert.same({ 1, 6 }, { values[offsets[r] + 1], values[offsets[r] + 2] })
        break
      end
    end
    assert.equal("int64", ds:column("timestamp"):dtype())
  end)

  it("names the file and line of a malformed input", function()
    fake_ml100k(dir .. "/bad")
    write(dir .. "/bad/u.data", "1\t2\t3\n")
    local convert = dofile("scripts/movielens_convert.lua")
    local ok, err = pcall(convert, dir .. "/bad", dir .. "/out2")
    assert.is_false(ok)
    assert.truthy(err:find("u.data line 1: expected 4 tab-separated fields, got 3", 1, true), err)
  end)
end)
