--- Embedding options and input blocks built from a schema (Merlin's EmbeddingOptions,
-- InputBlock). An input block is one core `embeddings` block: a table per categorical
-- feature (shared by features whose domain has the same name) and the continuous
-- features passed through as [B, 1]. Its output is tabular; the first dense layer after
-- it concatenates the entries in sorted key order.
return function(tk)
  local core = tk.core
  local Tags = tk.Tags

  local EmbeddingOptions = {}
  EmbeddingOptions.__index = EmbeddingOptions

  local DEFAULTS = {
    embedding_dim_default = 64,
    infer_embedding_sizes = false,
    infer_embedding_sizes_multiplier = 2.0,
    infer_embeddings_ensure_dim_multiple_of_8 = false,
    embeddings_l2_reg = 0.0,
    combiner = "mean",
  }
  local FIELDS = {
    embedding_dims = "table", embedding_dim_default = "number", infer_embedding_sizes = "boolean",
    infer_embedding_sizes_multiplier = "number", infer_embeddings_ensure_dim_multiple_of_8 = "boolean",
    embeddings_initializers = "any", embeddings_l2_reg = "number", combiner = "string",
  }
  local COMBINERS = { sum = true, mean = true, sqrtn = true }

  local function fail(msg, ...) error(msg:format(...), 3) end

  --- EmbeddingOptions{embedding_dims =, embedding_dim_default = 64,
  -- infer_embedding_sizes = false, infer_embedding_sizes_multiplier = 2.0,
  -- infer_embeddings_ensure_dim_multiple_of_8 = false, embeddings_initializers =,
  -- embeddings_l2_reg = 0.0, combiner = "mean"}
  function tk.EmbeddingOptions(opts)
    if opts ~= nil and type(opts) ~= "table" then fail("EmbeddingOptions: options must be a table") end
    opts = opts or {}
    local self = setmetatable({}, EmbeddingOptions)
    require("towerkit.util").check_options(opts, FIELDS, "EmbeddingOptions")
    for k, v in pairs(opts) do
      local want = FIELDS[k]
      if want ~= "any" and type(v) ~= want then
        fail("EmbeddingOptions: '%s' must be a %s, got %s", k, want, type(v))
      end
      self[k] = v
    end
    for k, v in pairs(DEFAULTS) do
      if self[k] == nil then self[k] = v end
    end
    if self.embedding_dim_default < 1 or self.embedding_dim_default % 1 ~= 0 then
      fail("EmbeddingOptions: 'embedding_dim_default' must be a positive integer, got %s", self.embedding_dim_default)
    end
    if not (self.infer_embedding_sizes_multiplier > 0) then
      fail("EmbeddingOptions: 'infer_embedding_sizes_multiplier' must be positive")
    end
    if self.embeddings_l2_reg < 0 then fail("EmbeddingOptions: 'embeddings_l2_reg' must not be negative") end
    if not COMBINERS[self.combiner] then
      fail("EmbeddingOptions: unknown combiner '%s'; known: mean, sqrtn, sum", self.combiner)
    end
    for name, dim in pairs(self.embedding_dims or {}) do
      if type(name) ~= "string" or type(dim) ~= "number" or dim < 1 or dim % 1 ~= 0 then
        fail("EmbeddingOptions: embedding_dims['%s'] must be a positive integer", tostring(name))
      end
    end
    return self
  end

  function EmbeddingOptions.is(x) return getmetatable(x) == EmbeddingOptions end

  --- Merlin's heuristic: int(ceil(cardinality ^ 0.25 * multiplier)), rounded up to a
  -- multiple of 8 when asked.
  function tk.infer_embedding_dim(cardinality, multiplier, multiple_of_8)
    local dim = math.ceil(cardinality ^ 0.25 * (multiplier or 2.0))
    if multiple_of_8 then dim = math.ceil(dim / 8) * 8 end
    return dim
  end

  --- The dimension of the table of a column with a given cardinality: an explicit
  -- embedding_dims entry (by feature name, then table name) wins over an inferred one,
  -- which wins over the default.
  function EmbeddingOptions:dim_for(name, cardinality, table_name)
    local dims = self.embedding_dims or {}
    local dim = dims[name] or (table_name and dims[table_name])
    if dim then return dim end
    if self.infer_embedding_sizes then
      return tk.infer_embedding_dim(cardinality, self.infer_embedding_sizes_multiplier,
        self.infer_embeddings_ensure_dim_multiple_of_8)
    end
    return self.embedding_dim_default
  end

  --- The initializer of a table: per feature (by feature or table name) or one for all.
  -- Default: truncated normal with stddev 0.05.
  function EmbeddingOptions:initializer_for(name, table_name)
    local inits = self.embeddings_initializers
    if inits == nil then return { kind = "truncated_normal", a = 0.05 } end
    if type(inits) == "string" or type(inits) == "function" then return inits end
    if type(inits) == "table" and inits.kind then return inits end
    if type(inits) == "table" then
      return inits[name] or (table_name and inits[table_name]) or { kind = "truncated_normal", a = 0.05 }
    end
    error(("EmbeddingOptions: embeddings_initializers must be a name, a function or a table, got %s"):format(type(inits)), 3)
  end

  function EmbeddingOptions:to_table()
    local t = {}
    for k in pairs(FIELDS) do
      local v = self[k]
      if type(v) ~= "function" then t[k] = v end
    end
    if type(t.embeddings_initializers) == "table" then
      local clean = {}
      for k, v in pairs(t.embeddings_initializers) do
        if type(v) ~= "function" then clean[k] = v end
      end
      t.embeddings_initializers = clean
    end
    return t
  end

  tk.EmbeddingOptionsClass = EmbeddingOptions

  --- Fills a parameter from a Lua initializer function fn(shape, seed), which returns a
  -- tensor or a nested table of that shape.
  function tk.apply_initializer(param, fn, seed, what)
    local value = fn(param:shape(), seed)
    if type(value) == "table" and not core.is_tensor(value) then value = tk.tensor(value) end
    if not core.is_tensor(value) then
      error(("%s: the initializer function returned %s, expected a tensor"):format(what, type(value)), 3)
    end
    local ok, err = pcall(param.copy_from, param, value)
    if not ok then error(("%s: the initializer function returned the wrong shape (%s)"):format(what, err), 3) end
  end

  local function check_schema(schema, what)
    if not tk.Schema.is_schema(schema) then
      error(("%s: a Schema expected, got %s"):format(what, type(schema)), 3)
    end
  end

  --- InputBlock(schema, {embedding_options =, name = "embeddings"}): target columns are
  -- dropped; each continuous feature becomes [B, 1]; each categorical feature is
  -- embedded (multi-hot lists combined with the options' combiner).
  function tk.InputBlock(schema, opts)
    check_schema(schema, "InputBlock")
    if opts ~= nil and type(opts) ~= "table" then error("InputBlock: options must be a table", 2) end
    opts = opts or {}
    local eo = opts.embedding_options or tk.EmbeddingOptions()
    if not EmbeddingOptions.is(eo) then eo = tk.EmbeddingOptions(eo) end
    local features = schema:remove_by_tag(Tags.TARGET)

    -- tables: one per domain name, sized for the largest cardinality that shares it
    local tables, order = {}, {}
    local categorical, continuous = {}, {}
    for _, col in ipairs(features) do
      if col:has_tag(Tags.CATEGORICAL) then
        local card = col:cardinality()
        if not card then
          error(("InputBlock: categorical feature '%s' has no int_domain (its cardinality is unknown)"):format(col.name), 2)
        end
        local tname = (col.int_domain and col.int_domain.name) or col.name
        local t = tables[tname]
        if not t then
          t = { name = tname, cardinality = card, features = {} }
          tables[tname] = t
          order[#order + 1] = tname
        elseif card > t.cardinality then
          t.cardinality = card
        end
        t.features[#t.features + 1] = col
        categorical[#categorical + 1] = col
      elseif col:has_tag(Tags.CONTINUOUS) then
        continuous[#continuous + 1] = col
      end
    end
    if #categorical == 0 and #continuous == 0 then
      error("InputBlock: the schema has no categorical or continuous feature (columns: "
        .. table.concat(features:column_names(), ", ") .. ")", 2)
    end

    local emb = core.embeddings(opts.name or "embeddings", eo.embeddings_l2_reg)
    local function_inits = {}
    for _, tname in ipairs(order) do
      local t = tables[tname]
      local dim
      for _, col in ipairs(t.features) do
        local d = eo:dim_for(col.name, t.cardinality, tname)
        if dim and d ~= dim then
          error(("InputBlock: features sharing table '%s' ask for dims %d and %d"):format(tname, dim, d), 2)
        end
        dim = d
      end
      local init = eo:initializer_for(t.features[1].name, tname)
      local seed = tk._take_seed()
      for _, col in ipairs(t.features) do
        emb:add_feature(col.name, {
          table = tname, cardinality = t.cardinality, dim = dim,
          combiner = col.is_list and eo.combiner or "sum",
          initializer = type(init) ~= "function" and init or nil,
          seed = seed,
        })
      end
      if type(init) == "function" then function_inits[tname] = { init, seed } end
    end
    for tname, fi in pairs(function_inits) do
      tk.apply_initializer(emb:param(tname), fi[1], fi[2], "embeddings_initializers['" .. tname .. "']")
    end
    for _, col in ipairs(continuous) do emb:add_continuous(col.name) end
    tk.set_meta(emb, { class = "InputBlock", schema = features:to_table() })
    return emb
  end
end
