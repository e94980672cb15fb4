#!/bin/sh
# User-space instructions per hello-world request: luaio (streaming and seed APIs) against
# nginx+Lua, counted by valgrind's callgrind, which is repeatable whatever else the machine does
# (unlike CPU time, whose kernel part, the loopback TCP work, is most of a request's cost here).
# Each server runs twice under callgrind: once to a single request (start-up and shut-down), once
# under wrk; the difference over the requests served is the figure.
#   bench/http/instructions.sh [seconds=6] [connections=16]
# PEERS="stream stream_log" picks the servers (default: nginx_lua stream seed; the first is the
# base of the ratio); stream_log is the streaming hello with the combined access log (to a file).
# Needs: valgrind wrk nginx libnginx-mod-http-lua (Debian).
set -eu
SECS=${1:-6}; CONNS=${2:-16}
DIR=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$DIR/../.." && pwd)
LUAIO=${LUAIO:-$ROOT/build/luaio}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
sed -e s/PORT_LUA/18261/ -e s/PORT_PLAIN/18262/ "$DIR/nginx_lua.conf" > "$TMP/nginx.conf"
mkdir -p "$TMP/logs"
export LOG="$TMP/access.log" # of stream_log

run() { # name (LOAD=0|1) -> prints "instructions requests"
    out="$TMP/cg.$1.$LOAD"
    case $1 in
    stream) PORT=18263; set -- "$LUAIO" "$DIR/hello_stream.lua" $PORT ;;
    seed) PORT=18264; set -- "$LUAIO" "$DIR/hello_seed.lua" $PORT ;;
    stream_log) PORT=18265; set -- "$LUAIO" "$DIR/hello_access_log.lua" $PORT ;;
    nginx_lua) PORT=18261; set -- nginx -p "$TMP" -c "$TMP/nginx.conf" ;;
    esac
    load=$LOAD
    valgrind --tool=callgrind --callgrind-out-file="$out" "$@" > /dev/null 2>&1 &
    pid=$!
    i=0; until curl -s -o /dev/null "http://127.0.0.1:$PORT/"; do i=$((i+1)); [ $i -gt 200 ] && exit 1; sleep 0.1; done
    n=1
    if [ "$load" = 1 ]; then
        n=$(wrk -t1 -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$PORT/" | awk '/requests in/ {print $1}')
        n=$((n + 1))
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
    total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    echo "$total $n"
}

PEERS=${PEERS:-nginx_lua stream seed}
printf "%-10s %14s %10s %12s   %s\n" peer instructions requests per_request "ratio to ${PEERS%% *}"
for p in $PEERS; do
    set -- $(LOAD=0 run $p) $(LOAD=1 run $p) # base_instr base_n instr n
    per=$(( ($3 - $1) / ($4 - $2) ))
    [ -z "${BASE:-}" ] && BASE=$per
    awk -v p=$p -v i="$3" -v n="$4" -v per="$per" -v b="$BASE" \
        'BEGIN {printf "%-10s %14d %10d %12d   %.2fx\n", p, i, n, per, per / b}'
done
