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
D "History:summary" { "history:summary() -> text",
  "One line about the run: epochs, steps, seconds, the epoch-mean loss first -> last, and the last\n" ..
  "epoch's validation metrics. fit prints it at its end.", merlin = "(Keras prints per-epoch lines only)",
  example = "print(h:summary())" }
D "History:plot" { "history:plot(path) -> path",
  "Writes a self-contained SVG: the training loss per step and per epoch against the step, and each\n" ..
  "validation metric (val_*) against the epoch, axes labelled. No dependency.",
  merlin = "matplotlib on History.history", example = "local h = m:fit(train, { epochs = 5, validation_data = valid,\n" ..
  "  validation_opts = { item_corpus = items } })\nh:plot(\"history.svg\")" }
D "tk.plot.history" { "tk.plot.history(history, path) -> path", "The same as history:plot(path).",
  example = "tk.plot.history(h, \"history.svg\")" }
D "tk.plot.recall_at_k" { "tk.plot.recall_at_k(model, data [, opts]) -> path, results",
  "Writes an SVG of recall@k and NDCG@k against k for the model (evaluate) and the popularity\n" ..
  "baseline (items ranked by their count in train, the same exclude_seen). results =\n" ..
  "{model = {recall_at_k =, ndcg_at_k =, ...}, popularity = {...}}.",
  options = {
    { "ks", "{1, 5, 10, 20, 50, 100}", "the cut-offs (each capped at the catalogue)" },
    { "item_corpus", "required", "a Dataset of items (evaluate's item_corpus)" },
    { "train", "the model's last fit data", "the popularity baseline's counts" },
    { "exclude_seen", "evaluate's default", "passed to evaluate and the baseline" },
    { "batch_size", "4096", "query rows per batch" },
    { "path", "\"recall_at_k.svg\"", "where the SVG goes" },
  }, merlin = "mm.TopKEncoder + RecallAt/NDCGAt at several k",
  example = "tk.plot.recall_at_k(m, valid, { item_corpus = items, ks = { 1, 10, 50 } })" }
