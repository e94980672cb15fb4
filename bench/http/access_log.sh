#!/bin/bash
# CPU per request of the hello server without and with the access log, in the same run: ROUNDS
# rounds (default 3) that each run both servers under wrk, one after the other, so that the
# machine's other load falls on both alike; the CPU time (user + system, thread pool included)
# and the requests of the rounds are added up per mode.
#   bash bench/http/access_log.sh [path/to/luaio] [seconds per server and round] [format]
# format: combined (default), json or noop (a function that does nothing).
set -e
LUAIO=${1:-build/luaio}
SECS=${2:-5}
FORMAT=${3:-combined}
ROUNDS=${ROUNDS:-3}
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
run() { # name port script [args...] -> "name requests ticks"
    local name=$1 port=$2; shift 2
    LOG=$LOG "$LUAIO" "$@" &
    local pid=$!
    sleep 0.5
    local t0; t0=$(cpu_ticks $pid)
    local reqs; reqs=$(wrk -t1 -c32 -d"${SECS}s" "http://127.0.0.1:$port/" | awk '/requests in/ { print $1 }')
    local t1; t1=$(cpu_ticks $pid)
    kill $pid; wait $pid 2>/dev/null || true
    echo "$name $reqs $((t1 - t0))"
}
# The order alternates from round to round: the first server of a round runs in other conditions
# (the previous one's connections closing) than the second.
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then
        run off 18181 bench/http/hello_stream.lua 18181
        run "$FORMAT" 18182 bench/http/hello_access_log.lua 18182 "$FORMAT"
    else
        run "$FORMAT" 18182 bench/http/hello_access_log.lua 18182 "$FORMAT"
        run off 18181 bench/http/hello_stream.lua 18181
    fi
done | awk -v hz="$(getconf CLK_TCK)" -v f="$FORMAT" '
    { u = $3 / hz * 1e6 / $2; r = int((NR + 1) / 2)
      printf "round %d: %-8s %7d requests, %5.2f us CPU per request\n", r, $1, $2, u
      reqs[$1] += $2; ticks[$1] += $3
      if ($1 == "off") off[r] = u; else mode[r] = u
      if (r in off && r in mode) ratio[r] = mode[r] / off[r] }
    END { for (m in reqs) us[m] = ticks[m] / hz * 1e6 / reqs[m]
          n = asort(ratio)
          printf "off %.2f us, %s %.2f us CPU per request: %.2fx (median round: %.2fx)\n",
              us["off"], f, us[f], us[f] / us["off"], n % 2 ? ratio[(n + 1) / 2] : (ratio[n / 2] + ratio[n / 2 + 1]) / 2 }'
echo "($(wc -l < "$LOG") access lines written to $LOG, a file)"
