--- Models (`tk.TwoTowerModel`, `tk.load`, `tk.popularity_baseline`). This module only
-- assembles the table from the modules below, one class or topic each:
--   towerkit.model.two_tower_model  TwoTowerModel (compile, train_step, fit, evaluate,
--                                   embeddings export, to_top_k_encoder, save) and load
--   towerkit.model.negatives        the sampled negatives of the `negatives` option
--   towerkit.model.baseline         the popularity baseline and the exclude_seen lists
--                                   it shares with evaluate
--   towerkit.model.embeddings       Embeddings, the export's result (:save)
--   towerkit.model.encoder          Encoder, to_top_k_encoder's result (:query)
local two_tower_model = require "towerkit.model.two_tower_model"
local baseline = require "towerkit.model.baseline"

return {
  TwoTowerModel = two_tower_model.TwoTowerModel,
  is_model = two_tower_model.is_model,
  load = two_tower_model.load,
  popularity_baseline = baseline.popularity_baseline,
  Model = two_tower_model.Model, -- the method table of TwoTowerModel (help, completion)
}
