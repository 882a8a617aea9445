-- tk.distributed in one process, and a failing rank under mpirun (the multi-rank
-- equivalence specs are tests/mpi, run under mpirun -np 2 by scripts/run-tests.sh).
local tk = require "towerkit"
local files = require "tests.spec.helpers.files"
local mpi = require "tests.spec.helpers.mpi"

local build = os.getenv("TOWERKIT_BUILD") or "build"

describe("tk.distributed in one process", function()
  it("is one rank of one, or says how to get MPI", function()
    if tk.distributed.available() then
      assert.equals(0, tk.distributed.rank())
      assert.equals(1, tk.distributed.size())
      assert.is_false(tk.distributed.auto())
    else
      local ok, err = pcall(tk.distributed.init)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("libopenmpi-dev", 1, true), err)
    end
  end)

  it("refuses row-sharded tables in one process, and unknown schemes", function()
    local T = tk.Tags
    local schema = tk.Schema {
      tk.ColumnSchema("user_id", { tags = { T.USER_ID, T.CATEGORICAL }, int_domain = { max = 9 } }),
      tk.ColumnSchema("item_id", { tags = { T.ITEM_ID, T.CATEGORICAL }, int_domain = { max = 9 } }),
    }
    local m = tk.TwoTowerModel(schema, tk.MLPBlock({ 4 }))
    local ok, err = pcall(m.compile, m, { embedding_sharding = "row" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find('embedding_sharding = "row" splits the tables over the ranks', 1, true), err)
    ok, err = pcall(m.compile, m, { embedding_sharding = true })
    assert.is_false(ok)
    assert.truthy(tostring(err):find('embedding_sharding must be "replicated" or "row"', 1, true), err)
    m:compile { embedding_sharding = "replicated" }
    assert.is_nil(m.sharding)
    -- the C entry refuses too (no MPI started, or one rank)
    ok, err = pcall(tk.core.dist_tables_shard, m.block)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("row-sharded tables need MPI with more than one rank", 1, true), err)
    -- building tables sharded needs the ranks too
    ok, err = pcall(tk.TwoTowerModel, schema, tk.MLPBlock({ 4 }), { embedding_sharding = "row" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find('embedding_sharding = "row" builds each table as one rank\'s rows of an MPI job',
      1, true), err)
    assert.has_no_error(function() tk.TwoTowerModel(schema, tk.MLPBlock({ 4 }), { embedding_sharding = "replicated" }) end)
    -- the one check of the setting, in the model's options and in the embedding options
    ok, err = pcall(tk.TwoTowerModel, schema, tk.MLPBlock({ 4 }), { embedding_sharding = 5 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find('TwoTowerModel: embedding_sharding must be "replicated" or "row", got number', 1, true), err)
    ok, err = pcall(tk.TwoTowerModel, schema, tk.MLPBlock({ 4 }), { embedding_sharding = "replicated",
      embedding_options = { embedding_sharding = "rows" } })
    assert.is_false(ok)
    assert.truthy(tostring(err):find('EmbeddingOptions: embedding_sharding must be "replicated" or "row", got "rows"', 1, true), err)
  end)

  it("checks the gradient exchange's options in one process too (with or without MPI in the build)", function()
    local T = tk.Tags
    local schema = tk.Schema {
      tk.ColumnSchema("user_id", { tags = { T.USER_ID, T.CATEGORICAL }, int_domain = { max = 9 } }),
      tk.ColumnSchema("item_id", { tags = { T.ITEM_ID, T.CATEGORICAL }, int_domain = { max = 9 } }),
    }
    local m = tk.TwoTowerModel(schema, tk.MLPBlock({ 4 }))
    m:compile {}
    local ok, err = pcall(tk.core.dist_grads_begin, m.ctx, m.block, -8)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("bucket_bytes must be >= 0 (0: one bucket), got -8", 1, true), err)
    -- one process: nothing to exchange
    assert.has_no_error(function()
      tk.core.dist_grads_begin(m.ctx, m.block, 0)
      tk.core.dist_sync_grads(m.ctx, m.block)
    end)
  end)

  it("a rank's rows against all items (row_offset) make the full batch's loss", function()
    tk.manual_seed(3)
    local q, c = tk.randn({ 8, 4 }), tk.randn({ 8, 4 })
    local ids = tk.tensor({ 1, 2, 3, 1, 5, 6, 2, 8 }, "int64")
    local ctx = tk.Context(1)
    local full = ctx:run(function()
      return tk.core.retrieval_loss(q, c, { item_ids = ids, temperature = 0.5 }):item()
    end)
    -- the two halves: rows [0, 4) and [4, 8) of the queries, each against all 8 items
    local halves = 0
    for h = 0, 1 do
      local ctx2 = tk.Context(1)
      halves = halves + ctx2:run(function()
        local part = tk.core.index_select(q, tk.core.arange(8), h * 4, 4)
        return tk.core.retrieval_loss(part, c, { item_ids = ids, temperature = 0.5, row_offset = h * 4 }):item()
      end)
    end
    -- the same row sums in another grouping: equal up to rounding
    assert.is_true(math.abs(full - halves / 2) <= 1e-6 * math.max(1, math.abs(full)), ("%g vs %g"):format(full, halves / 2))
  end)
end)

-- A failing rank ends the job: the other one exits within a bounded time, never hangs.
-- (mpi.MPIRUN: without leak checks under the sanitizers)
local function run_fault(mode)
  return files.run(("timeout 60 %s -np 2 %s/towerkit tests/mpi/scripts/fault.lua %s"):format(mpi.MPIRUN, build, mode))
end

local fault_it = mpi.it

describe("a failing rank under mpirun -np 2", function()
  fault_it("a Lua error on rank 1 ends the job with rank 1's message", function()
    local t0 = os.time()
    local out, code = run_fault("error")
    assert.is_true(os.time() - t0 < 50, "the job should end at once: " .. out)
    assert.is_true(code ~= nil and code ~= 0 and code ~= 124, out) -- 124: timeout killed it
    assert.truthy(out:find("the data of rank 1 is bad", 1, true), out)
    assert.truthy(out:find("rank 1 of 2 exited with status 1", 1, true), out)
    assert.falsy(out:find("rank 0 finished", 1, true), out)
  end)

  fault_it("a rank killed by a signal ends the job", function()
    local t0 = os.time()
    local out, code = run_fault("kill")
    assert.is_true(os.time() - t0 < 50, "the job should end at once: " .. out)
    assert.is_true(code ~= nil and code ~= 0 and code ~= 124, out)
    assert.falsy(out:find("rank 0 finished", 1, true), out)
  end)
end)

-- One checkpoint from a distributed run, served by one process.
describe("a checkpoint saved under mpirun -np 2", function()
  fault_it("loads in one process with the trained weights, bit for bit", function()
    package.path = "tests/mpi/?.lua;" .. package.path
    local C = require "common"
    local dir = os.tmpname()
    os.remove(dir)
    local out, code = files.run(("timeout 120 %s -np 2 %s/towerkit tests/mpi/scripts/checkpoint.lua %s"):format(
      mpi.MPIRUN, build, dir))
    assert.equals(0, code, out)
    local want = {}
    for line in io.lines(dir .. ".weights.txt") do want[#want + 1] = tonumber(line) end
    want = tk.tensor(want):totable() -- the float32 values the text names
    local m = tk.load(dir)
    local got = C.flat_weights(m)
    assert.equals(#want, #got)
    for i = 1, #want do
      if want[i] ~= got[i] then error(("weight %d: %.9g trained, %.9g loaded"):format(i, want[i], got[i])) end
    end
    -- it serves: top-k from the loaded model
    local batch = C.data(4, 9):batches { batch_size = 4, shuffle = false }()
    local ids = m:to_top_k_encoder(C.data(50):unique_by("item_id"), { k = 3 }):query(batch)
    assert.same({ 4, 3 }, ids:shape())
    os.execute(("rm -rf '%s' '%s.weights.txt'"):format(dir, dir))
  end)
end)
