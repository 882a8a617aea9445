--- Callbacks of model:fit: objects with on_epoch_end(model, epoch, logs) and
-- on_train_end(model).
local argerror = require("towerkit.util").argerror

local callbacks = {}

--- EarlyStopping{monitor = "val_recall_at_10", mode = "max", patience = 2,
-- min_delta = 0, restore_best_weights = true}
function callbacks.EarlyStopping(o)
  o = o or {}
  local cb = { monitor = o.monitor or "loss", patience = o.patience or 2, min_delta = o.min_delta or 0,
    restore = o.restore_best_weights ~= false, wait = 0 }
  cb.mode = o.mode or (cb.monitor:match("loss") and "min" or "max")
  if cb.mode ~= "min" and cb.mode ~= "max" then argerror("EarlyStopping: mode must be \"min\" or \"max\"") end
  function cb:on_epoch_end(model, epoch, logs)
    local v = logs[self.monitor]
    if v == nil then
      argerror("EarlyStopping: the logs have no '%s'", self.monitor)
    end
    local better = self.best == nil or (self.mode == "min" and v < self.best - self.min_delta)
      or (self.mode == "max" and v > self.best + self.min_delta)
    if better then
      self.best, self.best_epoch, self.wait = v, epoch, 0
      if self.restore then self.best_weights = model.block:get_weights() end
    else
      self.wait = self.wait + 1
      if self.wait >= self.patience then
        model.stop_training = true
        self.stopped_epoch = epoch
        if self.restore and self.best_weights then model.block:set_weights(self.best_weights) end
      end
    end
  end
  return cb
end

--- ModelCheckpoint{dir = "ckpt/epoch-%d"}: saves the model after every epoch (the
-- epoch number is substituted into dir when it has a %d).
function callbacks.ModelCheckpoint(o)
  if type(o) ~= "table" or type(o.dir) ~= "string" then argerror("ModelCheckpoint: {dir = path} expected") end
  return {
    dir = o.dir,
    on_epoch_end = function(self, model, epoch)
      model:save(self.dir:find("%%d") and self.dir:format(epoch) or self.dir)
    end,
  }
end

return callbacks
