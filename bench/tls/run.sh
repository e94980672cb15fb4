#!/bin/sh
# https hello world, keep-alive: luaio (streaming API and seed API) against nginx with ssl (one
# worker), Node.js https and Bun (Bun.serve with tls), the same ECDSA P-256 certificate, TLS 1.3.
# Each server runs pinned to core 0, the client on core 1; rounds are interleaved (the order of
# the peers rotates each round) and the medians reported as ratios to nginx. Then handshakes per
# second (a new connection per request, wrk, which resumes sessions; full handshakes only, with
# resumption off on both servers; resumed: openssl s_time -reuse) and the RSS per idle TLS
# connection (idle_rss.sh).
#   bench/tls/run.sh [rounds=3] [seconds=10] [connections=64] [idle_connections=5000]
# Also a connection per request on plain TCP (nginx and luaio without TLS), which separates the
# cost of a connection (accept, stream, http connection) from that of the TLS handshake.
# Needs: wrk nginx nodejs npm (scripts/setup.sh --bench); Bun comes from npm (the `bun` package)
# into bench/.npm, as in bench/fs.
set -eu
ROUNDS=${1:-3}; SECS=${2:-10}; CONNS=${3:-64}; IDLE=${4:-5000}
DIR=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$DIR/../.." && pwd)
LUAIO=${LUAIO:-$ROOT/build/luaio}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
ulimit -n 65536 2>/dev/null || true
sh "$DIR/certs.sh" "$TMP"
BUN=$ROOT/bench/.npm/node_modules/.bin/bun
[ -x "$BUN" ] || npm install --silent --no-audit --no-fund --prefix "$ROOT/bench/.npm" bun >/dev/null 2>&1 || true
mkdir -p "$TMP/logs"
sed -e s/PORT/29431/ -e "s/PLAIN/29436/" -e "s/FULL/29438/" -e "s|CERT|$TMP/cert.pem|" -e "s|KEY|$TMP/key.pem|" "$DIR/nginx_ssl.conf" > "$TMP/nginx.conf"

start() { # name -> sets PID and PORT
    case $1 in
    nginx) PORT=29431; taskset -c 0 nginx -p "$TMP" -c "$TMP/nginx.conf" 2>/dev/null & PID=$! ;;
    stream) PORT=29432; taskset -c 0 "$LUAIO" "$DIR/hello_stream.lua" $PORT "$TMP/cert.pem" "$TMP/key.pem" & PID=$! ;;
    seed) PORT=29433; taskset -c 0 "$LUAIO" "$DIR/hello_seed.lua" $PORT "$TMP/cert.pem" "$TMP/key.pem" & PID=$! ;;
    node) PORT=29434; taskset -c 0 node "$DIR/node_hello.js" $PORT "$TMP/cert.pem" "$TMP/key.pem" & PID=$! ;;
    bun) PORT=29435; taskset -c 0 "$BUN" "$DIR/bun_hello.js" $PORT "$TMP/cert.pem" "$TMP/key.pem" & PID=$! ;;
    esac
    i=0; until curl -sk -o /dev/null "https://127.0.0.1:$PORT/"; do i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.05; done
}
stop() { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system clock ticks
HZ=$(getconf CLK_TCK)
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

PEERS="nginx stream seed node"
[ -x "$BUN" ] && PEERS="$PEERS bun"
# A connection per request, nginx and luaio: on plain TCP (the cost of a connection without TLS),
# or with full handshakes only (no tickets, no session cache on either server, so nothing
# resumes). -> "conn/s us/conn"
per_conn() { # plain|full name
    case $1.$2 in
    plain.nginx) PORT=29436; taskset -c 0 nginx -p "$TMP" -c "$TMP/nginx.conf" 2>/dev/null & PID=$! ;;
    full.nginx) PORT=29438; taskset -c 0 nginx -p "$TMP" -c "$TMP/nginx.conf" 2>/dev/null & PID=$! ;;
    plain.stream) PORT=29437; taskset -c 0 "$LUAIO" "$DIR/hello_stream.lua" $PORT & PID=$! ;;
    full.stream) PORT=29439; taskset -c 0 "$LUAIO" "$DIR/hello_stream.lua" $PORT "$TMP/cert.pem" "$TMP/key.pem" full & PID=$! ;;
    esac
    scheme=http; [ $1 = full ] && scheme=https
    i=0; until curl -sk -o /dev/null "$scheme://127.0.0.1:$PORT/"; do i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.05; done
    taskset -c 1 wrk -t1 -c16 -d2s -H "Connection: close" "$scheme://127.0.0.1:$PORT/" >/dev/null # warm-up
    t0=$(cpu $PID)
    taskset -c 1 wrk -t1 -c16 -d"${SECS}s" -H "Connection: close" "$scheme://127.0.0.1:$PORT/" > "$TMP/wrk"
    t1=$(cpu $PID)
    stop
    awk -v a=$t0 -v b=$t1 -v hz=$HZ '/requests in/ {n=$1} /Requests\/sec/ {r=$2} END {printf "%s %.1f", r, (b-a)/hz*1e6/n}' "$TMP/wrk"
}
for r in $(seq "$ROUNDS"); do
    for p in nginx stream; do
        echo "$p $(per_conn plain $p)" >> "$TMP/plain"
        echo "$p $(per_conn full $p)" >> "$TMP/full"
    done
    # The order rotates: a peer is not always the one run after the same other.
    ORDER=$(echo $PEERS | awk -v r=$r '{for (i = 0; i < NF; i++) printf "%s ", $((i + r - 1) % NF + 1)}')
    for p in $ORDER; do
        start $p
        taskset -c 1 wrk -t1 -c"$CONNS" -d2s "https://127.0.0.1:$PORT/" >/dev/null # warm-up
        t0=$(cpu $PID)
        taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" "https://127.0.0.1:$PORT/" > "$TMP/wrk"
        t1=$(cpu $PID)
        rps=$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk")
        reqs=$(awk '/requests in/ {print $1}' "$TMP/wrk")
        us=$(awk -v a=$t0 -v b=$t1 -v n=$reqs -v hz=$HZ 'BEGIN {printf "%.2f", (b-a)/hz*1e6/n}')
        # A new connection per request (wrk): wrk resumes each connection's previous session
        # with the ticket it got (a resumed TLS 1.3 handshake, which still does a key exchange);
        # full handshakes only are measured by per_conn. Resumed ones one at a time: openssl
        # s_time -reuse (bounded by latency more than by the server's CPU; -www / reads the
        # reply, and with it the TLS 1.3 ticket).
        t0=$(cpu $PID)
        taskset -c 1 wrk -t1 -c16 -d"${SECS}s" -H "Connection: close" "https://127.0.0.1:$PORT/" > "$TMP/wrk"
        t1=$(cpu $PID)
        hs=$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk")
        hus=$(awk -v a=$t0 -v b=$t1 -v n=$(awk '/requests in/ {print $1}' "$TMP/wrk") -v hz=$HZ \
            'BEGIN {printf "%.1f", (b-a)/hz*1e6/n}')
        rs=$(taskset -c 1 openssl s_time -connect 127.0.0.1:$PORT -reuse -www / -time $((SECS/2)) 2>/dev/null \
            | awk '/connections in/ && /real/ {print $1/$4}' | tail -1)
        stop
        echo "$p $rps $us ${hs:-0} ${rs:-0} $hus" >> "$TMP/results"
        echo "round $r $p: $rps req/s, $us us CPU/req, $hs new connections/s ($hus us CPU each), $rs resumed/s" >&2
    done
done

# Server CPU per request and per handshake are the steadier figures on a shared machine.
printf "\n%-8s %10s %9s %10s %9s %10s   %s\n" peer req/s us/req conn/s us/conn resumed/s \
    "ratios to nginx (req/s, CPU/req, new conn/s, CPU/conn, resumed/s)"
for p in $PEERS; do
    rps=$(awk -v p=$p '$1==p {print $2}' "$TMP/results" | median)
    us=$(awk -v p=$p '$1==p {print $3}' "$TMP/results" | median)
    hs=$(awk -v p=$p '$1==p {print $4}' "$TMP/results" | median)
    rs=$(awk -v p=$p '$1==p {print $5}' "$TMP/results" | median)
    hus=$(awk -v p=$p '$1==p {print $6}' "$TMP/results" | median)
    [ $p = nginx ] && { B_RPS=$rps; B_US=$us; B_HS=$hs; B_RS=$rs; B_HUS=$hus; }
    awk -v p=$p -v r=$rps -v u=$us -v h=$hs -v s=$rs -v hu=$hus -v br=$B_RPS -v bu=$B_US -v bh=$B_HS -v bs=$B_RS \
        -v bhu=$B_HUS 'BEGIN {printf "%-8s %10.0f %9.2f %10.0f %9.1f %10.0f   %.2fx %.2fx %.2fx %.2fx %.2fx\n",
        p, r, u, h, hu, s, r/br, u/bu, h/bh, hu/bhu, s/bs}'
done
for kind in full plain; do
    [ $kind = full ] && printf "\nfull handshakes only (no resumption on either server): hs/s, us CPU per handshake\n"
    [ $kind = plain ] && printf "\nconnection per request, plain TCP (no TLS): conn/s, us CPU per connection\n"
    for p in nginx stream; do
        c=$(awk -v p=$p '$1==p {print $2}' "$TMP/$kind" | median)
        u=$(awk -v p=$p '$1==p {print $3}' "$TMP/$kind" | median)
        [ $p = nginx ] && { B_C=$c; B_U=$u; }
        awk -v p=$p -v c=$c -v u=$u -v bc=$B_C -v bu=$B_U 'BEGIN {printf "%-8s %10.0f %9.1f   %.2fx %.2fx\n", p, c, u, c/bc, u/bu}'
    done
done
printf "per round (full): "; awk '{printf "%s %s/s %sus; ", $1, $2, $3}' "$TMP/full"; echo
[ "$IDLE" -gt 0 ] && sh "$DIR/idle_rss.sh" "$IDLE"
