--- help entries: the methods of Dataset (lua/towerkit/data/dataset.lua).
local D = require("towerkit.doc").define

local function M(name, sig, summary, merlin, example, options)
  D("Dataset:" .. name) { "data:" .. sig, summary, merlin = merlin, example = example, options = options }
end
M("size", "size() -> n", "The number of rows.", "len(dataset)", "data:size()")
M("column_names", "column_names() -> {name, ...}", "The column names, sorted (a list column once, without\n__values/__offsets).",
  "Dataset.columns", "data:column_names()")
M("has_column", "has_column(name) -> boolean", "Whether the dataset has the column.", nil, "data:has_column(\"item_id\")")
M("column", "column(name) -> Tensor", "The column's tensor (an error naming the known columns when absent).", "ddf[name]",
  "data:column(\"item_id\")")
M("rows", "rows(idx [, first, count]) -> batch", "The rows at 0-based indices idx (an int64 tensor), as a table of\ntensors.",
  "ddf.iloc[idx]", "data:rows(tk.tensor({ 0, 1 }, \"int64\"))")
M("select", "select(idx) -> Dataset", "A new dataset of the rows at idx.", "ddf.iloc[idx]",
  "data:select(tk.tensor({ 0, 1 }, \"int64\"))")
M("slice", "slice(first, count) -> Dataset", "A new dataset of the rows [first, first + count) (0-based), in order.",
  "ddf.iloc[first:first + count]", "local head = data:slice(0, 100)")
M("batches", "batches([opts]) -> iterator of (batch, i)", "Iterates batches (tables of tensors).", "Loader",
  "for batch, i in data:batches { batch_size = 256 } do print(i) end",
  { { "batch_size", "1024", "rows per batch" }, { "shuffle", "true", "a shuffled order" },
    { "seed", "0", "the order's seed (pass the epoch for a new order each epoch)" },
    { "drop_last", "false", "skip a last partial batch" } })
M("num_batches", "num_batches(batch_size [, drop_last = false]) -> n", "How many batches batches() gives.", "len(loader)",
  "data:num_batches(256)")
M("split", "split(fraction [, seed]) -> a, b", "A shuffled fraction of the rows, then the rest.", "Dataset.to_ddf().random_split",
  "local train, valid = data:split(0.8, 1)")
M("unique_by", "unique_by(name) -> Dataset", "The first row of each distinct value of an int64 column, in order of\nfirst appearance (e.g. the item corpus).",
  "unique rows by id", "local items = data:unique_by(\"item_id\")")
