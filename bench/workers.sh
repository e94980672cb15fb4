#!/bin/sh
# Throughput of the hello server (examples/workers_hello.lua) under `luaio --workers N`,
# with 1 and 2 workers, printed as a ratio. The load generator (wrk) shares the machine's
# cores with the workers; its own CPU share is printed beside each figure.
#   bench/workers.sh [luaio binary] [seconds]
set -e
LUAIO=${1:-build/luaio}
SECS=${2:-3}
PORT=${PORT:-18990}
cd "$(dirname "$0")/.."

run() {
    n=$1
    "$LUAIO" --workers "$n" examples/workers_hello.lua "$PORT" 2>/dev/null &
    master=$!
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        curl -s "http://127.0.0.1:$PORT/" >/dev/null && break
        sleep 0.2
    done
    wrk -t1 -c64 -d1s "http://127.0.0.1:$PORT/" >/dev/null # warm-up
    start=$(awk '{print $14 + $15}' /proc/self/stat)
    out=$(sh -c 'wrk -t1 -c64 -d'"$SECS"'s http://127.0.0.1:'"$PORT"'/ & w=$!; wait $w; cat /proc/$$/stat' 2>&1)
    kill -TERM "$master"
    wait "$master" || true
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    # The wrk child's CPU time (utime+stime of waited-for children, cutime+cstime) in ticks.
    ticks=$(echo "$out" | tail -1 | awk '{print $16 + $17}')
    hz=$(getconf CLK_TCK)
    share=$(awk -v t="$ticks" -v hz="$hz" -v s="$SECS" 'BEGIN { printf "%.0f", 100 * t / hz / s }')
    echo "$n $rps $share"
}

a=$(run 1)
b=$(run 2)
echo "$a" | awk '{printf "1 worker : %10.0f req/s  (wrk used %s%% of a core)\n", $2, $3}'
echo "$b" | awk '{printf "2 workers: %10.0f req/s  (wrk used %s%% of a core)\n", $2, $3}'
echo "$a $b" | awk '{printf "ratio 2/1: %.2f\n", $5 / $2}'
