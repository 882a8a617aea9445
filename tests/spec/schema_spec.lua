local tk = require "towerkit"

local Tags = tk.Tags
local MOVIELENS = "tests/data/merlin-schema-movielens-100k.json"
local files = require "tests.spec.helpers.files"

-- Temporary files, removed after each test.
local temps = {}
local function tmpfile(text)
  local path = os.tmpname()
  temps[#temps + 1] = path
  if text then
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
  end
  return path
end

local function read_text(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

local function names(schema)
  return schema:column_names()
end

describe("Schema", function()
  after_each(function()
    for _, p in ipairs(temps) do
      os.remove(p)
    end
    temps = {}
  end)

  describe("Tags", function()
    it("has Merlin's values as plain strings", function()
      assert.equal("categorical", Tags.CATEGORICAL)
      assert.equal("continuous", Tags.CONTINUOUS)
      assert.equal("list", Tags.LIST)
      assert.equal("sequence", Tags.SEQUENCE)
      assert.equal("text", Tags.TEXT)
      assert.equal("tokenized", Tags.TOKENIZED)
      assert.equal("time", Tags.TIME)
      assert.equal("embedding", Tags.EMBEDDING)
      assert.equal("id", Tags.ID)
      assert.equal("user", Tags.USER)
      assert.equal("item", Tags.ITEM)
      assert.equal("session", Tags.SESSION)
      assert.equal("context", Tags.CONTEXT)
      assert.equal("target", Tags.TARGET)
      assert.equal("regression", Tags.REGRESSION)
      assert.equal("classification", Tags.CLASSIFICATION)
      assert.equal("binary", Tags.BINARY)
      assert.equal("multi_class", Tags.MULTI_CLASS)
      assert.equal("user_id", Tags.USER_ID)
      assert.equal("item_id", Tags.ITEM_ID)
      assert.equal("session_id", Tags.SESSION_ID)
      assert.equal("binary_classification", Tags.BINARY_CLASSIFICATION)
      assert.equal("multi_class_classification", Tags.MULTI_CLASS_CLASSIFICATION)
    end)

    it("splits compound tags into their parts", function()
      assert.same({ "user", "id" }, Tags.split(Tags.USER_ID))
      assert.same({ "item", "id" }, Tags.split(Tags.ITEM_ID))
      assert.same({ "session", "id" }, Tags.split(Tags.SESSION_ID))
      assert.same({ "binary", "classification" }, Tags.split(Tags.BINARY_CLASSIFICATION))
      assert.same({ "multi_class", "classification" }, Tags.split(Tags.MULTI_CLASS_CLASSIFICATION))
      assert.same({ "user" }, Tags.split(Tags.USER))
      assert.is_true(Tags.is_compound("user_id"))
      assert.is_false(Tags.is_compound("user"))
    end)

    it("iterates over tag values only, and rejects unknown names", function()
      local n = 0
      for k, v in pairs(Tags) do
        assert.equal("string", type(v))
        assert.equal(k:lower(), v)
        n = n + 1
      end
      assert.equal(24, n)
      assert.has_error(function() return Tags.USERID end,
        "tk.Tags has no tag \"USERID\" (known: BINARY, BINARY_CLASSIFICATION, CATEGORICAL, CLASSIFICATION, "
          .. "CONTEXT, CONTINUOUS, EMBEDDING, ID, ITEM, ITEM_ID, LIST, MULTI_CLASS, MULTI_CLASS_CLASSIFICATION, "
          .. "REGRESSION, SEQUENCE, SESSION, SESSION_ID, TARGET, TEXT, TEXT_TOKENIZED, TIME, TOKENIZED, USER, USER_ID)")
      assert.has_error(function() Tags.FOO = "foo" end, "tk.Tags is read-only")
    end)
  end)

  describe("read_json on the movielens reference", function()
    local schema
    before_each(function() schema = tk.Schema.read_json(MOVIELENS) end)

    it("reads every feature in order", function()
      assert.equal(11, #schema)
      assert.same({ "movieId", "userId", "genres", "TE_movieId_rating", "userId_count", "gender",
        "zip_code", "rating", "rating_binary", "age", "title" }, names(schema))
      assert.is_true(tk.Schema.is_schema(schema))
      assert.is_true(tk.ColumnSchema.is_column_schema(schema[1]))
    end)

    it("computes cardinalities as max + 1", function()
      local expected = { movieId = 1681, userId = 944, genres = 217, gender = 3, zip_code = 796, age = 9 }
      for _, col in ipairs(schema) do
        assert.equal(expected[col.name], col:cardinality(), col.name)
      end
    end)

    it("reads integer domains (min absent means 0)", function()
      assert.same({ min = 1, max = 1680, name = "movieId", is_categorical = true }, schema:column("movieId").int_domain)
      assert.same({ min = 0, max = 943, name = "userId", is_categorical = true }, schema:column("userId").int_domain)
      assert.is_nil(schema:column("rating").int_domain)
      assert.is_nil(schema:column("title").int_domain)
    end)

    it("splits compound tags and sorts them", function()
      assert.same({ "categorical", "id", "item" }, schema:column("movieId").tags)
      assert.same({ "categorical", "id", "user" }, schema:column("userId").tags)
      assert.same({ "binary", "classification", "target" }, schema:column("rating_binary").tags)
      assert.same({ "continuous" }, schema:column("userId_count").tags)
      assert.same({}, schema:column("title").tags)
      local user_id = schema:column("userId")
      assert.is_true(user_id:has_tag(Tags.USER_ID))
      assert.is_true(user_id:has_tag(Tags.USER))
      assert.is_true(user_id:has_tag(Tags.ID))
      assert.is_false(user_id:has_tag(Tags.ITEM_ID))
      assert.is_false(schema:column("gender"):has_tag(Tags.USER_ID))
      assert.is_true(schema:column("rating_binary"):has_tag(Tags.BINARY_CLASSIFICATION))
      assert.is_false(schema:column("rating_binary"):has_tag(Tags.MULTI_CLASS_CLASSIFICATION))
    end)

    it("derives dtypes from the type and dtype_item_size", function()
      local dtypes = {}
      for _, col in ipairs(schema) do dtypes[col.name] = col.dtype end
      assert.same({
        movieId = "int32", userId = "int32", genres = "int32", TE_movieId_rating = "float64",
        userId_count = "float32", gender = "int32", zip_code = "int32", rating = "int64",
        rating_binary = "int32", age = "int32", title = "string",
      }, dtypes)
    end)

    it("reads list flags and properties from extraMetadata[0]", function()
      for _, col in ipairs(schema) do
        assert.is_false(col.is_list)
        assert.is_false(col.is_ragged)
        assert.is_nil(col.value_count)
        assert.is_nil(col.properties.is_list)
        assert.is_nil(col.properties.is_ragged)
        assert.is_nil(col.properties.dtype_item_size)
      end
      local p = schema:column("movieId").properties
      assert.same({ dimension = 102, cardinality = 1680 }, p.embedding_sizes)
      assert.equal(".//categories/unique.movieId.parquet", p.cat_path)
      assert.equal(tk.json.null, p.num_buckets)
      assert.same({ { 0, tk.json.null } }, p._dims)
      assert.same({}, schema:column("title").properties)
    end)

    it("gives to_table() the exact JSON structure", function()
      local t = schema:to_table()
      assert.same({ "feature" }, (function()
        local keys = {}
        for k in pairs(t) do keys[#keys + 1] = k end
        return keys
      end)())
      assert.same({
        name = "userId",
        type = "INT",
        intDomain = { name = "userId", max = "943", isCategorical = true },
        annotation = {
          tag = { "categorical", "id", "user" },
          extraMetadata = { {
            embedding_sizes = { cardinality = 943, dimension = 74 }, num_buckets = tk.json.null,
            is_ragged = false, max_size = 0, dtype_item_size = 32, is_list = false, start_index = 0,
            freq_threshold = 0, cat_path = ".//categories/unique.userId.parquet",
          } },
        },
      }, t.feature[2])
      assert.same({
        name = "title",
        type = "BYTES",
        annotation = { extraMetadata = { { is_list = false, is_ragged = false, dtype_item_size = 64 } } },
      }, t.feature[11])
      assert.same({ name = "movieId", min = "1", max = "1680", isCategorical = true }, t.feature[1].intDomain)
    end)

    it("round-trips through write_json", function()
      local path = tmpfile()
      assert.equal(path, schema:write_json(path))
      local dir, name = path:match("^(.*)/([^/]*)$")
      assert.same({}, files.entries(dir, name .. ".tmp")) -- the atomic write's temporary file is gone
      local back = tk.Schema.read_json(path)
      assert.same(schema:to_table(), back:to_table())
      assert.is_true(schema == back)
      assert.is_true(schema:equals(back))
      -- and a second trip writes the same bytes
      local path2 = tmpfile()
      back:write_json(path2)
      assert.equal(read_text(path), read_text(path2))
      -- the file is what Merlin reads: camelCase keys, int64 values as strings
      local decoded = tk.json.decode(read_text(path))
      assert.equal("1680", decoded.feature[1].intDomain.max)
      assert.equal("1", decoded.feature[1].intDomain.min)
      assert.is_nil(decoded.feature[2].intDomain.min)
    end)
  end)

  describe("round trip of everything else in a file", function()
    local text = [[{
      "feature": [
        {"name": "history", "type": "INT",
         "intDomain": {"name": "item_ids", "min": "0", "max": "5000", "isCategorical": true, "uniqueCount": "12"},
         "valueCount": {"min": "1", "max": "20", "note": "kept"},
         "presence": {"minFraction": 1.0},
         "annotation": {"tag": ["item_id", "list", "sequence"], "comment": "kept too",
           "extraMetadata": [{"is_list": true, "is_ragged": true, "dtype_item_size": 64.0, "pad": 0,
                              "_dims": [], "nested": [[ ], {"e": [
                              ]}], "text": "a [] \\\" [] b", "obj": {}},
                             {"second": "entry"}]}},
        {"name": "fixed", "type": "FLOAT",
         "valueCount": {"min": "3", "max": "3"},
         "floatDomain": {"min": -1.5, "max": 2.5},
         "annotation": {"tag": ["continuous"], "extraMetadata": [{"dtype_item_size": 128.0}]}},
        {"name": "open_list", "type": "INT", "valueCount": {"max": "7"},
         "annotation": {"extraMetadata": [{"is_list": true}]}},
        {"name": "unbounded", "type": "INT", "valueCount": {"min": "2"}},
        {"name": "flagged_list", "type": "BYTES",
         "annotation": {"tag": ["text"], "extraMetadata": [{"is_list": true, "is_ragged": true,
                                                            "dtype_item_size": 8}]}},
        {"name": "numbers", "type": "INT", "intDomain": {"min": 2, "max": 9}}
      ],
      "datasetName": "toy",
      "stringDomain": [{"name": "s", "value": ["a", "b"]}]
    }]]

    it("reads lists, ragged flags and value counts", function()
      local s = tk.Schema.from_json(text, "toy.json")
      local h = s:column("history")
      assert.is_true(h.is_list)
      assert.is_true(h.is_ragged)
      assert.same({ min = 1, max = 20 }, h.value_count)
      assert.same({ "categorical", "id", "item", "list", "sequence" }, h.tags)
      assert.same({ pad = 0, _dims = {}, nested = { {}, { e = {} } }, text = 'a [] \\" [] b', obj = {} },
        h.properties)
      assert.equal("item_ids", h.int_domain.name)
      assert.equal(5001, h:cardinality())
      assert.equal("int64", h.dtype)
      local f = s:column("fixed")
      assert.is_true(f.is_list)
      assert.is_false(f.is_ragged)
      assert.same({ min = 3, max = 3 }, f.value_count)
      assert.equal("float64", f.dtype) -- an unknown item size falls back to Merlin's default
      local o = s:column("open_list")
      assert.same({ min = 0, max = 7 }, o.value_count)
      assert.is_true(o.is_ragged)
      local u = s:column("unbounded")
      assert.same({ min = 2 }, u.value_count)
      assert.is_true(u.is_list and u.is_ragged)
      assert.same({}, u.tags)
      local fl = s:column("flagged_list")
      assert.is_true(fl.is_list and fl.is_ragged)
      assert.is_nil(fl.value_count)
      assert.equal("string", fl.dtype)
      local n = s:column("numbers")
      assert.same({ min = 2, max = 9, name = "numbers", is_categorical = false }, n.int_domain)
      assert.same({}, n.tags)
    end)

    it("keeps unknown keys at every level through write and read", function()
      local s = tk.Schema.from_json(text, "toy.json")
      local path = tmpfile()
      s:write_json(path)
      local back = tk.Schema.read_json(path)
      assert.same(s:to_table(), back:to_table())
      local d = tk.json.decode(read_text(path))
      assert.equal("toy", d.datasetName)
      assert.same({ { name = "s", value = { "a", "b" } } }, d.stringDomain)
      local h, f = d.feature[1], d.feature[2]
      assert.same({ name = "item_ids", max = "5000", isCategorical = true, uniqueCount = "12" }, h.intDomain)
      assert.same({ min = "1", max = "20", note = "kept" }, h.valueCount)
      assert.same({ minFraction = 1 }, h.presence)
      assert.equal("kept too", h.annotation.comment)
      assert.same({ "categorical", "id", "item", "list", "sequence" }, h.annotation.tag)
      assert.same({ { is_list = true, is_ragged = true, dtype_item_size = 64, pad = 0, _dims = {},
        nested = { {}, { e = {} } }, text = 'a [] \\" [] b', obj = {} }, { second = "entry" } },
        h.annotation.extraMetadata)
      -- empty arrays stay arrays, empty objects stay objects, strings are untouched
      local written = read_text(path)
      assert.matches('"_dims":%s*%[%s*%]', written)
      assert.matches('"nested":%s*%[%s*%[%s*%]%s*,%s*{%s*"e":%s*%[%s*%]%s*}%s*%]', written)
      assert.matches('"obj":%s*{%s*}', written)
      assert.truthy(written:find([["a [] \\\" [] b"]], 1, true))
      assert.same({ min = -1.5, max = 2.5 }, f.floatDomain)
      assert.same({ min = "3", max = "3" }, f.valueCount)
      assert.equal(128, f.annotation.extraMetadata[1].dtype_item_size)
      assert.same({ max = "7" }, d.feature[3].valueCount)
      assert.same({ min = "2" }, d.feature[4].valueCount)
      assert.equal(8, d.feature[5].annotation.extraMetadata[1].dtype_item_size)
      assert.same({ name = "numbers", min = "2", max = "9" }, d.feature[6].intDomain)
    end)

    it("writes an empty schema as an empty feature array", function()
      local path = tmpfile()
      tk.Schema({}):write_json(path)
      assert.matches('"feature":%s*%[%s*%]', read_text(path))
      assert.equal(0, #tk.Schema.read_json(path))
    end)
  end)

  describe("selection", function()
    local schema
    before_each(function() schema = tk.Schema.read_json(MOVIELENS) end)

    it("select_by_tag keeps columns with any of the tags", function()
      assert.same({ "userId", "gender", "zip_code", "age" }, names(schema:select_by_tag(Tags.USER)))
      assert.same({ "movieId", "genres" }, names(schema:select_by_tag("item")))
      assert.same({ "movieId", "userId", "genres", "gender", "zip_code", "age" },
        names(schema:select_by_tag { Tags.USER, Tags.ITEM }))
      assert.same({ "rating", "rating_binary" }, names(schema:select_by_tag(Tags.TARGET)))
      assert.same({}, names(schema:select_by_tag("nothing")))
      assert.same({}, names(schema:select_by_tag {}))
    end)

    it("a compound tag needs all of its parts", function()
      assert.same({ "userId" }, names(schema:select_by_tag(Tags.USER_ID)))
      assert.same({ "movieId" }, names(schema:select_by_tag(Tags.ITEM_ID)))
      assert.same({ "movieId", "userId" }, names(schema:select_by_tag { Tags.ITEM_ID, Tags.USER_ID }))
      assert.same({ "rating_binary" }, names(schema:select_by_tag(Tags.BINARY_CLASSIFICATION)))
      assert.same({}, names(schema:select_by_tag(Tags.SESSION_ID)))
      assert.same({ "movieId", "userId" }, names(schema:select_by_tag(Tags.ID)))
    end)

    it("remove_by_tag drops columns with any of the tags", function()
      assert.same({ "movieId", "userId", "genres", "TE_movieId_rating", "userId_count", "gender",
        "zip_code", "age", "title" }, names(schema:remove_by_tag(Tags.TARGET)))
      assert.same({ "movieId", "genres", "TE_movieId_rating", "userId_count", "gender", "zip_code",
        "rating", "rating_binary", "age", "title" }, names(schema:remove_by_tag(Tags.USER_ID)))
      assert.same({ "TE_movieId_rating", "userId_count", "rating", "rating_binary", "title" },
        names(schema:remove_by_tag { Tags.USER, Tags.ITEM }))
    end)

    it("select_by_name follows the order of the names and skips unknown ones", function()
      assert.same({ "age", "userId" }, names(schema:select_by_name { "age", "userId", "nope" }))
      assert.same({ "title" }, names(schema:select_by_name("title")))
      assert.same({}, names(schema:select_by_name {}))
    end)

    it("without drops columns by name", function()
      assert.same({ "movieId", "userId", "genres", "TE_movieId_rating", "userId_count", "gender",
        "zip_code", "age", "title" }, names(schema:without { "rating", "rating_binary", "nope" }))
      assert.equal(10, #schema:without("title"))
    end)

    it("looks columns up by name", function()
      assert.equal("userId", schema:get("userId").name)
      assert.is_nil(schema:get("nope"))
      assert.equal(schema[2], schema:column("userId"))
      assert.has_error(function() schema:column("nope") end,
        "Schema has no column \"nope\" (columns: movieId, userId, genres, TE_movieId_rating, userId_count, "
          .. "gender, zip_code, rating, rating_binary, age, title)")
      assert.equal("movieId", schema:first().name)
      assert.has_error(function() tk.Schema({}):first() end, "Schema:first: the schema has no columns")
    end)

    it("iterates with ipairs and columns()", function()
      local a, b = {}, {}
      for i, col in ipairs(schema) do a[i] = col.name end
      for i, col in schema:columns() do b[i] = col.name end
      assert.same(names(schema), a)
      assert.same(a, b)
      local n = 0
      for _ in pairs(schema) do n = n + 1 end
      assert.equal(11, n) -- nothing but columns in the schema table
    end)

    it("copy is deep", function()
      local c = schema:copy()
      assert.is_true(c == schema)
      c[1].properties.cat_path = "changed"
      assert.equal(".//categories/unique.movieId.parquet", schema[1].properties.cat_path)
      assert.is_false(c == schema)
    end)

    it("+ is the union and - the difference", function()
      local users = schema:select_by_tag(Tags.USER)
      local items = schema:select_by_tag(Tags.ITEM)
      local both = users + items
      assert.same({ "userId", "gender", "zip_code", "age", "movieId", "genres" }, names(both))
      assert.same(names(users), names(users + users))
      assert.is_true(users + users == users)
      assert.same({ "userId", "gender", "zip_code", "age", "title" }, names(users + schema:column("title")))
      assert.same({ "gender", "zip_code", "age" }, names(users - schema:select_by_name("userId")))
      assert.has_error(function() return users + 3 end,
        "Schema +: both operands must be schemas (or columns), got 3")
    end)

    it("+ merges a column present on both sides as Merlin does", function()
      local a = tk.Schema { tk.ColumnSchema("x", { tags = { "user" }, properties = { p = 1, q = 1 },
        int_domain = { max = 9 } }) }
      local b = tk.Schema { tk.ColumnSchema("x", { tags = { "id" }, properties = { q = 2 }, dtype = "int32" }) }
      local x = (a + b)[1]
      assert.same({ "id", "user" }, x.tags)
      assert.same({ p = 1, q = 2 }, x.properties)
      assert.equal("int32", x.dtype)
      assert.equal(10, x:cardinality())
    end)

    it("checks its arguments", function()
      assert.has_error(function() schema:select_by_tag(3) end,
        "select_by_tag: tags must be a tag or a list of tags, got 3")
      assert.has_error(function() schema:select_by_tag { "user", 3 } end,
        "select_by_tag: tags[2] must be a non-empty string, got 3")
      assert.has_error(function() schema:remove_by_tag() end,
        "remove_by_tag: tags must be a tag or a list of tags, got nil")
      assert.has_error(function() schema:select_by_name(3) end,
        "select_by_name: names must be a name or a list of names, got 3")
      assert.has_error(function() schema:without { 1 } end, "without: names[1] must be a string, got 1")
      assert.has_error(function() schema.column_names() end,
        "Schema:column_names: call it with a colon on a Schema, got nil")
    end)
  end)

  describe("malformed files", function()
    -- Writes text to a temporary file and checks that reading it fails with
    -- "<path>: <message>".
    local function fails(text, message)
      local path = tmpfile(text)
      assert.has_error(function() tk.Schema.read_json(path) end, path .. ": " .. message)
    end
    local function feature(body)
      return '{"feature": [' .. body .. ']}'
    end

    it("names an unreadable file", function()
      local path = tmpfile()
      os.remove(path)
      assert.has_error(function() tk.Schema.read_json(path) end, path .. ": cannot read: No such file or directory")
      assert.has_error(function() tk.Schema.read_json(42) end, "read_json: path must be a non-empty string, got 42")
    end)

    it("refuses a FIFO instead of waiting for a writer", function()
      local dir = files.tmpdir()
      local path = dir .. "/schema.json"
      assert(os.execute("mkfifo '" .. path .. "'") == 0)
      -- a reader that waited would hang the suite: a writer is started that gives up after 20 s
      os.execute("(sleep 20; echo '{}' > '" .. path .. "') >/dev/null 2>&1 &")
      local t0 = os.time()
      assert.has_error(function() tk.Schema.read_json(path) end,
        path .. ": cannot read: not a regular file (a FIFO, a device or a socket)")
      assert.is_true(os.time() - t0 < 10)
      os.execute("rm -rf '" .. dir .. "'")
    end)

    it("refuses text after the document and NUL characters in strings", function()
      fails('{"feature": []} this is not JSON', "invalid JSON at line 1 (byte 17): text after the JSON value")
      fails('{"feature": []}\n\n{}', "invalid JSON at line 3 (byte 18): text after the JSON value")
      assert.equal(0, #tk.Schema.from_json('{"feature": []} \n\t'))
      -- "ab\u0000cd" would come back cut to "ab"
      fails(feature '{"name": "ab\\u0000cd", "type": "INT"}',
        "invalid JSON at line 1 (byte 26): a string holds a NUL character (\\u0000)")
      fails('{"feature": []}\0', "invalid JSON at line 1 (byte 16): a NUL byte")
      -- an escaped backslash before "u0000" is not an escape of NUL
      assert.equal("a\\u0000", tk.json.decode('"a\\\\u0000"'))
    end)

    it("reports invalid JSON with its line", function()
      fails('{"feature": [\n  {"name": "a",, "type": "INT"}\n]}', "invalid JSON at line 2 (byte 31)")
      fails("", "invalid JSON at line 1 (byte 1)")
      -- positions are those of the file as written, empty arrays included
      fails('{"x": [\n],\n "feature": [\n  [ ],\n  {"name": "a",, "type": "INT"}\n]}',
        "invalid JSON at line 5 (byte 49)")
    end)

    it("needs an object with a feature array", function()
      fails("[1, 2]", "the top level is not a JSON object")
      fails('{"features": []}', 'missing "feature" array')
      fails('{"feature": {"name": "a"}}', '"feature" is not an array')
      fails('{"feature": {}}', '"feature" is an object, not an array') -- not an empty schema
      fails('{"feature": { }}', '"feature" is an object, not an array')
      assert.equal(0, #tk.Schema.from_json('{"feature": []}'))
      fails(feature "3", "feature[0] is not an object: 3")
    end)

    it("needs a unique name on every feature", function()
      fails(feature '{"name": "a", "type": "INT"}, {"type": "INT"}', "feature[1] has no name")
      fails(feature '{"name": 5, "type": "INT"}', "feature[0] has a name that is not a non-empty string: 5")
      fails(feature '{"name": "a", "type": "INT"}, {"name": "a", "type": "FLOAT"}',
        "feature 'a': the name appears twice (features 0 and 1)")
    end)

    it("needs a known type", function()
      fails(feature '{"name": "a"}', "feature 'a': missing type (INT, FLOAT or BYTES)")
      fails(feature '{"name": "a", "type": "DOUBLE"}', "feature 'a': unknown type \"DOUBLE\" (expected INT, FLOAT or BYTES)")
    end)

    it("checks intDomain", function()
      fails(feature '{"name": "user_id", "type": "INT", "intDomain": {"max": "abc"}}',
        "feature 'user_id': intDomain.max is not an integer string: \"abc\"")
      fails(feature '{"name": "a", "type": "INT", "intDomain": {"min": "1.5", "max": "3"}}',
        "feature 'a': intDomain.min is not an integer string: \"1.5\"")
      fails(feature '{"name": "a", "type": "INT", "intDomain": {"max": 2.5}}',
        "feature 'a': intDomain.max is not an integer string: 2.5")
      fails(feature '{"name": "a", "type": "INT", "intDomain": {"max": true}}',
        "feature 'a': intDomain.max is not an integer string: true")
      fails(feature '{"name": "a", "type": "INT", "intDomain": {"max": "99999999999999999999"}}',
        "feature 'a': intDomain.max is out of range (beyond 2^53): \"99999999999999999999\"")
      fails(feature '{"name": "a", "type": "INT", "intDomain": {"min": "5", "max": "3"}}',
        "feature 'a': intDomain.min (5) is greater than intDomain.max (3)")
      fails(feature '{"name": "a", "type": "INT", "intDomain": {"max": "3", "isCategorical": "yes"}}',
        "feature 'a': intDomain.isCategorical is not a boolean: \"yes\"")
      fails(feature '{"name": "a", "type": "INT", "intDomain": {"name": 3, "max": "3"}}',
        "feature 'a': intDomain.name is not a non-empty string: 3")
      fails(feature '{"name": "a", "type": "INT", "intDomain": "x"}', "feature 'a': intDomain is not an object: \"x\"")
      fails(feature '{"name": "a", "type": "FLOAT", "intDomain": {"max": "3"}}',
        "feature 'a': intDomain on a FLOAT feature (only INT features have one)")
    end)

    it("checks valueCount", function()
      fails(feature '{"name": "a", "type": "INT", "valueCount": {"min": "5", "max": "2"}}',
        "feature 'a': valueCount.min (5) is greater than valueCount.max (2)")
      fails(feature '{"name": "a", "type": "INT", "valueCount": {"max": "x"}}',
        "feature 'a': valueCount.max is not an integer string: \"x\"")
      fails(feature '{"name": "a", "type": "INT", "valueCount": [1]}', "feature 'a': valueCount is not an object: [1]")
    end)

    it("checks annotation, tags and extraMetadata", function()
      fails(feature '{"name": "a", "type": "INT", "annotation": 1}', "feature 'a': annotation is not an object: 1")
      fails(feature '{"name": "a", "type": "INT", "annotation": {"tag": "user"}}',
        "feature 'a': annotation.tag is not a list of strings: \"user\"")
      fails(feature '{"name": "a", "type": "INT", "annotation": {"tag": {"user": true}}}',
        "feature 'a': annotation.tag is not a list of strings: {\"user\":true}")
      fails(feature '{"name": "a", "type": "INT", "annotation": {"tag": ["user", 3]}}',
        "feature 'a': annotation.tag[1] is not a non-empty string: 3")
      fails(feature '{"name": "a", "type": "INT", "annotation": {"tag": ["categorical", "continuous"]}}',
        "feature 'a': tags categorical and continuous cannot be used together")
      fails(feature '{"name": "a", "type": "INT", "annotation": {"extraMetadata": {"a": 1}}}',
        "feature 'a': annotation.extraMetadata is not a list: {\"a\":1}")
      fails(feature '{"name": "a", "type": "INT", "annotation": {"extraMetadata": [3]}}',
        "feature 'a': annotation.extraMetadata[0] is not an object: 3")
      fails(feature '{"name": "a", "type": "INT", "annotation": {"extraMetadata": [{"is_list": "no"}]}}',
        "feature 'a': annotation.extraMetadata[0].is_list is not a boolean: \"no\"")
      fails(feature '{"name": "a", "type": "INT", "annotation": {"extraMetadata": [{"dtype_item_size": "32"}]}}',
        "feature 'a': annotation.extraMetadata[0].dtype_item_size is not a number: \"32\"")
      fails(feature '{"name": "a", "type": "INT", "annotation": {"extraMetadata": [{"is_ragged": true}]}}',
        "feature 'a': annotation.extraMetadata[0].is_ragged is true but is_list is false")
    end)

    it("names the source of from_json text", function()
      assert.has_error(function() tk.Schema.from_json('{"x": 1}', "inline") end, 'inline: missing "feature" array')
      assert.has_error(function() tk.Schema.from_json("{") end, "schema: invalid JSON at line 1 (byte 1)")
    end)
  end)

  describe("building in Lua", function()
    it("makes columns with defaults", function()
      local c = tk.ColumnSchema("user_id", {
        tags = { Tags.USER_ID, Tags.CATEGORICAL, Tags.USER },
        int_domain = { max = 99 },
        properties = { note = "hi" },
      })
      assert.same({ "categorical", "id", "user" }, c.tags)
      assert.equal("int64", c.dtype)
      assert.same({ min = 0, max = 99, name = "user_id", is_categorical = true }, c.int_domain)
      assert.equal(100, c:cardinality())
      assert.same({ note = "hi" }, c.properties)
      assert.is_false(c.is_list)
      assert.is_false(c.is_ragged)
      assert.is_nil(c.value_count)

      local f = tk.ColumnSchema("price")
      assert.equal("float32", f.dtype)
      assert.same({}, f.tags)
      assert.same({}, f.properties)
      assert.is_nil(f:cardinality())

      local l = tk.ColumnSchema("history", { tags = "item", value_count = { min = 1, max = 10 }, dtype = "int32" })
      assert.is_true(l.is_list and l.is_ragged)
      assert.same({ "item" }, l.tags)
      local fixed = tk.ColumnSchema("emb", { value_count = { min = 4, max = 4 } })
      assert.is_true(fixed.is_list)
      assert.is_false(fixed.is_ragged)
      assert.equal("ColumnSchema(user_id, int64, tags={categorical,id,user}, cardinality=100)", tostring(c))
    end)

    it("adds the categorical tag for a categorical domain", function()
      local c = tk.ColumnSchema("a", { int_domain = { max = 5, is_categorical = true } })
      assert.same({ "categorical" }, c.tags)
      assert.same({ min = 0, max = 5, name = "a", is_categorical = true }, c.int_domain)
    end)

    it("derives columns with with_tags, with_properties, with_name, with_dtype", function()
      local c = tk.ColumnSchema("x", { tags = { "user" }, properties = { a = 1 }, int_domain = { max = 9 } })
      local t = c:with_tags(Tags.ITEM_ID, "custom")
      assert.same({ "custom", "id", "item", "user" }, t.tags)
      assert.same({ "user" }, c.tags)
      assert.same({ "id", "session", "user" }, c:with_tags { Tags.SESSION_ID }.tags)
      -- Merlin's override: a colliding tag replaces the old one
      local cat = tk.ColumnSchema("y", { tags = { "categorical" }, int_domain = { max = 3, is_categorical = true } })
      local cont = cat:with_tags(Tags.CONTINUOUS)
      assert.same({ "continuous" }, cont.tags)
      assert.is_false(cont.int_domain.is_categorical)
      local p = c:with_properties { b = 2, a = 3 }
      assert.same({ a = 3, b = 2 }, p.properties)
      assert.same({ a = 1 }, c.properties)
      assert.equal("z", c:with_name("z").name)
      local d = c:with_dtype("float32")
      assert.equal("float32", d.dtype)
      assert.is_nil(d.int_domain)
      local li = c:with_dtype("int32", { is_list = true, is_ragged = true })
      assert.is_true(li.is_list and li.is_ragged)
      assert.equal(10, li:cardinality())
      assert.is_true(c:copy() == c)
      assert.is_false(c:copy() == p)
    end)

    it("builds, writes and reads a schema", function()
      local schema = tk.Schema {
        tk.ColumnSchema("user_id", { tags = { Tags.USER_ID, Tags.CATEGORICAL }, int_domain = { max = 9 } }),
        tk.ColumnSchema("item_id", { tags = { Tags.ITEM_ID, Tags.CATEGORICAL }, int_domain = { min = 1, max = 19 },
          dtype = "int32" }),
        tk.ColumnSchema("item_genres", { tags = { Tags.ITEM, Tags.CATEGORICAL }, int_domain = { max = 4 },
          value_count = { min = 1, max = 3 } }),
        tk.ColumnSchema("age", { tags = { Tags.USER, Tags.CONTINUOUS } }),
        tk.ColumnSchema("click", { tags = { Tags.TARGET, Tags.BINARY_CLASSIFICATION }, dtype = "int8" }),
        "raw",
      }
      assert.equal(6, #schema)
      assert.equal("raw", schema[6].name)
      assert.same({ "user_id", "age" }, names(schema:select_by_tag(Tags.USER)))
      local path = tmpfile()
      schema:write_json(path)
      local back = tk.Schema.read_json(path)
      assert.is_true(back == schema)
      assert.same(schema:to_table(), back:to_table())
      local g = back:column("item_genres")
      assert.is_true(g.is_list and g.is_ragged)
      assert.same({ min = 1, max = 3 }, g.value_count)
      assert.equal("int8", back:column("click").dtype)
      assert.same({ min = 1, max = 19, name = "item_id", is_categorical = true }, back:column("item_id").int_domain)
      -- printed as a table of the columns: tags, dtype and domain
      local text = tostring(schema)
      assert.truthy(text:find("^Schema: 6 columns\nColumn +Tags +Dtype +Domain\n%-+\n"), text)
      assert.truthy(text:find("\nitem_id +categorical, id, item +int32 +%[1, 19%] item_id\n"), text)
      assert.truthy(text:find("\nitem_genres +categorical, item +int64 list %(ragged%)"), text)
      assert.truthy(text:find("\nraw +float32$"), text)
    end)

    it("rejects bad column options, naming the field", function()
      assert.has_error(function() tk.ColumnSchema(42) end, "ColumnSchema: name must be a non-empty string, got 42")
      assert.has_error(function() tk.ColumnSchema("") end, "ColumnSchema: name must be a non-empty string, got \"\"")
      assert.has_error(function() tk.ColumnSchema("a", 3) end, "ColumnSchema 'a': options must be a table, got 3")
      assert.has_error(function() tk.ColumnSchema("a", { dtyp = "int64" }) end,
        "ColumnSchema 'a': unknown option \"dtyp\" (known: dtype, int_domain, is_list, is_ragged, properties, tags, value_count)")
      assert.has_error(function() tk.ColumnSchema("a", { tags = 3 }) end,
        "ColumnSchema 'a': tags must be a tag or a list of tags, got 3")
      assert.has_error(function() tk.ColumnSchema("a", { tags = { "user", false } }) end,
        "ColumnSchema 'a': tags[2] must be a non-empty string, got false")
      assert.has_error(function() tk.ColumnSchema("a", { tags = { "continuous", "id" } }) end,
        "ColumnSchema 'a': tags continuous and id cannot be used together")
      assert.has_error(function() tk.ColumnSchema("a", { tags = { Tags.USER_ID, Tags.CONTINUOUS } }) end,
        "ColumnSchema 'a': tags continuous and id cannot be used together")
      assert.has_error(function() tk.ColumnSchema("a", { dtype = "float" }) end,
        "ColumnSchema 'a': dtype must be one of float16, float32, float64, int16, int32, int64, int8, string, got \"float\"")
      assert.has_error(function() tk.ColumnSchema("a", { properties = "x" }) end,
        "ColumnSchema 'a': properties must be a table, got \"x\"")
      assert.has_error(function() tk.ColumnSchema("a", { properties = { is_list = true } }) end,
        "ColumnSchema 'a': properties.is_list is reserved (it is written from the column's fields)")
      assert.has_error(function() tk.ColumnSchema("a", { is_list = "yes" }) end,
        "ColumnSchema 'a': is_list must be a boolean, got \"yes\"")
      assert.has_error(function() tk.ColumnSchema("a", { is_ragged = 1 }) end,
        "ColumnSchema 'a': is_ragged must be a boolean, got 1")
      assert.has_error(function() tk.ColumnSchema("a", { is_ragged = true }) end,
        "ColumnSchema 'a': is_ragged is true but is_list is false")
      assert.has_error(function() tk.ColumnSchema("a", { int_domain = 5 }) end,
        "ColumnSchema 'a': int_domain must be a table, got 5")
      assert.has_error(function() tk.ColumnSchema("a", { int_domain = { max = 1.5 } }) end,
        "ColumnSchema 'a': int_domain.max must be an integer, got 1.5")
      assert.has_error(function() tk.ColumnSchema("a", { int_domain = { min = "0", max = 3 } }) end,
        "ColumnSchema 'a': int_domain.min must be an integer, got \"0\"")
      assert.has_error(function() tk.ColumnSchema("a", { int_domain = { min = 4, max = 3 } }) end,
        "ColumnSchema 'a': int_domain.min (4) is greater than int_domain.max (3)")
      assert.has_error(function() tk.ColumnSchema("a", { int_domain = { maximum = 3 } }) end,
        "ColumnSchema 'a': int_domain has no field \"maximum\" (known: is_categorical, max, min, name)")
      assert.has_error(function() tk.ColumnSchema("a", { int_domain = { max = 3, name = 7 } }) end,
        "ColumnSchema 'a': int_domain.name must be a non-empty string, got 7")
      assert.has_error(function() tk.ColumnSchema("a", { int_domain = { max = 3, is_categorical = 1 } }) end,
        "ColumnSchema 'a': int_domain.is_categorical must be a boolean, got 1")
      assert.has_error(function() tk.ColumnSchema("a", { int_domain = { max = 3 }, dtype = "float32" }) end,
        "ColumnSchema 'a': int_domain needs an integer dtype, got float32")
      assert.has_error(function() tk.ColumnSchema("a", { value_count = { min = 3, max = 1 } }) end,
        "ColumnSchema 'a': value_count.min (3) is greater than value_count.max (1)")
      assert.has_error(function() tk.ColumnSchema("a", { value_count = { max = 2 }, is_list = false }) end,
        "ColumnSchema 'a': value_count is set but is_list is false")
      assert.has_error(function() tk.ColumnSchema("a", { value_count = { min = 1, max = 2 }, is_ragged = false }) end,
        "ColumnSchema 'a': is_ragged is false but value_count has min 1 and max 2")
    end)

    it("rejects bad schemas and method arguments", function()
      assert.has_error(function() tk.Schema(3) end, "Schema: columns must be a list of ColumnSchema, got 3")
      assert.has_error(function() tk.Schema { tk.ColumnSchema("a"), {} } end,
        "Schema: column 2 is not a ColumnSchema, got {}")
      assert.has_error(function() tk.Schema { tk.ColumnSchema("a"), tk.ColumnSchema("a") } end,
        "Schema: duplicate column 'a'")
      local c = tk.ColumnSchema("a")
      assert.has_error(function() c:has_tag(3) end, "has_tag: tag must be a non-empty string, got 3")
      assert.has_error(function() c.cardinality() end,
        "ColumnSchema:cardinality: call it with a colon on a ColumnSchema, got nil")
      assert.has_error(function() c:with_properties(3) end,
        "ColumnSchema 'a': with_properties: properties must be a table, got 3")
      assert.has_error(function() c:with_tags(3) end,
        "ColumnSchema 'a': with_tags: tags[1] must be a non-empty string, got 3")
      assert.has_error(function() c:with_dtype("int128") end,
        "ColumnSchema 'a': dtype must be one of float16, float32, float64, int16, int32, int64, int8, string, got \"int128\"")
      assert.has_error(function() tk.Schema {}:write_json(3) end, "write_json: path must be a non-empty string, got 3")
    end)

    it("reports where a write fails", function()
      local path = "/nonexistent-dir-for-towerkit/schema.json"
      assert.has_error(function() tk.Schema {}:write_json(path) end,
        path .. ": cannot create a temporary file in '/nonexistent-dir-for-towerkit': No such file or directory")
    end)
  end)
end)
