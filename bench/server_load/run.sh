#!/usr/bin/env bash
# The towerkit-server load test on 127.0.0.1 (make bench-server). Bounded: a few
# seconds per concurrency level and 100,000 requests for the memory check.
# Writes bench/server_load/RESULTS.md.
#   bench/server_load/run.sh [BUILD] ; DURATION=5 LEVELS="1 4 16 64" THREADS=2
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-5}
LEVELS=${LEVELS:-"1 4 16 64"}
THREADS=${THREADS:-$(nproc)}
work=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$build/towerkit" bench/server_load/make_model.lua "$work/model" "$work/bodies.txt"
"$build/examples/towerkit-server" "$work/model" --port 0 --threads "$THREADS" --access-log off >"$work/server.log" 2>&1 &
server_pid=$!
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/server.log")
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || { cat "$work/server.log"; exit 1; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$server_pid/status"; }
loadgen="$build/examples/loadgen"
$loadgen -p "$port" -c 4 -n 5000 -f "$work/bodies.txt" >/dev/null # warm up: every worker's Lua state

out=bench/server_load/RESULTS.md
{
  echo "# towerkit-server under load"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(uname -sr)"
  echo "- model: bench/server_load/make_model.lua (W1 features, 5000 items, 64 dimensions, exact top-10)"
  echo "- server: \`$build/examples/towerkit-server MODEL --port 0 --threads $THREADS --access-log off\` (one Lua state per worker)"
  echo "- requests: POST /recommend, 1000 different users round robin, one user per request, k = 10"
  echo "- client and server share the $(nproc) cores of the machine: the load generator's threads take CPU"
  echo "  from the server's workers, so these figures are a lower bound and vary from run to run"
  echo
} >"$out"

if command -v wrk >/dev/null; then
  {
    echo "## Throughput and latency (wrk, ${DURATION} s per level)"
    echo
    echo "\`BODIES=bodies.txt wrk -t2 -c C -d ${DURATION}s --latency -s bench/server_load/wrk_post.lua http://127.0.0.1:PORT/recommend\`"
    echo
    echo "| connections | requests/s | p50 | p99 | requests | errors |"
    echo "|---:|---:|---:|---:|---:|---:|"
  } >>"$out"
  for c in $LEVELS; do
    t=2; [ "$c" -lt 2 ] && t=1
    res=$(BODIES="$work/bodies.txt" wrk -t$t -c "$c" -d "${DURATION}s" --latency -s bench/server_load/wrk_post.lua \
      "http://127.0.0.1:$port/recommend")
    rps=$(echo "$res" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$res" | awk '$1 == "50%" {print $2}')
    p99=$(echo "$res" | awk '$1 == "99%" {print $2}')
    n=$(echo "$res" | awk '/requests in/ {print $1}')
    non2xx=$(echo "$res" | awk '/Non-2xx/ {print $NF}')
    sock=$(echo "$res" | awk '/Socket errors/ {s = 0; for (i = 4; i <= NF; i += 2) s += $i; print s}')
    errs=$(( ${non2xx:-0} + ${sock:-0} ))
    echo "| $c | $rps | $p50 | $p99 | $n | $errs |" >>"$out"
    echo "wrk c=$c: $rps req/s, p50 $p50, p99 $p99, $n requests, $errs errors"
  done
  echo >>"$out"
fi

{
  echo "## Throughput and latency (loadgen, the C client of bench/server_load, 20,000 requests per level)"
  echo
  echo "\`$loadgen -p PORT -c C -n 20000 -f bodies.txt\`"
  echo
  echo "| connections | requests/s | p50 ms | p99 ms | max ms | errors |"
  echo "|---:|---:|---:|---:|---:|---:|"
} >>"$out"
for c in $LEVELS; do
  res=$($loadgen -p "$port" -c "$c" -n 20000 -f "$work/bodies.txt")
  echo "$res" | awk -v c="$c" '{print "| " c " | " $8 " | " $10 " | " $12 " | " $14 " | " $4 " |"}' >>"$out"
  echo "loadgen c=$c: $res"
done
echo >>"$out"

{
  echo "## Resident memory across 100,000 requests"
  echo
  echo "\`$loadgen -p PORT -c 8 -n 10000 -f bodies.txt\`, ten times; VmRSS of the server after each batch"
  echo
  echo "| requests so far | VmRSS (KiB) | errors |"
  echo "|---:|---:|---:|"
  echo "| 0 (after warm-up) | $(rss) | |"
} >>"$out"
first=$(rss)
for i in $(seq 10); do
  res=$($loadgen -p "$port" -c 8 -n 10000 -f "$work/bodies.txt")
  echo "| $((i * 10000)) | $(rss) | $(echo "$res" | awk '{print $4}') |" >>"$out"
done
last=$(rss)
echo >>"$out"
echo "RSS after warm-up $first KiB, after 100,000 requests $last KiB (change $((last - first)) KiB)." >>"$out"
echo "RSS after warm-up $first KiB, after 100,000 requests $last KiB"
echo "wrote $out"
