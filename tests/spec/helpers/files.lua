-- Temporary directories and files for specs, and shell commands run from them.
local M = {}

--- s as one shell word (single-quoted).
function M.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

--- The output (stdout and stderr) of a shell command.
function M.sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  p:close()
  return out
end

--- The output (stdout and stderr) of a shell command, and its exit status.
function M.run(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("*a")
  p:close()
  return out, tonumber(out:match("exit=(%d+)%s*$"))
end

--- The stdout and the stderr of a shell command, apart, and its exit status.
function M.run_split(cmd)
  local out, err = os.tmpname(), os.tmpname()
  local p = io.popen(("%s >%s 2>%s; echo \"exit=$?\""):format(cmd, M.q(out), M.q(err)))
  local status = tonumber(p:read("*a"):match("exit=(%d+)"))
  p:close()
  local o, e = M.slurp(out), M.slurp(err)
  os.remove(out)
  os.remove(err)
  return o, e, status
end

--- A new empty directory under the system's temporary directory.
function M.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkdir -p '" .. p .. "'") == 0)
  return p
end

--- Writes text to path (binary mode).
function M.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

--- The whole file, or nil when it cannot be read.
function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

--- The whole file, or "" when it cannot be read (a log not written yet).
function M.slurp(path) return M.read(path) or "" end

--- The names in dir that contain `needle` (plain text), sorted: leftovers of atomic
-- writes are "<name>.tmp-XXXXXX".
function M.entries(dir, needle)
  local p = assert(io.popen("ls -A " .. M.q(dir)))
  local names = {}
  for name in p:lines() do
    if name:find(needle, 1, true) then names[#names + 1] = name end
  end
  p:close()
  table.sort(names)
  return names
end

return M
