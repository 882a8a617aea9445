--- help entries: the methods of History (lua/towerkit/history.lua, lua/towerkit/plot.lua).
local D = require("towerkit.doc").define

D "History:add_step" { "history:add_step({step =, epoch =, loss =})", "Appends a step's log (fit does).",
  merlin = "Callback.on_train_batch_end", example = "h:add_step { step = 1, epoch = 1, loss = 2.3 }" }
D "History:add_epoch" { "history:add_epoch(logs)", "Appends an epoch's logs (fit does).", merlin = "History.on_epoch_end",
  example = "h:add_epoch { epoch = 1, loss = 2.1 }" }
D "History:format_logs" { "History.format_logs(logs) -> text", "\"epoch 1  loss 2.1000  ...\": the line fit prints.",
  example = "require(\"towerkit.history\").format_logs { epoch = 1, loss = 2 }" }
D "History:to_csv" { "history:to_csv(path)", "Writes the per-epoch logs as CSV (one row per epoch, columns sorted).",
  merlin = "tf.keras.callbacks.CSVLogger", example = "h:to_csv(\"history.csv\")" }
D "History:to_json" { "history:to_json(path)", "Writes {epochs = [...], steps = [...]} as JSON.",
  merlin = "History.history", example = "h:to_json(\"history.json\")" }
