#!/bin/sh
# PostgreSQL client throughput: 32 concurrent tasks running `select $1::int` against one local
# PostgreSQL 15 for N seconds: luaio (one connection per task; unnamed statements, and prepared
# ones), pgbench with a one-line script (-M extended and -M prepared: the C ceiling), Node's
# `pg` and Bun.sql. The server runs pinned to core 0, the client to core 1; rounds are
# interleaved and medians reported with the client's CPU per query, as ratios to Bun.sql.
#   bench/postgres/run.sh [rounds=3] [seconds=10] [tasks=32]
# Needs: postgresql (15), nodejs and npm (Debian); pg and bun are installed from npm into
# bench/.npm by this script. Run as root (the server runs as the postgres user) or as postgres.
set -eu
ROUNDS=${1:-3}; SECS=${2:-10}; TASKS=${3:-32}
DIR=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$DIR/../.." && pwd)
LUAIO=${LUAIO:-$ROOT/build/luaio}
BIN=/usr/lib/postgresql/15/bin
NPM=$ROOT/bench/.npm
PORT=18301
[ -d "$NPM/node_modules/pg" ] && [ -x "$NPM/node_modules/.bin/bun" ] ||
    npm install --prefix "$NPM" --no-audit --no-fund pg bun >&2
BUN=$NPM/node_modules/.bin/bun

TMP=$(mktemp -d /tmp/luaio-pgbench.XXXXXX)
AS=""; [ "$(id -u)" = 0 ] && AS="setpriv --reuid=postgres --regid=postgres --init-groups"
chown postgres "$TMP" 2>/dev/null || true
$AS "$BIN/initdb" -D "$TMP/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
taskset -c 0 $AS "$BIN/postgres" -D "$TMP/data" -p $PORT -h 127.0.0.1 -k "$TMP" -c max_connections=100 \
    -c fsync=off -c synchronous_commit=off -c shared_buffers=64MB >"$TMP/log" 2>&1 &
SERVER=$!
trap 'kill -INT $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$TMP"' EXIT
i=0; until "$BIN/pg_isready" -q -h 127.0.0.1 -p $PORT; do i=$((i+1)); [ $i -gt 200 ] && exit 1; sleep 0.05; done
URL="postgresql://postgres@127.0.0.1:$PORT/postgres"
printf '\\set x random(1, 1000000)\nselect :x::int;\n' > "$TMP/one.sql"

run() { # peer -> prints "queries cpu_seconds"
    case $1 in
    luaio) set -- "$LUAIO" "$DIR/pg_bench.lua" "$URL" "$TASKS" "$SECS" query ;;
    luaio_prepared) set -- "$LUAIO" "$DIR/pg_bench.lua" "$URL" "$TASKS" "$SECS" prepared ;;
    node_pg) set -- env NODE_PATH="$NPM/node_modules" node "$DIR/node_pg.js" "$URL" "$TASKS" "$SECS" ;;
    bun_sql) set -- "$BUN" "$DIR/bun_sql.js" "$URL" "$TASKS" "$SECS" ;;
    pgbench|pgbench_prepared) m=extended; [ $1 = pgbench_prepared ] && m=prepared
        set -- sh -c "pgbench -n -h 127.0.0.1 -p $PORT -U postgres -c $TASKS -j 1 -T $SECS -M $m -f $TMP/one.sql postgres | awk '/^number of transactions actually processed/ {print \$NF}'" ;;
    esac
    /usr/bin/time -f "%U %S" -o "$TMP/time" taskset -c 1 "$@" > "$TMP/out"
    q=$(tail -1 "$TMP/out"); set -- $(cat "$TMP/time")
    echo "$q $(awk -v u="$1" -v s="$2" 'BEGIN {print u + s}')"
}

PEERS="bun_sql luaio luaio_prepared node_pg pgbench pgbench_prepared"
for r in $(seq "$ROUNDS"); do
    for p in $PEERS; do
        set -- $(run $p)
        qps=$(awk -v q="$1" -v s="$SECS" 'BEGIN {printf "%.0f", q / s}')
        us=$(awk -v q="$1" -v c="$2" 'BEGIN {printf "%.2f", c * 1e6 / q}')
        echo "$p $qps $us" >> "$TMP/results"
        echo "round $r $p: $qps queries/s, client $us us CPU/query" >&2
    done
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
base_q=$(awk '$1=="bun_sql" {print $2}' "$TMP/results" | median)
base_u=$(awk '$1=="bun_sql" {print $3}' "$TMP/results" | median)
printf "\n%-17s %10s %14s   %s\n" peer queries/s client_us/q "ratios to Bun.sql (queries/s, client CPU/query)"
for p in $PEERS; do
    q=$(awk -v p=$p '$1==p {print $2}' "$TMP/results" | median)
    u=$(awk -v p=$p '$1==p {print $3}' "$TMP/results" | median)
    printf "%-17s %10s %14s   %.2f %.2f\n" $p "$q" "$u" "$(awk -v a="$q" -v b="$base_q" 'BEGIN {print a / b}')" \
        "$(awk -v a="$u" -v b="$base_u" 'BEGIN {print a / b}')"
done
