#!/usr/bin/env bash
# http.static against nginx (sendfile on, open_file_cache), same run: requests/s and CPU
# microseconds per request for a 1 KB file, and the throughput of a 100 MB download with one
# and eight clients. Usage: bash bench/http/static.sh [path/to/luaio] [seconds]
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
one() { # port pid -> "req/s us/req"
    local t0 t1 out
    t0=$(cpu_ticks "$2")
    out=$(wrk -t1 -c32 -d"${SECS}s" "http://127.0.0.1:$1/1k.bin")
    t1=$(cpu_ticks "$2")
    echo "$out" | awk -v c=$((t1 - t0)) -v hz="$hz" '/requests in/ { r = $1 } /Requests\/sec/ { rps = $2 } END { printf "%.0f %.2f", rps, c / hz * 1e6 / r }'
}
read -r l_rps l_us <<<"$(one 18382 $LUAIO_PID)"
read -r n_rps n_us <<<"$(one 18381 $NGINX)"
printf "%-28s %12s %12s %8.2f\n" 1k_req_per_s "$l_rps" "$n_rps" "$(echo "$l_rps $n_rps" | awk '{ print $1 / $2 }')"
printf "%-28s %12s %12s %8.2f\n" 1k_cpu_us_per_req "$l_us" "$n_us" "$(echo "$l_us $n_us" | awk '{ print $1 / $2 }')"
dl() { # port clients -> MB/s
    local t0 t1 i
    t0=$(date +%s.%N)
    for i in $(seq "$2"); do curl -s -o /dev/null "http://127.0.0.1:$1/100m.bin" & done
    wait $(jobs -p | grep -v -e "$NGINX" -e "$LUAIO_PID") 2>/dev/null || true
    t1=$(date +%s.%N)
    echo "$t0 $t1 $2" | awk '{ printf "%.0f", 100 * $3 / ($2 - $1) }'
}
for c in 1 8; do
    l=$(dl 18382 $c); n=$(dl 18381 $c)
    printf "%-28s %12s %12s %8.2f\n" "100m_MBps_${c}_clients" "$l" "$n" "$(echo "$l $n" | awk '{ print $1 / $2 }')"
done
echo "(both: sendfile and an open-file cache)"
