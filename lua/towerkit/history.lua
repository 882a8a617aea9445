--- History: the per-step and per-epoch logs of model:fit, written as CSV or JSON.
local json = require "towerkit.json"
local write_atomic = require("towerkit.util").write_atomic

local History = {}
History.__index = History

--- tk.History(): an empty history.
function History.new()
  return setmetatable({ epochs = {}, steps = {} }, History)
end

function History:add_step(s) self.steps[#self.steps + 1] = s end
function History:add_epoch(logs) self.epochs[#self.epochs + 1] = logs end

function History.format_logs(logs)
  local keys = {}
  for k in pairs(logs) do if k ~= "epoch" then keys[#keys + 1] = k end end
  table.sort(keys)
  local parts = { ("epoch %d"):format(logs.epoch) }
  for _, k in ipairs(keys) do
    local v = logs[k]
    parts[#parts + 1] = type(v) == "number" and ("%s %.4f"):format(k, v) or ("%s %s"):format(k, tostring(v))
  end
  return table.concat(parts, "  ")
end

--- The per-epoch logs as CSV (one row per epoch, columns sorted) or JSON, written
-- atomically: on an error (naming the path) the previous file is left as it was.
function History:to_csv(path)
  local keys, seen = { "epoch" }, { epoch = true }
  for _, e in ipairs(self.epochs) do
    for k in pairs(e) do if not seen[k] then seen[k] = true keys[#keys + 1] = k end end
  end
  table.sort(keys, function(a, b)
    if a == "epoch" then return b ~= "epoch" end
    if b == "epoch" then return false end
    return a < b
  end)
  local lines = { table.concat(keys, ",") }
  for _, e in ipairs(self.epochs) do
    local row = {}
    for i, k in ipairs(keys) do row[i] = e[k] ~= nil and tostring(e[k]) or "" end
    lines[#lines + 1] = table.concat(row, ",")
  end
  write_atomic(path, table.concat(lines, "\n") .. "\n")
end

function History:to_json(path)
  write_atomic(path, json.encode({ epochs = json.array(self.epochs), steps = json.array(self.steps) }, true) .. "\n")
end

return History
