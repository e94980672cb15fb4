#!/bin/sh
# User-space instructions per https request, keep-alive and with a full handshake each
# (Connection: close), luaio (streaming and seed APIs) against nginx with ssl, counted by
# valgrind's callgrind: repeatable whatever else the machine does (see bench/http/instructions.sh,
# whose method this is: each server runs once to a single request and once under wrk, and the
# difference over the requests served is the figure).
#   bench/tls/instructions.sh [seconds=6] [connections=8] [handshakes=60]
# Needs: valgrind wrk nginx (scripts/setup.sh --bench).
set -eu
SECS=${1:-6}; CONNS=${2:-8}; HANDSHAKES=${3:-60}
DIR=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$DIR/../.." && pwd)
LUAIO=${LUAIO:-$ROOT/build/luaio}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
sh "$DIR/certs.sh" "$TMP"
mkdir -p "$TMP/logs"
sed -e s/PORT/29461/ -e s/PLAIN/29464/ -e s/FULL/29465/ -e "s|CERT|$TMP/cert.pem|" -e "s|KEY|$TMP/key.pem|" "$DIR/nginx_ssl.conf" > "$TMP/nginx.conf"

run() { # name (LOAD=0|1, CLOSE=0|1) -> prints "instructions requests"
    out="$TMP/cg.$1.$LOAD.$CLOSE"
    case $1 in
    stream) PORT=29462; set -- "$LUAIO" "$DIR/hello_stream.lua" $PORT "$TMP/cert.pem" "$TMP/key.pem" ;;
    seed) PORT=29463; set -- "$LUAIO" "$DIR/hello_seed.lua" $PORT "$TMP/cert.pem" "$TMP/key.pem" ;;
    nginx) PORT=29461; set -- nginx -p "$TMP" -c "$TMP/nginx.conf" ;;
    esac
    load=$LOAD
    valgrind --tool=callgrind --callgrind-out-file="$out" "$@" > /dev/null 2>&1 &
    pid=$!
    i=0; until curl -sk -o /dev/null "https://127.0.0.1:$PORT/"; do i=$((i+1)); [ $i -gt 300 ] && exit 1; sleep 0.1; done
    n=1
    if [ "$load" = 1 ] && [ "$CLOSE" = 1 ]; then
        # An exact number of connections (curl, 4 at a time): wrk counts the requests answered,
        # not the handshakes the server did for connections still open when it stops (up to
        # -c of them), which made the figure per handshake ~10% too high.
        seq "$HANDSHAKES" | xargs -P4 -I{} curl -sk --http1.1 -o /dev/null -H "Connection: close" "https://127.0.0.1:$PORT/"
        n=$((HANDSHAKES + 1))
    elif [ "$load" = 1 ]; then
        n=$(wrk -t1 -c"$CONNS" -d"${SECS}s" "https://127.0.0.1:$PORT/" | awk '/requests in/ {print $1}')
        n=$((n + 1))
    fi
    kill -INT "$pid"; wait "$pid" 2>/dev/null || true # nginx under valgrind is slow to take SIGTERM
    total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    echo "$total $n"
}

PEERS=${PEERS:-nginx stream seed}
for CLOSE in 0 1; do
    export CLOSE
    [ $CLOSE = 1 ] && what="a full handshake per request" || what="keep-alive"
    printf "\n%s\n%-8s %14s %10s %12s   %s\n" "$what" peer instructions requests per_request "ratio to ${PEERS%% *}"
    BASE=
    for p in $PEERS; do
        set -- $(LOAD=0 run $p) $(LOAD=1 run $p) # base_instr base_n instr n
        per=$(( ($3 - $1) / ($4 - $2) ))
        [ -z "$BASE" ] && BASE=$per
        awk -v p=$p -v i="$3" -v n="$4" -v per="$per" -v b="$BASE" \
            'BEGIN {printf "%-8s %14d %10d %12d   %.2fx\n", p, i, n, per, per / b}'
    done
done
