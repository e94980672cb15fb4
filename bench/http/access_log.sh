#!/bin/bash
# CPU per request of the hello server without and with the access log (same run, wrk).
#   bash bench/http/access_log.sh [path/to/luaio] [seconds]
set -e
LUAIO=${1:-build/luaio}
SECS=${2:-5}
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
run() { # name port script [args...]
    local name=$1 port=$2; shift 2
    LOG=$LOG "$LUAIO" "$@" "$port" $EXTRA &
    local pid=$!
    sleep 0.5
    local t0; t0=$(cpu_ticks $pid)
    local reqs; reqs=$(wrk -t1 -c32 -d"${SECS}s" "http://127.0.0.1:$port/" | awk '/requests in/ { print $1 }')
    local t1; t1=$(cpu_ticks $pid)
    kill $pid; wait $pid 2>/dev/null || true
    local hz; hz=$(getconf CLK_TCK)
    echo "$name $reqs $(awk -v r="$reqs" -v c=$((t1 - t0)) -v hz="$hz" 'BEGIN { printf "%.2f", c / hz * 1e6 / r }')"
}
{
    run off 18181 bench/http/hello_stream.lua
    run combined 18182 bench/http/hello_access_log.lua
} | awk '{ print; us[$1] = $3 } END { printf "access log CPU per request: %.2fx\n", us["combined"] / us["off"] }'
echo "(columns: mode, requests in ${SECS}s, CPU microseconds per request; $(wc -l < "$LOG") access lines written)"
