local tk = require "towerkit"
local T = tk.Tags

local function schema()
  return tk.Schema {
    tk.ColumnSchema("user_id", { tags = { T.USER_ID, T.CATEGORICAL }, int_domain = { max = 199 } }),
    tk.ColumnSchema("user_country", { tags = { T.USER, T.CATEGORICAL }, int_domain = { max = 9 } }),
    tk.ColumnSchema("user_recent", { tags = { T.USER, T.CATEGORICAL, T.LIST }, int_domain = { max = 49 },
      value_count = { min = 1, max = 4 } }),
    tk.ColumnSchema("user_activity", { tags = { T.USER, T.CONTINUOUS } }),
    tk.ColumnSchema("item_id", { tags = { T.ITEM_ID, T.CATEGORICAL }, int_domain = { max = 299 } }),
    tk.ColumnSchema("item_category", { tags = { T.ITEM, T.CATEGORICAL }, int_domain = { max = 19 } }),
    tk.ColumnSchema("item_price", { tags = { T.ITEM, T.CONTINUOUS } }),
    tk.ColumnSchema("click", { tags = { T.TARGET, T.BINARY_CLASSIFICATION } }),
  }
end

describe("Dataset", function()
  it("holds columns of tensors, numbers and lists", function()
    local ds = tk.data.Dataset {
      id = { 3, 1, 2 },
      price = { 0.5, 1.5, 2.0 },
      tags = { { 1, 2 }, {}, { 7 } },
      x = tk.tensor { 1, 2, 3 },
    }
    assert.equal(3, ds:size())
    assert.same({ "id", "price", "tags", "x" }, ds:column_names())
    assert.equal("int64", ds:column("id"):dtype())
    assert.equal("float32", ds:column("price"):dtype())
    assert.same({ 1, 2, 7 }, ds:column("tags__values"):totable())
    assert.same({ 0, 2, 2, 3 }, ds:column("tags__offsets"):totable())
    local b = ds:rows(tk.tensor({ 2, 0 }, "int64"))
    assert.same({ 2, 3 }, b.id:totable())
    assert.same({ 7, 1, 2 }, b.tags__values:totable())
    assert.same({ 0, 1, 3 }, b.tags__offsets:totable())
  end)

  it("batches in order, shuffled by seed, with or without the last short batch", function()
    local ds = tk.data.Dataset { id = tk.data.range(0, 9) }
    local seen = {}
    for b, i in ds:batches { batch_size = 4 } do seen[i] = b.id:totable() end
    assert.same({ { 0, 1, 2, 3 }, { 4, 5, 6, 7 }, { 8, 9 } }, seen)
    local n = 0
    for _ in ds:batches { batch_size = 4, drop_last = true } do n = n + 1 end
    assert.equal(2, n)
    local function order(seed)
      local all = {}
      for b in ds:batches { batch_size = 10, shuffle = true, seed = seed } do all = b.id:totable() end
      return all
    end
    assert.same(order(1), order(1))
    assert.are_not.same(order(1), order(2))
    local sorted = order(1)
    table.sort(sorted)
    assert.same(tk.data.range(0, 9), sorted)
  end)

  it("splits and de-duplicates", function()
    local ds = tk.data.Dataset { id = { 5, 6, 5, 7, 6 }, v = { 1, 2, 3, 4, 5 } }
    local u = ds:unique_by("id")
    assert.same({ 5, 6, 7 }, u:column("id"):totable())
    assert.same({ 1, 2, 4 }, u:column("v"):totable())
    local a, b = tk.data.Dataset({ id = tk.data.range(1, 100) }):split(0.8, 3)
    assert.equal(80, a:size())
    assert.equal(20, b:size())
    local all = a:column("id"):totable()
    for _, v in ipairs(b:column("id"):totable()) do all[#all + 1] = v end
    table.sort(all)
    assert.same(tk.data.range(1, 100), all)
  end)

  it("slices a row range, list columns too", function()
    local ds = tk.data.Dataset { id = { 5, 6, 7, 8 }, l = { { 1 }, { 2, 3 }, {}, { 4 } } }
    local s = ds:slice(1, 2)
    assert.equal(2, s:size())
    assert.same({ 6, 7 }, s:column("id"):totable())
    assert.same({ 2, 3 }, s:column("l__values"):totable())
    assert.same({ 0, 2, 2 }, s:column("l__offsets"):totable())
    assert.equal(0, ds:slice(4, 0):size())
    assert.same({ 5, 6, 7, 8 }, ds:slice(0, 4):column("id"):totable())
    assert.has_error(function() ds:slice(3, 2) end, "slice: rows [3, 5) are past the dataset's 4 rows")
    assert.has_error(function() ds:slice(-1, 1) end, "slice: first and count must be non-negative integers, got -1 and 1")
    assert.has_error(function() ds:slice(0) end, "slice: first and count must be non-negative integers, got 0 and nil")
  end)

  it("raises clear errors", function()
    assert.has_error(function() tk.data.Dataset { a = { 1, 2 }, b = { 1 } } end,
      "Dataset: column 'b' has 1 rows but 'a' has 2")
    assert.has_error(function() tk.data.Dataset { a = { 1, "x" } } end,
      "Dataset: column 'a' row 2 is a string, expected a number")
    assert.has_error(function() tk.data.Dataset { l = { { 1, 2.5 } } } end,
      "Dataset: list column 'l' row 1 holds 2.5, expected integer ids")
    assert.has_error(function() tk.data.Dataset { a = { 1 } }:column("b") end, "Dataset: no column 'b' (columns: a)")
    assert.has_error(function() tk.data.Dataset { a = { 1 } }:batches { batch_size = 0 } end,
      "batches: batch_size must be a positive integer, got 0")
    assert.has_error(function() tk.data.Dataset { a = { 1 } }:split(1.5) end, "split: fraction must be in (0, 1), got 1.5")
  end)
end)

describe("synthetic interactions", function()
  it("follow the schema and plant learnable clusters", function()
    local ds, items = tk.data.synthetic(schema(), 5000, { seed = 4, clusters = 10 })
    assert.equal(5000, ds:size())
    assert.equal(300, items:size())
    assert.same({ "click", "item_category", "item_id", "item_price", "user_activity", "user_country", "user_id",
      "user_recent" }, ds:column_names())
    assert.same({ "item_category", "item_id", "item_price" }, items:column_names())
    -- ids inside their domains
    for _, c in ipairs { { "user_id", 199 }, { "item_id", 299 }, { "user_country", 9 }, { "item_category", 19 },
      { "user_recent__values", 49 } } do
      for _, v in ipairs(ds:column(c[1]):totable()) do assert.truthy(v >= 0 and v <= c[2], c[1]) end
    end
    -- the same seed gives the same data
    local again = tk.data.synthetic(schema(), 5000, { seed = 4, clusters = 10 })
    assert.same(ds:column("item_id"):totable(), again:column("item_id"):totable())
    -- item features of a row equal the catalogue's for its item
    local cat = items:column("item_category"):totable()
    local ids, rows = ds:column("item_id"):totable(), ds:column("item_category"):totable()
    for r = 1, 200 do assert.equal(cat[ids[r] + 1], rows[r]) end
    -- structure: most of a user's items share a cluster, so a user's top item repeats
    local by_user = {}
    local users = ds:column("user_id"):totable()
    for r = 1, #users do
      by_user[users[r]] = by_user[users[r]] or {}
      local s = by_user[users[r]]
      s[ids[r]] = (s[ids[r]] or 0) + 1
    end
    local repeats, total = 0, 0
    for _, s in pairs(by_user) do
      for _, c in pairs(s) do
        total = total + c
        if c > 1 then repeats = repeats + c end
      end
    end
    assert.truthy(repeats / total > 0.3, "repeat share " .. repeats / total)
  end)

  it("needs user and item id columns", function()
    local bad = tk.Schema { tk.ColumnSchema("x", { tags = { T.CATEGORICAL }, int_domain = { max = 3 } }) }
    assert.has_error(function() tk.data.synthetic(bad, 10) end,
      "synthetic: the schema needs a user_id and an item_id column (tags user_id, item_id)")
    assert.has_error(function() tk.data.synthetic(schema(), 0) end, "synthetic: n must be a positive integer")
  end)
end)
