-- Checkpoints under `mpirun -np 2`: one checkpoint written by rank 0, loaded on every
-- rank, and training resumed from it with the ranks identical. (The other direction,
-- np 2 saves and one process loads, is in tests/spec/distributed_spec.lua.)
package.path = "tests/mpi/?.lua;" .. package.path
local tk = require "towerkit"
local C = require "common"
local dist = tk.distributed

local B = 16

local function rm(dir)
  dist.on_root(function() os.execute(("rm -rf '%s'"):format(dir)) end)
end

describe("checkpoints under mpirun -np 2", function()
  it("save writes one checkpoint from rank 0; every rank then loads the trained weights", function()
    local dir = C.shared_dir("ckpt")
    local m = C.model(3)
    m:fit(C.data(10 * 2 * B), { batch_size = B, epochs = 1, verbose = false, seed = 1 })
    m:save(dir)
    -- the other ranks waited for rank 0: the files are there when save returns
    local f = io.open(dir .. "/weights.safetensors", "rb")
    assert.truthy(f, "rank " .. dist.rank() .. ": no weights after save")
    f:close()
    -- one writer: nothing but the checkpoint in its parent (no temporary directories left)
    local p = io.popen(("ls -a /tmp | grep -c '^%s'"):format(dir:match("[^/]*$")))
    assert.equals(1, tonumber(p:read("*a")))
    p:close()
    local loaded = tk.load(dir)
    C.same_bits(C.flat_weights(m), C.flat_weights(loaded), "loaded vs trained")
    rm(dir)
  end)

  it("a failed write on rank 0 is an error on every rank", function()
    local m = C.model(3)
    local ok, err = pcall(m.save, m, "/proc/towerkit-cannot-write-here")
    assert.is_false(ok)
    if dist.rank() == 1 then assert.truthy(tostring(err):find("rank 0 failed", 1, true), err) end
  end)

  it("training resumes from a checkpoint on two ranks: ranks identical, as one process with batch 2B", function()
    local dir = C.shared_dir("ckpt")
    local m = C.model(9)
    m:fit(C.data(6 * 2 * B, 5), { batch_size = B, epochs = 1, verbose = false, seed = 2 })
    m:save(dir)
    local before = C.flat_weights(m)
    local data = C.data(5 * 2 * B, 8)
    local function resume(distributed, bs)
      local r = tk.load(dir)
      r:compile { optimizer = tk.optim.Adam { learning_rate = 1e-2 } } -- fresh optimizer state
      local h = r:fit(data, { batch_size = bs, epochs = 1, verbose = false, seed = 3, distributed = distributed })
      return r, h
    end
    local r2, h2 = resume(true, B)
    local r1 = resume(false, 2 * B)
    assert.equals(5, #h2.steps)
    local w2 = C.flat_weights(r2)
    C.ranks_agree(w2)
    local moved, diff = C.max_diff(w2, before), C.max_diff(w2, C.flat_weights(r1))
    assert.is_true(moved > 1e-3, "5 steps should move the weights") -- it trained
    assert.is_true(diff <= 1e-5, ("np 2 vs one process: %g"):format(diff))
    rm(dir)
  end)
end)
