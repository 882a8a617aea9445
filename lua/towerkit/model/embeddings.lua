--- Embeddings: what TwoTowerModel:query_embeddings and :item_embeddings return, a row of
-- ids (int64 [N]) and their embeddings ([N, d]), with :save to write them.
local core = require "towerkit.core"
local argerror = require("towerkit.util").argerror

local embeddings = {}

local Embeddings = {}
Embeddings.__index = Embeddings

--- new(ids, embeddings) -> {ids =, embeddings =} with the methods below.
function embeddings.new(ids, emb)
  return setmetatable({ ids = ids, embeddings = emb }, Embeddings)
end

--- Writes the embeddings: format "csv" (id,e_0,...) or "safetensors" (tensors "ids"
-- and "embeddings"); the format follows the file extension unless given.
function Embeddings:save(path, format)
  format = format or (path:match("%.csv$") and "csv") or "safetensors"
  if format == "csv" then
    core.csv_write_embeddings(path, self.ids, self.embeddings)
  elseif format == "safetensors" then
    core.safetensors_write(path, { "ids", "embeddings" }, { self.ids, self.embeddings })
  else
    argerror("save: unknown format '%s'; known: csv, safetensors", tostring(format))
  end
end

return embeddings
