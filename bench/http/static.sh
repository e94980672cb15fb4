#!/usr/bin/env bash
# http.static against nginx (sendfile on, open_file_cache), same run: requests/s and CPU
# microseconds per request for a 1 KB file over keep-alive (ROUNDS rounds, the order of the two
# servers alternating, so that neither always runs in the other's wake on a shared machine),
# Range requests (4 KiB out of the 100 MB file) the same way, and the throughput of a 100 MB
# download with one and eight clients.
# With CALLGRIND=1 also the user-space instructions per 1 KB request of each server (valgrind,
# counted only while wrk runs: repeatable whatever else the machine does).
# Usage: [ROUNDS=3] [CALLGRIND=1] bash bench/http/static.sh [path/to/luaio] [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
LUAIO=${1:-build/luaio}
SECS=${2:-5}
dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT
mkdir -p "$dir/www"
head -c 1024 /dev/urandom > "$dir/www/1k.bin"
head -c 100000000 /dev/urandom > "$dir/www/100m.bin"
sync # written back before any server reads it: a download during writeback measured that
cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
error_log $dir/error.log;
pid $dir/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  open_file_cache max=1000 inactive=20s;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  server { listen 127.0.0.1:18381; root $dir/www; }
}
CONF
cat >"$dir/static.lua" <<LUA
local http = require "http"
assert(http.createServer({ port = 18382, maxRequests = 1000000, backlog = 1024 }, http.static("$dir/www")))
LUA
nginx -p "$dir" -c "$dir/nginx.conf" & pids+=($!); NGINX=$!
"$LUAIO" "$dir/static.lua" & pids+=($!); LUAIO_PID=$!
sleep 0.5
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
printf "%-28s %12s %12s %8s\n" measure luaio nginx ratio
one() { # port pid [path [wrk args...]] -> "requests cpu_ticks seconds"
    local t0 t1 out port=$1 pid=$2 path=${3:-/1k.bin}
    shift 2; [ $# -gt 0 ] && shift
    t0=$(cpu_ticks "$pid")
    out=$(wrk -t1 -c32 -d"${SECS}s" "$@" "http://127.0.0.1:$port$path")
    t1=$(cpu_ticks "$pid")
    echo "$out" | awk -v c=$((t1 - t0)) '/requests in/ { r = $1; s = $4 + 0 } END { printf "%d %d %.3f", r, c, s }'
}
ROUNDS=${ROUNDS:-3}
# compare NAME PATH [wrk args...]: ROUNDS rounds of both servers, the order alternating; prints
# each round's ratios and NAME_req_per_s and NAME_cpu_us_per_req over all rounds.
compare() {
    local name=$1 path=$2 lr=0 lc=0 ls=0 nr=0 nc=0 ns=0 round who order r c s l_round n_round l_rps n_rps l_us n_us
    shift 2
    for round in $(seq "$ROUNDS"); do
        if [ $((round % 2)) = 1 ]; then order="l n"; else order="n l"; fi
        for who in $order; do
            if [ "$who" = l ]; then
                read -r r c s <<<"$(one 18382 $LUAIO_PID "$path" "$@")"; lr=$((lr + r)); lc=$((lc + c)); ls=$(echo "$ls $s" | awk '{ print $1 + $2 }')
                l_round="$r $c $s"
            else
                read -r r c s <<<"$(one 18381 $NGINX "$path" "$@")"; nr=$((nr + r)); nc=$((nc + c)); ns=$(echo "$ns $s" | awk '{ print $1 + $2 }')
                n_round="$r $c $s"
            fi
        done
        echo "$l_round $n_round" | awk -v hz="$hz" -v k="$round" -v name="$name" '{ printf "%s round %d: req/s %.0f vs %.0f (%.2fx), cpu us/req %.2f vs %.2f (%.2fx)\n", name, k, $1 / $3, $4 / $6, ($1 / $3) / ($4 / $6), $2 / hz * 1e6 / $1, $5 / hz * 1e6 / $4, ($2 / $1) / ($5 / $4) }'
    done
    l_rps=$(echo "$lr $ls" | awk '{ printf "%.0f", $1 / $2 }'); n_rps=$(echo "$nr $ns" | awk '{ printf "%.0f", $1 / $2 }')
    l_us=$(echo "$lc $lr $hz" | awk '{ printf "%.2f", $1 / $3 * 1e6 / $2 }'); n_us=$(echo "$nc $nr $hz" | awk '{ printf "%.2f", $1 / $3 * 1e6 / $2 }')
    printf "%-28s %12s %12s %8.2f\n" "${name}_req_per_s" "$l_rps" "$n_rps" "$(echo "$l_rps $n_rps" | awk '{ print $1 / $2 }')"
    printf "%-28s %12s %12s %8.2f\n" "${name}_cpu_us_per_req" "$l_us" "$n_us" "$(echo "$l_us $n_us" | awk '{ print $1 / $2 }')"
}
compare 1k /1k.bin
if [ "${CALLGRIND:-0}" = 1 ]; then
    instr() { # name port cmd... -> instructions per request while wrk runs
        local name=$1 port=$2 pid i n total
        shift 2
        valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/cg.$name" "$@" >/dev/null 2>&1 &
        pid=$!
        i=0; until curl -s -o /dev/null "http://127.0.0.1:$port/1k.bin"; do i=$((i + 1)); [ $i -gt 300 ] && return 1; sleep 0.1; done
        wrk -t1 -c16 -d1s "http://127.0.0.1:$port/1k.bin" >/dev/null
        callgrind_control -i on "$pid" >/dev/null 2>&1
        n=$(wrk -t1 -c16 -d"${SECS}s" "http://127.0.0.1:$port/1k.bin" | awk '/requests in/ { print $1 }')
        callgrind_control -i off "$pid" >/dev/null 2>&1
        # A server under valgrind on a loaded machine has been seen to miss its first TERM.
        kill "$pid"
        for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        total=$(callgrind_annotate "$dir/cg.$name" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
        echo $((total / n))
    }
    sed -e s/18381/18383/ -e s/nginx.pid/nginx_cg.pid/ "$dir/nginx.conf" > "$dir/nginx_cg.conf"
    sed -e s/18382/18384/ "$dir/static.lua" > "$dir/static_cg.lua"
    li=$(instr luaio 18384 "$LUAIO" "$dir/static_cg.lua")
    ni=$(instr nginx 18383 nginx -p "$dir" -c "$dir/nginx_cg.conf")
    printf "%-28s %12s %12s %8.2f\n" 1k_instructions_per_req "$li" "$ni" "$(echo "$li $ni" | awk '{ print $1 / $2 }')"
fi
# Range requests: 4 KiB from the middle of the 100 MB file (a 206 each, sent with sendfile by
# both).
compare range_4k /100m.bin -H "Range: bytes=50000000-50004095"
dl() { # port clients -> MB/s
    local t0 t1 i
    t0=$(date +%s.%N)
    for i in $(seq "$2"); do curl -s -o /dev/null "http://127.0.0.1:$1/100m.bin" & done
    wait $(jobs -p | grep -v -e "$NGINX" -e "$LUAIO_PID") 2>/dev/null || true
    t1=$(date +%s.%N)
    echo "$t0 $t1 $2" | awk '{ printf "%.0f", 100 * $3 / ($2 - $1) }'
}
# ROUNDS downloads of each server, the order alternating, and the medians (one each, luaio always
# first, swung from 0.62x to 1.13x nginx's between runs).
med() { tr ' ' '\n' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for c in 1 8; do
    ls_= ns_=
    for round in $(seq "$ROUNDS"); do
        if [ $((round % 2)) = 1 ]; then
            l=$(dl 18382 $c); n=$(dl 18381 $c)
        else
            n=$(dl 18381 $c); l=$(dl 18382 $c)
        fi
        echo "100m $c clients round $round: $l vs $n MB/s" >&2
        ls_="$ls_ $l" ns_="$ns_ $n"
    done
    l=$(echo $ls_ | med); n=$(echo $ns_ | med)
    printf "%-28s %12s %12s %8.2f\n" "100m_MBps_${c}_clients" "$l" "$n" "$(echo "$l $n" | awk '{ print $1 / $2 }')"
done
echo "(both: sendfile and an open-file cache)"
