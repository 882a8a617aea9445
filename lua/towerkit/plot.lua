--- Pictures of training as self-contained SVG (no dependency): History:plot and
-- tk.plot.recall_at_k. Each chart is a panel with labelled axes; each series is a
-- <g class="series" data-name="..."> holding one <polyline> (and its points as
-- circles), so a test can find them with any XML parser.
local argerror = require("towerkit.util").argerror

local plot = {}

local COLORS = { "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf" }
local W, H = 720, 300                 -- one panel
local L, R, T, B = 70, 170, 36, 50    -- margins: the legend is on the right

local function esc(s)
  return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"):gsub('"', "&quot;"))
end

local function num(x) return ("%.2f"):format(x) end

-- About five round ticks over [lo, hi].
local function ticks(lo, hi)
  if hi <= lo then hi = lo + 1 end
  local raw = (hi - lo) / 5
  local mag = 10 ^ math.floor(math.log10(raw))
  local step = mag
  for _, m in ipairs { 1, 2, 5, 10 } do
    if m * mag >= raw then step = m * mag break end
  end
  local out = {}
  local v = math.ceil(lo / step - 1e-9) * step
  while v <= hi + step * 1e-9 do out[#out + 1] = v v = v + step end
  return out, step
end

local function label(v, step)
  if step >= 1 and v == math.floor(v) then return ("%d"):format(v) end
  local digits = math.max(0, -math.floor(math.log10(step)))
  return ("%." .. digits .. "f"):format(v)
end

-- One panel at vertical offset y0: {title, xlabel, ylabel, series = {{name, xs, ys}}}.
local function panel(out, p, y0)
  local xmin, xmax, ymin, ymax = math.huge, -math.huge, math.huge, -math.huge
  for _, s in ipairs(p.series) do
    for i, x in ipairs(s.xs) do
      local y = s.ys[i]
      if y == y and y ~= math.huge and y ~= -math.huge then
        xmin, xmax = math.min(xmin, x), math.max(xmax, x)
        ymin, ymax = math.min(ymin, y), math.max(ymax, y)
      end
    end
  end
  if xmin == math.huge then xmin, xmax, ymin, ymax = 0, 1, 0, 1 end
  if p.ymin then ymin = math.min(ymin, p.ymin) end
  if xmax == xmin then xmax = xmin + 1 end
  if ymax == ymin then ymax, ymin = ymax + 0.5, ymin - 0.5 end
  local pad = (ymax - ymin) * 0.05
  ymin, ymax = ymin - (p.ymin and 0 or pad), ymax + pad
  local pw, ph = W - L - R, H - T - B
  local function sx(x) return L + (x - xmin) / (xmax - xmin) * pw end
  local function sy(y) return y0 + T + ph - (y - ymin) / (ymax - ymin) * ph end
  out[#out + 1] = ('<g class="panel" data-title="%s">'):format(esc(p.title))
  out[#out + 1] = ('<text x="%s" y="%s" class="title">%s</text>'):format(num(L), num(y0 + 22), esc(p.title))
  out[#out + 1] = ('<rect x="%s" y="%s" width="%s" height="%s" class="frame"/>'):format(num(L), num(y0 + T), num(pw), num(ph))
  local yt, ystep = ticks(ymin, ymax)
  for _, v in ipairs(yt) do
    out[#out + 1] = ('<line x1="%s" y1="%s" x2="%s" y2="%s" class="grid"/>'):format(num(L), num(sy(v)), num(L + pw), num(sy(v)))
    out[#out + 1] = ('<text x="%s" y="%s" class="tick" text-anchor="end">%s</text>'):format(num(L - 6), num(sy(v) + 4),
      label(v, ystep))
  end
  local xt, xstep = ticks(xmin, xmax)
  if p.integer_x then
    local t = {}
    for _, v in ipairs(xt) do if v == math.floor(v) then t[#t + 1] = v end end
    xt, xstep = t, math.max(1, xstep)
  end
  for _, v in ipairs(xt) do
    out[#out + 1] = ('<text x="%s" y="%s" class="tick" text-anchor="middle">%s</text>'):format(num(sx(v)),
      num(y0 + T + ph + 16), label(v, xstep))
  end
  out[#out + 1] = ('<text x="%s" y="%s" class="axis" text-anchor="middle">%s</text>'):format(num(L + pw / 2),
    num(y0 + H - 12), esc(p.xlabel))
  out[#out + 1] = ('<text x="%s" y="%s" class="axis" text-anchor="middle" transform="rotate(-90 %s %s)">%s</text>')
    :format(num(18), num(y0 + T + ph / 2), num(18), num(y0 + T + ph / 2), esc(p.ylabel))
  for i, s in ipairs(p.series) do
    local color = COLORS[(i - 1) % #COLORS + 1]
    local pts = {}
    for j, x in ipairs(s.xs) do
      local y = s.ys[j]
      if y == y and y ~= math.huge and y ~= -math.huge then pts[#pts + 1] = num(sx(x)) .. "," .. num(sy(y)) end
    end
    out[#out + 1] = ('<g class="series" data-name="%s" data-points="%d">'):format(esc(s.name), #pts)
    out[#out + 1] = ('<polyline points="%s" fill="none" stroke="%s" stroke-width="%s"%s/>'):format(table.concat(pts, " "),
      color, s.thin and "1" or "2", s.dash and ' stroke-dasharray="6 4"' or "")
    if #pts <= 60 then
      for _, pt in ipairs(pts) do
        local x, y = pt:match("([^,]+),(.+)")
        out[#out + 1] = ('<circle cx="%s" cy="%s" r="3" fill="%s"/>'):format(x, y, color)
      end
    end
    local ly = y0 + T + 10 + (i - 1) * 18
    out[#out + 1] = ('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="2"%s/>'):format(num(L + pw + 12),
      num(ly), num(L + pw + 32), num(ly), color, s.dash and ' stroke-dasharray="6 4"' or "")
    out[#out + 1] = ('<text x="%s" y="%s" class="legend">%s</text>'):format(num(L + pw + 38), num(ly + 4), esc(s.name))
    out[#out + 1] = "</g>"
  end
  out[#out + 1] = "</g>"
end

--- svg(panels) -> the text of an SVG with the panels one above the other.
function plot.svg(panels)
  local out = {
    '<?xml version="1.0" encoding="UTF-8"?>',
    ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">'):format(W, H * #panels, W,
      H * #panels),
    "<style>text{font-family:sans-serif;font-size:12px;fill:#222}.title{font-size:14px;font-weight:bold}" ..
    ".frame{fill:none;stroke:#444}.grid{stroke:#ddd}.tick{font-size:11px;fill:#555}</style>",
    ('<rect width="%d" height="%d" fill="white"/>'):format(W, H * #panels),
  }
  for i, p in ipairs(panels) do panel(out, p, (i - 1) * H) end
  out[#out + 1] = "</svg>"
  return table.concat(out, "\n") .. "\n"
end

local function write(path, text)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "w")
  if not f then argerror("plot: cannot write %s: %s", path, err) end
  f:write(text)
  f:close()
  local ok, rerr = os.rename(tmp, path)
  if not ok then os.remove(tmp) argerror("plot: cannot write %s: %s", path, rerr) end
  return path
end

--- history(h, path) -> path: the training loss per step and per epoch (at the epoch's
-- last step), and each validation metric (val_*) per epoch.
function plot.history(h, path)
  if type(path) ~= "string" then argerror("plot: a path for the SVG is required") end
  local sx, sy, last = {}, {}, {}
  for i, s in ipairs(h.steps) do
    sx[i], sy[i] = s.step, s.loss
    last[s.epoch] = s.step
  end
  local ex, ey = {}, {}
  for _, e in ipairs(h.epochs) do
    if e.loss then ex[#ex + 1], ey[#ey + 1] = last[e.epoch] or e.epoch, e.loss end
  end
  local panels = { { title = "Training loss", xlabel = "step", ylabel = "loss", integer_x = true, series = {
    { name = "loss per step", xs = sx, ys = sy, thin = true },
    { name = "loss per epoch", xs = ex, ys = ey },
  } } }
  local keys, seen = {}, {}
  for _, e in ipairs(h.epochs) do
    for k, v in pairs(e) do
      if type(k) == "string" and k:match("^val_") and type(v) == "number" and not seen[k] then
        seen[k] = true
        keys[#keys + 1] = k
      end
    end
  end
  table.sort(keys)
  if #keys > 0 then
    local series = {}
    for _, k in ipairs(keys) do
      local xs, ys = {}, {}
      for _, e in ipairs(h.epochs) do
        if type(e[k]) == "number" then xs[#xs + 1], ys[#ys + 1] = e.epoch, e[k] end
      end
      series[#series + 1] = { name = k, xs = xs, ys = ys }
    end
    panels[2] = { title = "Validation metrics", xlabel = "epoch", ylabel = "metric", integer_x = true, series = series }
  end
  return write(path, plot.svg(panels))
end

local RECALL_OPTS = { ks = true, item_corpus = true, train = true, exclude_seen = true, path = true, batch_size = true }

--- recall_at_k(model, data, {ks = {1, 5, 10, 20, 50, 100}, item_corpus =, train =
-- model's last fit data, exclude_seen =, path = "recall_at_k.svg"}) -> path, results:
-- recall and NDCG against k for the model and the popularity baseline (items ranked by
-- their count in train). results = {model = {recall_at_k = ...}, popularity = {...}}.
function plot.recall_at_k(model, data, opts)
  local util = require "towerkit.util"
  local metrics = require "towerkit.metrics"
  opts = util.known_options(opts, RECALL_OPTS, "plot.recall_at_k")
  if not require("towerkit.model").is_model(model) then argerror("plot.recall_at_k: a TwoTowerModel expected") end
  local ks = opts.ks or { 1, 5, 10, 20, 50, 100 }
  local train = opts.train or model._fit_data
  if not train then argerror("plot.recall_at_k: train (the data of the popularity baseline) is required before fit") end
  local list = {}
  for _, k in ipairs(ks) do
    list[#list + 1] = metrics.RecallAt(k)
    list[#list + 1] = metrics.NDCGAt(k)
  end
  local eopts = { item_corpus = opts.item_corpus, metrics = list, exclude_seen = opts.exclude_seen,
    batch_size = opts.batch_size }
  local res = { model = model:evaluate(data, eopts),
    popularity = model:popularity_baseline(train, data, { metrics = list, exclude_seen = opts.exclude_seen }) }
  local function series(name, which, metric, dash)
    local xs, ys = {}, {}
    for i, k in ipairs(ks) do xs[i], ys[i] = k, res[which][("%s_at_%d"):format(metric, k)] end
    return { name = name, xs = xs, ys = ys, dash = dash }
  end
  local panels = {
    { title = "Recall@k", xlabel = "k", ylabel = "recall", ymin = 0, series = {
      series("model", "model", "recall"), series("popularity", "popularity", "recall", true) } },
    { title = "NDCG@k", xlabel = "k", ylabel = "NDCG", ymin = 0, series = {
      series("model", "model", "ndcg"), series("popularity", "popularity", "ndcg", true) } },
  }
  return write(opts.path or "recall_at_k.svg", plot.svg(panels)), res
end

return plot
