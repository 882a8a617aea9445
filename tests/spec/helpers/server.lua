-- Servers (or any command) run in the background for specs: a small sh script starts the
-- command with its output in a log, writes its pid to a pid file and, when it exits, its
-- exit status to a code file.
local files = require "tests.spec.helpers.files"

local M = {}

local SCRIPT = 'log=$1; pidf=$2; code=$3; shift 3\n"$@" >"$log" 2>&1 &\necho $! >"$pidf"\nwait $!\necho $? >"$code"\n'
local n = 0

local q, slurp = files.q, files.slurp
local function sleep() os.execute("sleep 0.05") end

--- Starts `cmd` (shell words: a prefix such as mpirun or env, the binary, its arguments)
-- in the background, its files in dir: {log, pid_file, code_file}.
function M.launch(dir, cmd)
  n = n + 1
  local s = { log = dir .. "/srv" .. n .. ".log", code_file = dir .. "/srv" .. n .. ".code",
    pid_file = dir .. "/srv" .. n .. ".pid" }
  local script = dir .. "/run-server.sh"
  files.write(script, SCRIPT)
  os.execute(("sh %s %s %s %s %s >/dev/null 2>&1 &"):format(q(script), q(s.log), q(s.pid_file), q(s.code_file), cmd))
  return s
end

--- The pid of the launched command (mpirun's under mpirun), nil until it is written.
function M.pid(s) return slurp(s.pid_file):match("%d+") end

--- The first capture of `pattern` in the log, waiting up to `seconds` for it; nil if the
-- command exits first or the time runs out.
function M.wait_for(s, pattern, seconds)
  for _ = 1, seconds * 20 do
    local got = slurp(s.log):match(pattern)
    if got or slurp(s.code_file) ~= "" then return got end
    sleep()
  end
end

--- Waits up to `seconds` (default 10) for the server to listen: sets s.port and s.pid and
-- returns s; an error (with the log) if it does not.
function M.wait_port(s, seconds)
  s.port = M.wait_for(s, "listening on http://127%.0%.0%.1:(%d+)", seconds or 10)
  assert(s.port, "the server did not start: " .. slurp(s.log))
  for _ = 1, 100 do -- (the script writes the pid just after starting the command)
    s.pid = M.pid(s)
    if s.pid then break end
    sleep()
  end
  return s
end

--- Waits up to `seconds` for the command to exit: its status (nil if it has not exited)
-- and the seconds waited.
function M.wait_exit(s, seconds)
  local t0 = os.time()
  for _ = 1, seconds * 20 do
    if slurp(s.code_file) ~= "" then break end
    sleep()
  end
  return tonumber(slurp(s.code_file):match("%d+")), os.time() - t0
end

--- SIGTERM to the command unless it has exited, then up to `seconds` (default 5) for it
-- to exit: its status, nil if it did not exit.
function M.stop(s, seconds)
  local pid = M.pid(s)
  if pid and slurp(s.code_file) == "" then os.execute("kill " .. pid .. " 2>/dev/null") end
  return (M.wait_exit(s, seconds or 5))
end

return M
