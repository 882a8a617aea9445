-- The dense gradients' exchange under `mpirun -np 2` (fit's allreduce option,
-- tk_dist_grads_begin / tk_dist_sync_grads): one bucket, many buckets and buckets
-- reduced during backward give the same weights bit for bit (every element is summed
-- by one owner in rank order whatever the buckets), the ranks agree bit for bit, the
-- overlap really starts buckets during backward, and bad options are refused.
package.path = "tests/mpi/?.lua;" .. package.path
local tk = require "towerkit"
local C = require "common"
local dist = tk.distributed
local core = tk.core

local B, STEPS = 16, 8

-- A model fit for STEPS steps with the allreduce option; its flat weights and the
-- exchange's counters.
local function run(allreduce, model_opts)
  local data = C.data(STEPS * dist.size() * B)
  if model_opts and model_opts.negatives then model_opts.negatives.corpus = data:unique_by("item_id") end
  local m = C.model(7, model_opts)
  dist.barrier()
  dist.reset_stats()
  m:fit(data, { batch_size = B, epochs = 1, verbose = false, seed = 5, allreduce = allreduce })
  return C.flat_weights(m), dist.stats()
end

describe("the dense gradient exchange under mpirun -np 2", function()
  it("one bucket, small buckets and overlapped buckets give bitwise the same weights on every rank", function()
    local one, s1 = run { bucket_bytes = 0, overlap = false }
    assert.equals(STEPS, s1.buckets) -- one bucket a step
    assert.equals(0, s1.buckets_overlapped)
    local many, s2 = run { bucket_bytes = 256, overlap = false }
    assert.is_true(s2.buckets >= 4 * STEPS, "several buckets a step")
    assert.equals(0, s2.buckets_overlapped)
    local over, s3 = run { bucket_bytes = 256, overlap = true }
    assert.equals(s2.buckets, s3.buckets)
    -- the first step lays its buckets out after backward (the ranks have agreed on no
    -- layout yet); every later one starts all of them during backward
    assert.equals(s3.buckets * (STEPS - 1) / STEPS, s3.buckets_overlapped)
    local default = run()
    C.same_bits(one, many, "one bucket vs buckets of 256 bytes")
    C.same_bits(one, over, "one bucket vs overlapped buckets")
    C.same_bits(one, default, "one bucket vs the defaults")
    C.ranks_agree(one)
    C.ranks_agree(over)
  end)

  it("also with sampled negatives and streaming logQ (the item tower runs twice)", function()
    local function opts() return { logq = "streaming", negatives = { num = 8 } } end
    local one = run({ bucket_bytes = 0, overlap = false }, opts())
    local over, s = run({ bucket_bytes = 128, overlap = true }, opts())
    assert.is_true(s.buckets_overlapped > 0)
    C.same_bits(one, over, "one bucket vs overlapped buckets")
    C.ranks_agree(over)
  end)

  it("a step whose dense gradients the layout did not foresee reduces the others after backward", function()
    -- core level: step 1 trains the query tower alone, step 2 both towers, so step 2's
    -- item tower gradients are not in the layout agreed in step 1; the gradients must
    -- equal those of the one-bucket exchange
    local function grads(overlap)
      local m = C.model(3)
      local data = C.data(2 * B, 9)
      local batch = data:rows(core.arange(data:size()), dist.rank() * B, B)
      local ctx, block = m.ctx, m.block
      local out = {}
      for step = 1, 2 do
        ctx:reset()
        ctx:train(true)
        local loss = ctx:run(function()
          local o = block:forward(batch, ctx)
          local l = (o.query * o.query):sum()
          if step == 2 then l = l + (o.item * o.query):sum() end
          return l
        end)
        core.dist_grads_begin(ctx, block, overlap and 64 or 0, overlap)
        loss:backward()
        core.dist_sync_grads(ctx, block)
        for _, p in ipairs(block:named_parameters()) do
          local g = ctx:grad(p[2])
          if g and p[2]:dim() == 2 and p[2]:shape()[1] < 1000 then out[#out + 1] = g:totable() end
        end
      end
      return out
    end
    local want, got = grads(false), grads(true)
    assert.is_true(#want > 4)
    assert.equals(#want, #got)
    for i = 1, #want do assert.same(want[i], got[i]) end
  end)

  it("refuses a grads_begin while the last step's exchange is unfinished (no sync_grads after its backward)", function()
    -- step 1 agrees on a layout; in step 2 the buckets start during backward, and
    -- neither rank's can finish before it checks: rank 0 checks before barrier A, and
    -- its all-to-alls wait for rank 1, which runs its backward only after A; rank 1's
    -- all-gathers wait for rank 0, which does not move its exchange on before barrier B,
    -- after rank 1's check. sync_grads then finishes it (the refused call changed nothing)
    local m = C.model(3)
    local data = C.data(2 * B, 9)
    local batch = data:rows(core.arange(data:size()), dist.rank() * B, B)
    local ctx, block = m.ctx, m.block
    dist.reset_stats()
    for step = 1, 2 do
      ctx:reset()
      ctx:train(true)
      local loss = ctx:run(function()
        local o = block:forward(batch, ctx)
        return (o.query * o.item):sum()
      end)
      core.dist_grads_begin(ctx, block, 64, true)
      if step == 2 and dist.rank() == 1 then dist.barrier() end -- A
      loss:backward()
      if step == 2 then
        local ok, err = pcall(core.dist_grads_begin, ctx, block, 64, true)
        assert.is_false(ok)
        assert.truthy(tostring(err):find("the gradient exchange of an earlier step did not finish (tk_dist_sync_grads "
          .. "did not run after its backward)", 1, true), err)
        if dist.rank() == 0 then dist.barrier() end -- A
        dist.barrier() -- B
      end
      core.dist_sync_grads(ctx, block)
    end
    assert.is_true(dist.stats().buckets_overlapped > 0) -- step 2's buckets started during backward
  end)

  it("refuses bad options with a message naming them", function()
    local m = C.model(1)
    local data = C.data(4 * B)
    local function fit(a) return m:fit(data, { batch_size = B, verbose = false, allreduce = a }) end
    local ok, err = pcall(fit, { bucket_bytes = -1 })
    assert.is_false(ok)
    assert.matches("allreduce.bucket_bytes must be a non%-negative integer", err)
    ok, err = pcall(fit, { bucket_bytes = 1.5 })
    assert.matches("allreduce.bucket_bytes must be a non%-negative integer .* got 1.5", err)
    ok, err = pcall(fit, { overlap = "yes" })
    assert.matches("allreduce.overlap must be true or false, got yes", err)
    ok, err = pcall(fit, { buckets = 3 })
    assert.matches("fit: allreduce: unknown option 'buckets'; known: bucket_bytes, overlap", err)
    ok, err = pcall(fit, 1024)
    assert.matches("fit: allreduce must be a table", err)
    ok, err = pcall(core.dist_grads_begin, m.ctx, m.block, -8)
    assert.matches("bucket_bytes must be >= 0", err)
  end)
end)
