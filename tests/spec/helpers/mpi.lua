-- mpirun for the specs that start their own jobs (distributed_spec's failing ranks and
-- checkpoint, sharded_server_spec's server). scripts/run-tests.sh allows it as root.
local tk = require "towerkit"

local M = {}

--- The mpirun prefix: "mpirun --oversubscribe", and under the sanitizers (ASAN_OPTIONS
-- set: make test-asan, where the ranks are sanitized builds too) ASAN_OPTIONS passed to
-- the ranks without leak checks: Open MPI's own allocations (its dlopen'ed components)
-- are never freed.
M.MPIRUN = "mpirun --oversubscribe"
if (os.getenv("ASAN_OPTIONS") or "") ~= "" then
  M.MPIRUN = "env ASAN_OPTIONS=" .. os.getenv("ASAN_OPTIONS") .. ":detect_leaks=0 mpirun --oversubscribe -x ASAN_OPTIONS"
end

--- Whether the specs can start jobs: a build with MPI and mpirun on the PATH.
M.available = tk.distributed.available() and os.execute("command -v mpirun >/dev/null 2>&1") == 0

--- busted's `it` when M.available, else `pending` (the spec is listed as skipped).
M.it = require("busted")[M.available and "it" or "pending"]

return M
