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

-- Summary and pictures (issue 14; towerkit.plot) ---------------------------------------

--- history:summary() -> one line: epochs, steps, time, first and last loss, and the last
-- epoch's validation metrics (what fit prints at its end).
function History:summary()
  local n, secs = #self.epochs, 0
  for _, e in ipairs(self.epochs) do secs = secs + (e.seconds or 0) end
  local parts = { ("fit: %d epoch%s, %d steps in %.1f s"):format(n, n == 1 and "" or "s", #self.steps, secs) }
  local e, e1 = self.epochs[n], self.epochs[1]
  if e and e.loss then -- epoch means
    parts[#parts + 1] = n > 1 and ("loss %.4f -> %.4f"):format(e1.loss, e.loss) or ("loss %.4f"):format(e.loss)
  end
  if e then
    local keys = {}
    for k, v in pairs(e) do if type(k) == "string" and k:match("^val_") and type(v) == "number" then keys[#keys + 1] = k end end
    table.sort(keys)
    for _, k in ipairs(keys) do parts[#parts + 1] = ("%s %.4f"):format(k, e[k]) end
  end
  return table.concat(parts, ", ")
end

--- history:plot(path) -> path: an SVG of the loss per step and per epoch and each
-- validation metric per epoch.
function History:plot(path) return require("towerkit.plot").history(self, path) end

return History
