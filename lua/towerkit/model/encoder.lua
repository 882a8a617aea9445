--- Encoder: what TwoTowerModel:to_top_k_encoder returns, the item embeddings of a
-- catalogue beside the model's query tower; encoder:query(batch [, {k =}]) gives each
-- row's top k items, exact.
local core = require "towerkit.core"
local util = require "towerkit.util"

local encoder = {}

local Encoder = {}
Encoder.__index = Encoder

--- new(model, k, item_ids, items) -> an encoder over the items (embeddings [N, d]) and
-- their ids (int64 [N]), k results a query by default.
function encoder.new(model, k, item_ids, items)
  return setmetatable({ model = model, k = k, item_ids = item_ids, items = items }, Encoder)
end

--- query(batch [, {k =}]) -> item ids (int64 [B, k]) and scores ([B, k]), best first.
-- With a model whose tables are row-sharded over MPI ranks, a collective: the tables are
-- gathered for it (every rank calls it with its batch).
local function query(self, batch, opts)
  opts = util.known_options(opts, { k = true }, "query")
  local k = opts.k or self.k
  local ctx = core.Context(3)
  ctx:grad_enabled(false)
  local q = self.model.block:query_block():forward(batch, ctx)
  if self.model.block:post() then q = self.model.block:post():forward(q, ctx) end
  local idx, scores = core.topk(q, self.items, k)
  return core.map_ids(idx, self.item_ids), scores
end

function Encoder:query(batch, opts)
  return require("towerkit.distributed").with_whole_tables(self.model, query, self, batch, opts)
end

return encoder
