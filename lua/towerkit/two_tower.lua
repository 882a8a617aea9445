--- TwoTowerBlock (Merlin's merlin.models.tf.TwoTowerBlock): a ParallelBlock of a query
-- tower and an item tower, each an input block over the features of its tag followed by
-- the tower, with an optional post block applied to both outputs.
return function(tk)
  local core = tk.core
  local Tags = tk.Tags
  local Block = core.Block

  local KNOWN = {
    item_tower = true, query_tower_tag = true, item_tower_tag = true, embedding_options = true,
    post = true, name = true,
  }

  local function tower_with_inputs(name, schema, tag, tower, eo)
    local selected = schema:select_by_tag(tag)
    if #selected == 0 then
      error(("TwoTower: no feature of the schema has the %s tag '%s' (columns: %s)"):format(
        name, tostring(tag), table.concat(schema:column_names(), ", ")), 3)
    end
    local inputs = tk.InputBlock(selected, { embedding_options = eo })
    return tk.SequentialBlock({ inputs, tower }, { name = name })
  end

  --- TwoTowerBlock(schema, query_tower, {item_tower =, query_tower_tag = Tags.USER,
  -- item_tower_tag = Tags.ITEM, embedding_options =, post =}). Without item_tower the
  -- item tower is a copy of the query tower with its own weights. Called on a batch it
  -- returns {query = [B, d], item = [B, d]}.
  function tk.TwoTowerBlock(schema, query_tower, opts)
    if schema == nil then error("The schema is required by TwoTower", 2) end
    if not tk.Schema.is_schema(schema) then
      error(("TwoTower: schema must be a Schema, got %s"):format(type(schema)), 2)
    end
    if query_tower == nil then error("The query_tower is required by TwoTower", 2) end
    query_tower = tk.as_block(query_tower, "TwoTower: query_tower")
    if opts ~= nil and type(opts) ~= "table" then error("TwoTower: options must be a table", 2) end
    opts = opts or {}
    require("towerkit.util").check_options(opts, KNOWN, "TwoTower")
    local qtag = opts.query_tower_tag or Tags.USER
    local itag = opts.item_tower_tag or Tags.ITEM
    for _, t in ipairs { qtag, itag } do
      if type(t) ~= "string" or t == "" then error("TwoTower: tags must be non-empty strings", 2) end
    end
    local item_tower = opts.item_tower and tk.as_block(opts.item_tower, "TwoTower: item_tower")
      or query_tower:copy()
    local eo = opts.embedding_options
    if eo ~= nil and not tk.EmbeddingOptionsClass.is(eo) then eo = tk.EmbeddingOptions(eo) end
    local query = tower_with_inputs("query", schema, qtag, query_tower, eo)
    local item = tower_with_inputs("item", schema, itag, item_tower, eo)
    local block = tk.ParallelBlock({ query = query, item = item }, { name = opts.name or "two_tower" })
    if opts.post ~= nil then block:set_post(opts.post) end
    tk.set_meta(block, {
      class = "TwoTowerBlock",
      query_tower_tag = qtag,
      item_tower_tag = itag,
      schema = schema:to_table(),
      embedding_options = eo and eo:to_table() or nil,
    })
    return block
  end

  local function branch(self, name, what)
    for _, c in ipairs(self:children()) do
      if c.name == name then return c.block end
    end
    error(("%s: block '%s' has no '%s' branch (it is not a two-tower block)"):format(what, self:name(), name), 3)
  end

  --- The query tower with its inputs (the "query" branch).
  function Block:query_block() return branch(self, "query", "query_block") end
  --- The item tower with its inputs (the "item" branch).
  function Block:item_block() return branch(self, "item", "item_block") end
end
