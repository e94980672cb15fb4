#!/bin/sh
# RSS per idle TLS keep-alive connection: N https connections (one GET each, then idle) held
# open against luaio's https server and nginx with ssl (one worker, the same ECDSA P-256
# certificate), in the same run; the server's RSS with them minus before, per connection.
#   bench/tls/idle_rss.sh [connections=5000]
# Needs: nginx (scripts/setup.sh --bench).
set -eu
N=${1:-5000}
DIR=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$DIR/../.." && pwd)
LUAIO=${LUAIO:-$ROOT/build/luaio}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
ulimit -n 65536 2>/dev/null || true
sh "$DIR/certs.sh" "$TMP"
mkdir -p "$TMP/logs"
sed -e s/PORT/29441/ -e s/PLAIN/29442/ -e s/FULL/29443/ -e "s|CERT|$TMP/cert.pem|" -e "s|KEY|$TMP/key.pem|" "$DIR/nginx_ssl.conf" > "$TMP/nginx.conf"

start() { # name -> sets PID and PORT
    case $1 in
    luaio) PORT=29442; taskset -c 0 "$LUAIO" "$DIR/hello_stream.lua" $PORT "$TMP/cert.pem" "$TMP/key.pem" & PID=$! ;;
    nginx) PORT=29441; taskset -c 0 nginx -p "$TMP" -c "$TMP/nginx.conf" 2>/dev/null & PID=$! ;;
    esac
    i=0; until curl -sk -o /dev/null "https://127.0.0.1:$PORT/"; do i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.05; done
}
stop() { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; }

for p in ${PEERS:-luaio nginx}; do
    start $p; rm -f "$TMP/idle"
    before=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
    taskset -c 1 "$LUAIO" "$DIR/idle_clients.lua" $PORT "$N" 4000 > "$TMP/idle" &
    CPID=$!
    i=0; until grep -q connected "$TMP/idle" 2>/dev/null; do i=$((i+1)); [ $i -gt 2400 ] && break; sleep 0.05; done
    sleep 0.5
    after=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
    n=$(awk '{print $2}' "$TMP/idle")
    wait $CPID || true
    stop
    per=$(awk -v a=$after -v b=$before -v n=$n 'BEGIN {printf "%.0f", (a-b)*1024/n}')
    echo "$p $per" >> "$TMP/results"
    echo "$p: RSS per idle TLS keep-alive connection: $per bytes ($n connections, $before -> $after KiB);" \
        "the luaio client's: $(awk '{print $3}' "$TMP/idle") bytes per connection"
done
awk '$1=="luaio" {l=$2} $1=="nginx" {n=$2} END {if (n > 0) printf "luaio/nginx: %.2fx\n", l/n}' "$TMP/results"
