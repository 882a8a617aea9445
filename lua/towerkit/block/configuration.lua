--- Block methods about a block's configuration: copy, get_config, set_pre, set_post,
-- and tk.from_config, which builds a block from get_config()'s table.
local core = require "towerkit.core"
local json = require "towerkit.json"
local util = require "towerkit.util"
local seed = require "towerkit.seed"
local class = require "towerkit.block.class"
local combinators = require "towerkit.block.combinators"
local initializers = require "towerkit.block.initializers"

local M = { methods = util.methods("block/configuration.lua") }
local methods = M.methods

-- These three wrap the C methods of the same names (see block/class.lua).

--- block:copy([seed]): the same graph with new weights from the initialisers (initializer
-- functions still waiting for the shape are applied to the copy too, once it is built).
function methods:copy(s)
  local c = class.core_copy(self, s or seed.take())
  if initializers.waiting() then initializers.copied(c) end
  return c
end

--- block:set_post(post): post is a block, a function, a registered name or a list of
-- names (nil removes it).
function methods:set_post(post)
  return class.core_set_post(self, post ~= nil and combinators.resolve_post(post) or nil)
end

--- block:set_pre(pre): as set_post.
function methods:set_pre(pre)
  return class.core_set_pre(self, pre ~= nil and combinators.resolve_post(pre) or nil)
end

function methods:get_config()
  return json.decode(self:config_json())
end

--- tk.from_config(config [, seed]): a block from get_config()'s table (fresh weights).
function M.from_config(config, s)
  if type(config) ~= "table" then util.argerror("from_config: a config table expected") end
  return core.from_config_json(json.encode(config), s or seed.take())
end

return M
