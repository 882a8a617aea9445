local tk = require "towerkit"
local T = tk.Tags

local files = require "tests.spec.helpers.files"
local tmpdir = files.tmpdir

local function schema()
  return tk.Schema {
    tk.ColumnSchema("user_id", { tags = { T.USER_ID, T.CATEGORICAL }, int_domain = { max = 499 } }),
    tk.ColumnSchema("user_country", { tags = { T.USER, T.CATEGORICAL }, int_domain = { max = 19 } }),
    tk.ColumnSchema("user_recent", { tags = { T.USER, T.CATEGORICAL, T.LIST }, int_domain = { max = 49 },
      value_count = { min = 1, max = 3 } }),
    tk.ColumnSchema("user_activity", { tags = { T.USER, T.CONTINUOUS } }),
    tk.ColumnSchema("item_id", { tags = { T.ITEM_ID, T.CATEGORICAL }, int_domain = { max = 399 } }),
    tk.ColumnSchema("item_category", { tags = { T.ITEM, T.CATEGORICAL }, int_domain = { max = 29 } }),
    tk.ColumnSchema("item_price", { tags = { T.ITEM, T.CONTINUOUS } }),
  }
end

local function make_model(opts)
  tk.manual_seed(5)
  opts = opts or {}
  local model = tk.TwoTowerModel(schema(), tk.MLPBlock({ 32, 16 }, { no_activation_last_layer = true }), {
    embedding_options = { embedding_dim_default = 8 },
    post = "l2-norm",
    logits_temperature = opts.temperature or 0.1,
    logq = opts.logq,
    negatives = opts.negatives,
    num_hard_negatives = opts.num_hard_negatives,
    sample_weight = opts.sample_weight,
  })
  model:compile { optimizer = tk.optim.Adam { learning_rate = opts.lr or 5e-3 } }
  return model
end

local data, items = tk.data.synthetic(schema(), 20000, { seed = 2, clusters = 10 })
local train, test = data:split(0.9, 3)

local function same(a, b) return tostring(a) == tostring(b) end

describe("TwoTowerModel", function()
  it("learns the planted structure: recall@10 well above popularity", function()
    local model = make_model { logq = "streaming" }
    tk.reset()
    local before = tk.default_context():stats().arena_bytes
    local history = model:fit(train, { batch_size = 256, epochs = 2, verbose = false })
    -- training keeps its tensors in the model's own contexts, reset every step
    assert.equal(before, tk.default_context():stats().arena_bytes)
    assert.equal(2, #history.epochs)
    assert.truthy(history.epochs[2].loss < history.epochs[1].loss)
    local ours = model:evaluate(test, { item_corpus = items })
    local popular = tk.popularity_baseline(train, test, "item_id")
    assert.truthy(ours.recall_at_10 > 1.5 * popular.recall_at_10,
      ("recall %.3f vs popularity %.3f"):format(ours.recall_at_10, popular.recall_at_10))
    assert.truthy(ours.ndcg_at_10 > 1.5 * popular.ndcg_at_10)
  end)

  it("trains with sampled negatives, hard negatives and a frequency table", function()
    local counts = {}
    for i = 1, 400 do counts[i] = 1 / 400 end
    local model = make_model { logq = counts, negatives = { num = 64, sampler = "popularity", corpus = items } }
    local h = model:fit(train, { batch_size = 256, epochs = 1, verbose = false })
    assert.truthy(h.epochs[1].loss > 0)
    local m2 = make_model { negatives = { num = 32, corpus = items, sampler = "log_uniform" }, num_hard_negatives = 8 }
    m2:fit(train, { batch_size = 256, epochs = 1, verbose = false })
    -- sample weights: a zero weight removes a row from the loss
    local rows = train:select(tk.core.arange(256))
    rows.columns.w = tk.zeros { 256 }
    local m3 = make_model { sample_weight = "w" }
    local before = m3.block:get_weights()[1]:totable()
    assert.equal(0, m3:train_step(rows:rows(tk.core.arange(256))))
    local m4 = make_model { sample_weight = "missing" }
    local ok, err = pcall(m4.fit, m4, rows, { verbose = false })
    assert.is_false(ok)
    assert.truthy(err:find("the batch has no sample weight column 'missing'", 1, true), err)
    assert.truthy(before)
  end)

  it("evaluates on the full catalogue exactly as a brute-force ranking", function()
    local model = make_model()
    model:fit(train, { batch_size = 512, epochs = 1, verbose = false })
    local small = test:select(tk.core.arange(50))
    local m = model:evaluate(small, { item_corpus = items, metrics = { tk.metrics.RecallAt(5) } })
    local q = model:query_embeddings(small).embeddings:totable()
    local e = model:item_embeddings(items)
    local emb, ids = e.embeddings:totable(), e.ids:totable()
    local pos = small:column("item_id"):totable()
    local hits = 0
    for r = 1, #q do
      local scores = {}
      for i = 1, #emb do
        local s = 0
        for d = 1, #emb[i] do s = s + q[r][d] * emb[i][d] end
        scores[i] = { s, ids[i] }
      end
      table.sort(scores, function(a, b) return a[1] > b[1] end)
      for j = 1, 5 do if scores[j][2] == pos[r] then hits = hits + 1 end end
    end
    assert.near(hits / #q, m.recall_at_5, 1e-9)
    -- the encoder returns the same top items
    local enc = model:to_top_k_encoder(items, { k = 5 })
    local top, scores = enc:query(small:rows(tk.core.arange(3)))
    assert.same({ 3, 5 }, top:shape())
    assert.same({ 3, 5 }, scores:shape())
    local s = scores:totable()
    assert.truthy(s[1][1] >= s[1][2] and s[1][2] >= s[1][5])
  end)

  it("excludes the items a user has seen", function()
    local model = make_model()
    model:fit(train, { batch_size = 512, epochs = 1, verbose = false })
    local plain = model:evaluate(test, { item_corpus = items, k = 10 })
    local excl = model:evaluate(test, { item_corpus = items, exclude_seen = train })
    assert.are_not.equal(plain.recall_at_10, excl.recall_at_10)
  end)

  it("saves and loads a model that predicts exactly the same", function()
    local dir = tmpdir()
    local model = make_model()
    model:fit(train, { batch_size = 512, epochs = 1, verbose = false })
    model:save(dir .. "/m")
    local loaded = tk.load(dir .. "/m")
    local a = model:query_embeddings(test).embeddings
    local b = loaded:query_embeddings(test).embeddings
    -- bitwise: the weights go through the file unchanged, and both are the same
    -- embed_rows call (batches, thread split) on the same data in this process
    assert.truthy(same(a, b))
    assert.same(a:totable()[7], b:totable()[7])
    -- overwrite in place, then a failing save leaves it intact
    model:save(dir .. "/m")
    local f = io.open(dir .. "/m/weights.safetensors", "rb")
    local good = f:read("*a")
    f:close()
    local ok = pcall(model.save, model, dir .. "/nonexistent/deeper/m")
    assert.is_false(ok)
    -- a truncated weights file is a clear error
    os.execute("cp -r " .. dir .. "/m " .. dir .. "/t")
    f = io.open(dir .. "/t/weights.safetensors", "wb")
    f:write(good:sub(1, #good - 100))
    f:close()
    local ok2, err = pcall(tk.load, dir .. "/t")
    assert.is_false(ok2)
    assert.truthy(err:find("weights.safetensors", 1, true), err)
    -- missing directory
    ok2, err = pcall(tk.load, dir .. "/none")
    assert.is_false(ok2)
    assert.truthy(err:find("none", 1, true), err)
    -- a schema that does not match the weights
    os.execute("cp -r " .. dir .. "/m " .. dir .. "/s")
    local other = schema()
    local cols = {}
    for i, c in ipairs(other) do cols[i] = c end
    cols[1] = tk.ColumnSchema("user_id", { tags = { T.USER_ID, T.CATEGORICAL }, int_domain = { max = 99 } })
    tk.Schema(cols):write_json(dir .. "/s/schema.json")
    ok2, err = pcall(tk.load, dir .. "/s")
    assert.is_false(ok2)
    assert.truthy(err:find("schema.json does not match", 1, true), err)
    os.execute("rm -rf " .. dir)
  end)

  it("exports embeddings as CSV and safetensors", function()
    local dir = tmpdir()
    local model = make_model()
    local e = model:item_embeddings(items)
    assert.same({ 400, 16 }, e.embeddings:shape())
    e:save(dir .. "/items.csv")
    e:save(dir .. "/items.safetensors")
    local back = tk.core.safetensors_read(dir .. "/items.safetensors")
    assert.same(e.embeddings:totable()[3], back.embeddings:totable()[3]) -- through a file: bitwise
    assert.same(e.ids:totable(), back.ids:totable())
    local f = io.open(dir .. "/items.csv")
    local header = f:read("*l")
    f:close()
    assert.equal("id,e_0,", header:sub(1, 7))
    os.execute("rm -rf " .. dir)
  end)

  it("stops on a NaN loss, naming the step, with the last good weights kept", function()
    local rows = train:select(tk.core.arange(1024))
    local prices = rows:column("item_price")
    local bad = prices:clone()
    bad:set(0 / 0, 600) -- row 600 is in the third batch of 256
    rows.columns.item_price = bad
    local model = make_model()
    local ok, err = pcall(model.fit, model, rows, { batch_size = 256, shuffle = false, verbose = false })
    assert.is_false(ok)
    assert.truthy(err:find("the loss is nan at step 3", 1, true) or err:find("the loss is -nan at step 3", 1, true), err)
    local ref = make_model()
    ref:fit(rows:select(tk.core.arange(512)), { batch_size = 256, shuffle = false, verbose = false })
    local a, b = model.block:get_weights(), ref.block:get_weights()
    for i = 1, #a do assert.truthy(same(a[i], b[i]), i) end
  end)

  it("reports progress lines and validation metrics", function()
    local lines = {}
    local model = make_model()
    model:fit(train:select(tk.core.arange(2048)), { batch_size = 512, epochs = 1, log = function(l) lines[#lines + 1] = l end,
      validation_data = test:select(tk.core.arange(200)), validation_opts = { item_corpus = items } })
    assert.truthy(lines[1]:find("^epoch 1/1  step 4/4  loss %d+%.%d+  %d+ ex/s  ETA 0:00$"), lines[1])
    assert.truthy(lines[2]:find("^epoch 1  examples_per_second [%d.]+  loss [%d.]+  seconds [%d.]+  val_ndcg_at_10 [%d.]+  val_recall_at_10 [%d.]+$"), lines[2])
  end)

  it("writes its history and runs callbacks", function()
    local dir = tmpdir()
    local model = make_model()
    local stopper = tk.callbacks.EarlyStopping { monitor = "loss", patience = 1, min_delta = 10 }
    local h = model:fit(train, { batch_size = 512, epochs = 5, verbose = false,
      callbacks = { stopper, tk.callbacks.ModelCheckpoint { dir = dir .. "/epoch-%d" } } })
    assert.equal(2, #h.epochs) -- no improvement of 10 after the first epoch
    assert.equal(2, stopper.stopped_epoch)
    assert.truthy(io.open(dir .. "/epoch-1/config.json")):close()
    h:to_csv(dir .. "/h.csv")
    h:to_json(dir .. "/h.json")
    local f = io.open(dir .. "/h.csv")
    assert.equal("epoch,examples_per_second,loss,seconds", f:read("*l"))
    f:close()
    f = io.open(dir .. "/h.json")
    local j = tk.json.decode(f:read("*a"))
    f:close()
    assert.equal(2, #j.epochs)
    assert.truthy(#j.steps > 0)
    os.execute("rm -rf " .. dir)
  end)

  it("raises clear errors", function()
    local model = tk.TwoTowerModel(schema(), tk.MLPBlock { 4 })
    assert.has_error(function() model:fit(train) end, "fit: call model:compile{...} first")
    model:compile {}
    assert.has_error(function() model:evaluate(test) end, "evaluate: item_corpus (a Dataset of items) is required")
    assert.has_error(function() tk.TwoTowerModel(schema(), tk.MLPBlock { 4 }, { logits_temprature = 1 }) end)
    assert.has_error(function() tk.TwoTowerModel(tk.MLPBlock { 4 }) end,
      "TwoTowerModel: the block must be a TwoTowerBlock (it has no query and item towers)")
    assert.has_error(function() tk.TwoTowerModel(schema(), tk.MLPBlock { 4 }, { logq = { 0.5, 0 } }) end,
      "TwoTowerModel: logq probabilities must be positive (item 1 is not)")
    assert.has_error(function() model:fit(train, { epochs = 0 }) end, "fit: epochs must be a positive integer")
  end)
end)

describe("evaluation protocol", function()
  local model = make_model()
  model:fit(train, { batch_size = 256, epochs = 1, verbose = false })
  local small = test:select(tk.core.arange(200))

  it("excludes seen items with exclude_seen = true (the data of the last fit) as with the dataset", function()
    local a = model:evaluate(small, { item_corpus = items, exclude_seen = train })
    local b = model:evaluate(small, { item_corpus = items, exclude_seen = true })
    assert.same(a, b)
    local plain = model:evaluate(small, { item_corpus = items })
    assert.truthy(a.recall_at_10 >= plain.recall_at_10)
    local fresh = make_model()
    local ok, err = pcall(fresh.evaluate, fresh, small, { item_corpus = items, exclude_seen = true })
    assert.is_false(ok)
    assert.truthy(err:find("has not been fit; pass the training Dataset", 1, true), err)
    ok, err = pcall(model.evaluate, model, small, { item_corpus = items, exclude_seen = "train" })
    assert.is_false(ok)
    assert.truthy(err:find("exclude_seen must be a Dataset of interactions (user id, item id) or true", 1, true), err)
  end)

  it("caps k at the catalogue and names unknown options", function()
    local m = model:evaluate(small, { item_corpus = items, metrics = { tk.metrics.RecallAt(100000) } })
    assert.equal(1, m.recall_at_100000) -- every positive is in the catalogue of 400
    local ok, err = pcall(model.evaluate, model, small, { item_corpus = items, exclude = train })
    assert.is_false(ok)
    assert.truthy(err:find("evaluate: unknown option 'exclude'", 1, true), err)
  end)

  it("refuses positives outside the item corpus, naming the id and the column", function()
    local few = items:select(tk.core.arange(10))
    local ok, err = pcall(model.evaluate, model, small, { item_corpus = few })
    assert.is_false(ok)
    assert.truthy(err:find("in column 'item_id' (row ", 1, true) and err:find("is not in item_corpus", 1, true), err)
  end)

  it("ranks popularity with the same exclusion of seen items", function()
    local with = tk.popularity_baseline(train, small, "item_id", { exclude_seen = train, user_id = "user_id" })
    local same = model:popularity_baseline(train, small, { exclude_seen = train })
    assert.same(with, same)
    local without = tk.popularity_baseline(train, small, "item_id")
    -- excluding seen items can only move each row's positive up
    assert.truthy(with.recall_at_10 >= without.recall_at_10)
    -- brute force for one row: the most popular items its user has not seen in train
    local counts, seen = {}, {}
    local users, its = train:column("user_id"):totable(), train:column("item_id"):totable()
    local u0, pos0 = small:column("user_id"):totable()[1], small:column("item_id"):totable()[1]
    for r = 1, #its do
      counts[its[r]] = (counts[its[r]] or 0) + 1
      if users[r] == u0 and its[r] ~= pos0 then seen[its[r]] = true end
    end
    local order = {}
    for id in pairs(counts) do if not seen[id] then order[#order + 1] = id end end
    table.sort(order, function(a, b) return counts[a] > counts[b] or (counts[a] == counts[b] and a < b) end)
    local hit = 0
    for i = 1, 10 do if order[i] == pos0 then hit = 1 end end
    local one = tk.popularity_baseline(train, small:select(tk.core.arange(1)), "item_id",
      { exclude_seen = train, user_id = "user_id", metrics = { tk.metrics.RecallAt(10) } })
    assert.equal(hit, one.recall_at_10)
    local ok, err = pcall(tk.popularity_baseline, train, small, "item_id", { exclude_seen = true })
    assert.is_false(ok)
    assert.truthy(err:find("exclude_seen must be a Dataset of interactions", 1, true), err)
  end)

  it("refuses a batch of one row and data with fewer than two rows", function()
    local m = make_model()
    local ok, err = pcall(m.fit, m, train, { batch_size = 1, verbose = false })
    assert.is_false(ok)
    assert.truthy(err:find("batch_size must be an integer >= 2", 1, true), err)
    ok, err = pcall(m.fit, m, train:select(tk.core.arange(0)), { verbose = false })
    assert.is_false(ok)
    assert.truthy(err:find("the data has 0 rows; training needs at least 2", 1, true), err)
  end)

  it("refuses to embed or evaluate data with no rows", function()
    local m = make_model()
    local empty = test:select(tk.core.arange(0))
    for _, c in ipairs {
      { function() m:query_embeddings(empty) end, "query_embeddings: the data has no rows" },
      { function() m:item_embeddings(empty) end, "item_embeddings: the data has no rows" },
      { function() m:evaluate(empty, { item_corpus = items }) end, "evaluate: data has no rows" },
    } do
      local ok, err = pcall(c[1])
      assert.is_false(ok)
      assert.truthy(tostring(err):find(c[2], 1, true), err)
    end
  end)
end)

describe("options", function()
  it("are checked everywhere: an unknown key is an error naming it and the known ones", function()
    local m = make_model()
    local cases = {
      { "fit", function() m:fit(train, { batch_size = 256, epoch = 1, verbose = false }) end },
      { "compile", function() m:compile { optimiser = tk.optim.Adam() } end },
      { "item_embeddings", function() m:item_embeddings(items, { batchsize = 10 }) end },
      { "query_embeddings", function() m:query_embeddings(test, { batchsize = 10 }) end },
      { "to_top_k_encoder", function() m:to_top_k_encoder(items, { K = 3 }) end },
      { "batches", function() for _ in train:batches { batchsize = 3 } do end end },
      { "Dataset", function() tk.data.Dataset({ a = { 1, 2 } }, { schemas = 1 }) end },
      { "synthetic", function() tk.data.synthetic(schema(), 10, { cluster = 3 }) end },
      { "summary", function() m.block:summary(nil, { quite = true }) end },
      { "InputBlock", function() tk.InputBlock(schema(), { embeddings_options = {} }) end },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(c[2])
      assert.is_false(ok, c[1])
      assert.truthy(err:find(c[1] .. ": unknown option '", 1, true) and err:find("known: ", 1, true), err)
    end
  end)
end)
