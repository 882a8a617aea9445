--- Data (`tk.data`): datasets of named columns, batching, CSV files and synthetic
-- interactions. This module only assembles the table from the modules below, one class
-- or topic each:
--   towerkit.data.dataset    Dataset (columns, rows, batches, split, unique_by)
--   towerkit.data.csv        read_csv, csv_chunks (the CSV specs of a schema)
--   towerkit.data.random     Random (the generator's random numbers), zipf_sampler
--   towerkit.data.synthetic  synthetic (interactions with a planted structure)
local util = require "towerkit.util"
local dataset = require "towerkit.data.dataset"
local csv = require "towerkit.data.csv"
local random = require "towerkit.data.random"
local synthetic = require "towerkit.data.synthetic"

return {
  Dataset = dataset.Dataset,
  is_dataset = dataset.is_dataset,
  methods = dataset.methods, -- the method table of Dataset (help, completion)
  read_csv = csv.read_csv,
  csv_chunks = csv.csv_chunks,
  Random = random.Random,
  zipf_sampler = random.zipf_sampler,
  synthetic = synthetic.synthetic,
  range = util.range,
}
