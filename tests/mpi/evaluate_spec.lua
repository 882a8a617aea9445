-- evaluate under `mpirun -np 2`: the rows split over the ranks give the figures of one
-- process.
package.path = "tests/mpi/?.lua;" .. package.path
local tk = require "towerkit"
local C = require "common"

describe("evaluate under mpirun -np 2", function()
  it("equals the single-process figures, with and without exclude_seen", function()
    local data = C.data(1203)
    local train, test = data:split(0.8, 1)
    local items = data:unique_by("item_id")
    local m = C.model(4)
    m:fit(train, { batch_size = 32, epochs = 1, verbose = false })
    for _, ex in ipairs { false, true } do
      local o = { item_corpus = items, metrics = { tk.metrics.RecallAt(5), tk.metrics.NDCGAt(10) },
        exclude_seen = ex and train or nil }
      local shared = m:evaluate(test, o)
      o.distributed = false
      local alone = m:evaluate(test, o)
      for name, v in pairs(alone) do
        -- the same per-row scores summed in two groupings: equal to double rounding
        assert.is_true(math.abs(shared[name] - v) <= 1e-12, ("%s: %.17g vs %.17g"):format(name, shared[name], v))
      end
      -- every rank has the same figures, bit for bit (one rank-ordered sum)
      local r = tk.distributed.allgather(tk.tensor({ shared.recall_at_5 }))
      assert.equals(r:totable()[1], r:totable()[2])
    end
  end)
end)
