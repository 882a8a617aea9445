-- Writes a small folder in the MovieLens-100k format (u.user, u.item, u.data) with
-- clustered tastes: 300 users, 400 movies, 40 ratings each. Usage: luajit fake_movielens.lua DIR
local d = arg[1]
local f = io.open(d .. "/u.user", "w")
local occ = { "technician", "other", "writer", "executive", "student" }
for u = 1, 300 do f:write(("%d|%d|%s|%s|%05d\n"):format(u, 15 + u % 50, u % 3 == 0 and "F" or "M", occ[u % 5 + 1], (u * 7919) % 100000)) end
f:close()
f = io.open(d .. "/u.item", "w")
for m = 1, 400 do
  local flags = {}
  for g = 0, 18 do flags[#flags + 1] = ((m + g) % 7 == 0) and "1" or "0" end
  f:write(m .. "|Movie " .. m .. "|01-Jan-1995||http://x|" .. table.concat(flags, "|") .. "\n")
end
f:close()
f = io.open(d .. "/u.data", "w")
local s = 1
for u = 1, 300 do
  for j = 1, 40 do
    s = (s * 1103515245 + 12345) % 2147483648
    local m = ((u % 10) * 40 + s % 40) + 1
    f:write(("%d\t%d\t%d\t%d\n"):format(u, m, s % 5 + 1, 880000000 + u * 1000 + j))
  end
end
f:close()
