--- The Block class: `towerkit.core`'s method table of every block (built in Lua, in C,
-- or restored from a config), made a class for util.define so that each method is
-- defined once. Its C methods (lua/binding/block.c) count as defined there.
local util = require "towerkit.util"

local Block = util.class(require("towerkit.core").Block, "Block", "lua/binding/block.c")

-- The Lua layer wraps four C methods: copy draws the next seed, set_post and set_pre also
-- take registered names and functions (block/configuration.lua), forward applies pending
-- initializer functions first (block/calls.lua). The C functions are taken out of the
-- class and kept here under private names, so that the public methods are defined once.
-- Calling a block, block(inputs), is its forward.
local core_forward = util.take(Block, "forward")
debug.getregistry()["towerkit.Block"].__call = function(self, ...) return self:forward(...) end

return {
  Block = Block,
  core_forward = core_forward,
  core_copy = util.take(Block, "copy"),
  core_set_post = util.take(Block, "set_post"),
  core_set_pre = util.take(Block, "set_pre"),
}
