-- wrk script: POST /recommend with the bodies of $BODIES, round robin.
local bodies = {}
for line in io.lines(os.getenv("BODIES")) do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/recommend", { ["Content-Type"] = "application/json" }, bodies[i])
end
