--- help entries: the methods of TwoTowerModel (lua/towerkit/model/two_tower_model.lua).
local D = require("towerkit.doc").define

D "TwoTowerModel:compile" { "model:compile([opts]) -> model", "Sets the optimizer and metrics and resets the step count.",
  options = {
    { "optimizer", "tk.optim.Adam { learning_rate = 1e-3 }", "a tk.optim optimizer" },
    { "metrics", "{ RecallAt(10), NDCGAt(10) }", "tk.metrics for evaluate and validation" },
    { "clip_grad_norm", "nil", "clip the global gradient norm at this value" },
    { "schedule", "nil", "fn(step, base_lr) -> lr (tk.optim.schedules.*)" },
    { "embedding_sharding", "\"replicated\" (\"row\" if built so)", "\"row\": under mpirun each rank holds 1/N of every table's rows" },
  }, merlin = "Model.compile", example = "m:compile { optimizer = tk.optim.Adam { learning_rate = 1e-2 } }" }
D "TwoTowerModel:fit" { "model:fit(data [, opts]) -> History",
  "Trains on a Dataset with in-batch negatives. On a terminal a progress bar is redrawn in place;\n" ..
  "otherwise a line every 10 s and one per epoch. Ends with a one-line summary of the run. A NaN or\n" ..
  "infinite loss stops training with an error naming the step.",
  options = {
    { "batch_size", "1024", "rows per step (>= 2: the other rows are the negatives)" },
    { "epochs", "1", "passes over the data" },
    { "shuffle", "true", "a new order each epoch" },
    { "seed", "0", "shuffle and sampling seed" },
    { "validation_data", "nil", "a Dataset evaluated after each epoch (val_* logs)" },
    { "validation_opts", "{}", "evaluate's options for it (item_corpus =, k =, ...)" },
    { "callbacks", "{}", "tk.callbacks.* (on_epoch_end, on_train_end)" },
    { "verbose", "true", "print progress" },
    { "log", "print", "where progress lines go" },
    { "drop_last", "false", "skip a last partial batch" },
    { "distributed", "true", "under mpirun: train data-parallel on every rank (false: this process alone)" },
    { "allreduce", "{ bucket_bytes = 1048576, overlap = true }", "under mpirun: dense gradients summed over the\n" ..
      "ranks in buckets of at most bucket_bytes (0: one), reduced during backward with overlap; the\n" ..
      "same bits either way (docs/distributed.md)" },
  }, merlin = "Model.fit",
  example = "local h = m:fit(data, { batch_size = 256, epochs = 3, validation_data = valid,\n" ..
  "  validation_opts = { item_corpus = items } })" }
D "TwoTowerModel:evaluate" { "model:evaluate(data, opts) -> {metric_name = value}",
  "Full-catalogue retrieval metrics: each row of data is a query whose relevant item is its item id;\n" ..
  "the corpus is de-duplicated by item id and must hold every positive. k is capped at the\ncatalogue's size.",
  options = {
    { "item_corpus", "required", "a Dataset of items with their features" },
    { "k", "the metrics' largest k", "ranking depth" },
    { "exclude_seen", "nil", "a Dataset of interactions, or true (the last fit's data): skip each user's\nitems in it, except the row's own positive" },
    { "batch_size", "1024", "rows per batch of either tower" },
    { "metrics", "compile's metrics", "tk.metrics list" },
    { "distributed", "true", "under mpirun the ranks embed the catalogue together and each ranks a share\nof the rows (a collective); false: this process alone" },
  }, merlin = "Model.evaluate (with a TopKEncoder)",
  example = "m:evaluate(valid, { item_corpus = items })" }
D "TwoTowerModel:popularity_baseline" { "model:popularity_baseline(train, data [, {metrics =, k =, exclude_seen =}]) -> {metric = value}",
  "The same metrics as evaluate for a ranking of items by their count in train.",
  merlin = "a popularity baseline", example = "m:popularity_baseline(train, valid)" }
D "TwoTowerModel:train_step" { "model:train_step(batch) -> loss", "One optimizer step on a batch (a table of tensors).",
  merlin = "Model.train_step", example = "for batch in data:batches { batch_size = 64 } do m:train_step(batch) end" }
D "TwoTowerModel:query_embeddings" { "model:query_embeddings(data [, {batch_size = 1024, distributed = true, shard = false}]) -> {ids =, embeddings =}",
  "The query tower's output per row (ids: the query id column when the schema has one, else row\n" ..
  "numbers). Under mpirun a collective, each rank embedding its share of the rows, as item_embeddings.",
  merlin = "Model.query_embeddings", example = "m:query_embeddings(data).embeddings:shape()" }
D "TwoTowerModel:item_embeddings" { "model:item_embeddings(items [, {batch_size = 1024, distributed = true, shard = false}]) -> {ids =, embeddings =}",
  "The item tower's output, one row per distinct item id (first occurrence); :save(path) writes it.\n" ..
  "Under mpirun every rank must call it: each embeds its shard of the items (cut at multiples of\n" ..
  "4096 rows, or of batch_size when it does not divide 4096) and every rank gets the whole result,\n" ..
  "one process's bits. shard = true: this rank's rows only, with offset (its first row) and size\n" ..
  "(all rows), for tk.distributed.ShardedIndex. distributed = false: this process alone.",
  merlin = "Model.candidate_embeddings", example = "m:item_embeddings(items):save(\"items.safetensors\")" }
D "TwoTowerModel:to_top_k_encoder" { "model:to_top_k_encoder(items [, {k = 10, batch_size =, distributed = true}]) -> encoder",
  "An exact top-k retriever: encoder:query(batch [, {k =}]) returns item ids (int64 [B, k]) and\n" ..
  "scores, best first. Under mpirun the ranks embed the catalogue together (item_embeddings).",
  merlin = "Model.to_top_k_encoder", example = "local enc = m:to_top_k_encoder(items, { k = 5 })\nenc:query(batch)" }
D "TwoTowerModel:gather_tables" { "model:gather_tables()",
  "With row-sharded tables (compile{embedding_sharding = \"row\"}): the whole tables back into the\n" ..
  "model on every rank (a collective), so that named_parameters and the like read them; the next\n" ..
  "training step shards them again. Nothing to do otherwise.", merlin = "DistributedModelParallel state_dict",
  example = "m:gather_tables()\nprint(#m.block:named_parameters())" }
D "TwoTowerModel:save" { "model:save(dir [, {distributed = true}])",
  "Writes config.json, schema.json, model.json and weights.safetensors\n" ..
  "atomically (tk.load reads them back). Under mpirun every rank calls it and rank 0 writes one\n" ..
  "checkpoint while the others wait; distributed = false writes from this process alone. The\n" ..
  "optimizer's state is not saved: compile again to train further.", merlin = "Model.save", example = "m:save(\"model/\")" }
