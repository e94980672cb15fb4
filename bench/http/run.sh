#!/bin/sh
# HTTP/1.1 hello world: luaio (streaming API and seed API) against nginx+Lua, plain nginx and
# Node.js. Each server runs pinned to core 0, wrk on core 1; rounds are interleaved and the
# medians reported, as ratios to nginx+Lua. Then the RSS per idle keep-alive connection.
#   bench/http/run.sh [rounds=3] [seconds=10] [connections=64] [idle_connections=5000]
#   (rounds=0: only the idle-connection memory; idle_connections=0: none of it)
# Needs: wrk nginx libnginx-mod-http-lua nodejs (Debian).
set -eu
ROUNDS=${1:-3}; SECS=${2:-10}; CONNS=${3:-64}; IDLE=${4:-5000}
DIR=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$DIR/../.." && pwd)
LUAIO=${LUAIO:-$ROOT/build/luaio}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
ulimit -n 65536 2>/dev/null || true
sed -e s/PORT_LUA/18201/ -e s/PORT_PLAIN/18202/ "$DIR/nginx_lua.conf" > "$TMP/nginx.conf"
mkdir -p "$TMP/logs"

start() { # name -> sets PID and PORT
    case $1 in
    stream) PORT=18203; taskset -c 0 "$LUAIO" "$DIR/hello_stream.lua" $PORT & PID=$! ;;
    seed) PORT=18204; taskset -c 0 "$LUAIO" "$DIR/hello_seed.lua" $PORT & PID=$! ;;
    nginx_lua|nginx) PORT=18201; [ $1 = nginx ] && PORT=18202
        taskset -c 0 nginx -p "$TMP" -c "$TMP/nginx.conf" 2>/dev/null & PID=$! ;;
    node) PORT=18205; taskset -c 0 node "$DIR/node_hello.js" $PORT & PID=$! ;;
    esac
    i=0; until curl -s -o /dev/null "http://127.0.0.1:$PORT/"; do i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.05; done
}
stop() { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; }
cpu() { awk '{print $14, $15}' "/proc/$1/stat"; } # user and system clock ticks
HZ=$(getconf CLK_TCK)

PEERS="nginx_lua stream seed nginx node"
for r in $(seq "$ROUNDS"); do
    for p in $PEERS; do
        start $p
        taskset -c 1 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$PORT/" >/dev/null # warm-up
        t0=$(cpu $PID)
        taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$PORT/" > "$TMP/wrk"
        t1=$(cpu $PID)
        set -- $t0 $t1 # user0 sys0 user1 sys1
        rss=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)
        reqs=$(awk '/requests in/ {print $1}' "$TMP/wrk")
        rps=$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk")
        p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' "$TMP/wrk")
        us=$(awk -v a="$(($1 + $2))" -v b="$(($3 + $4))" -v n="$reqs" -v hz="$HZ" 'BEGIN {printf "%.2f", (b - a) / hz * 1e6 / n}')
        user=$(awk -v a="$1" -v b="$3" -v n="$reqs" -v hz="$HZ" 'BEGIN {printf "%.2f", (b - a) / hz * 1e6 / n}')
        echo "$p $rps $p99 $us $rss $user" >> "$TMP/results"
        echo "round $r $p: $rps req/s, p99 $p99 ms, $us us/req (user $user), RSS $rss KiB" >&2
        stop
    done
done

if [ "$ROUNDS" -gt 0 ]; then
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
printf "\n%-10s %10s %8s %9s %9s %9s   %s\n" peer req/s p99_ms us/req user_us RSS_KiB \
    "ratios to nginx+Lua (req/s, p99, us/req, user us/req)"
for p in $PEERS; do
    rps=$(awk -v p=$p '$1==p {print $2}' "$TMP/results" | median)
    p99=$(awk -v p=$p '$1==p {print $3}' "$TMP/results" | median)
    us=$(awk -v p=$p '$1==p {print $4}' "$TMP/results" | median)
    rss=$(awk -v p=$p '$1==p {print $5}' "$TMP/results" | median)
    user=$(awk -v p=$p '$1==p {print $6}' "$TMP/results" | median)
    [ $p = nginx_lua ] && { B_RPS=$rps; B_P99=$p99; B_US=$us; B_USER=$user; }
    awk -v p=$p -v r=$rps -v l=$p99 -v u=$us -v m=$rss -v s=$user -v br=$B_RPS -v bl=$B_P99 -v bu=$B_US -v bs=$B_USER \
        'BEGIN {printf "%-10s %10.0f %8.2f %9.2f %9.2f %9d   %.2fx %.2fx %.2fx %.2fx\n", p, r, l, u, s, m, r/br, l/bl, u/bu, s/bs}'
done
echo "(us/req: user + system CPU of the server per request; most of it is the kernel's loopback TCP work,"
echo " the same recv + write per request for every server; bench/http/instructions.sh counts user-space work)"

fi

# RSS per idle keep-alive connection: server RSS with IDLE idle connections minus before.
[ "$IDLE" -gt 0 ] || exit 0
echo >&2
for p in stream nginx_lua node; do
    start $p
    before=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
    taskset -c 1 "$LUAIO" "$DIR/idle_clients.lua" $PORT "$IDLE" 4000 > "$TMP/idle" &
    CPID=$!
    i=0; until grep -q connected "$TMP/idle" 2>/dev/null; do i=$((i+1)); [ $i -gt 600 ] && break; sleep 0.05; done
    sleep 0.5
    after=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
    n=$(awk '{print $2}' "$TMP/idle")
    awk -v p=$p -v a="$after" -v b="$before" -v n="$n" \
        'BEGIN {printf "%-10s RSS per idle keep-alive connection: %.0f bytes (%d connections)\n", p, (a-b)*1024/n, n}'
    wait $CPID 2>/dev/null || true
    stop
done
