#!/bin/sh
# MySQL client throughput: 32 concurrent tasks running `select ? as v` against one local MariaDB
# for N seconds: luaio (one connection per task; prepared statements kept per connection, and the
# text protocol) against Node's `mysql2` (execute: prepared, query: text). The server runs pinned
# to core 0, the client to core 1; rounds are interleaved and medians reported with the client's
# CPU per query, as ratios to mysql2's execute.
#   bench/mysql/run.sh [rounds=3] [seconds=10] [tasks=32]
# Needs: mariadb-server, nodejs and npm (Debian); mysql2 is installed from npm into bench/.npm by
# this script. Run as root (the server runs as the mysql user) or as mysql.
set -eu
ROUNDS=${1:-3}; SECS=${2:-10}; TASKS=${3:-32}
DIR=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$DIR/../.." && pwd)
LUAIO=${LUAIO:-$ROOT/build/luaio}
NPM=$ROOT/bench/.npm
PORT=18306
[ -d "$NPM/node_modules/mysql2" ] || npm install --prefix "$NPM" --no-audit --no-fund mysql2 >&2

TMP=$(mktemp -d /tmp/luaio-mysqlbench.XXXXXX)
AS=""; [ "$(id -u)" = 0 ] && AS="runuser -u mysql --"
cat > "$TMP/init.sql" <<SQL
CREATE USER IF NOT EXISTS 'bench'@'127.0.0.1' IDENTIFIED BY 'bench';
GRANT ALL ON *.* TO 'bench'@'127.0.0.1';
SQL
chown -R mysql "$TMP" 2>/dev/null || true
$AS mariadb-install-db --no-defaults --datadir="$TMP/data" --auth-root-authentication-method=normal \
    --skip-test-db --skip-name-resolve >/dev/null 2>&1
taskset -c 0 $AS mariadbd --no-defaults --datadir="$TMP/data" --port=$PORT --bind-address=127.0.0.1 \
    --socket="$TMP/sock" --pid-file="$TMP/pid" --log-error="$TMP/log" --init-file="$TMP/init.sql" \
    --skip-name-resolve --skip-log-bin --max-connections=200 &
trap 'kill $(cat "$TMP/pid" 2>/dev/null) 2>/dev/null; sleep 1; rm -rf "$TMP"' EXIT
i=0; until mariadb -h127.0.0.1 -P$PORT -ubench -pbench -e 'select 1' >/dev/null 2>&1; do
    i=$((i+1)); [ $i -gt 300 ] && { cat "$TMP/log"; exit 1; }; sleep 0.1; done
URL="mysql://bench:bench@127.0.0.1:$PORT/mysql"

run() { # peer -> prints "queries cpu_seconds"
    case $1 in
    luaio) set -- "$LUAIO" "$DIR/mysql_bench.lua" "$URL" "$TASKS" "$SECS" prepared ;;
    luaio_text) set -- "$LUAIO" "$DIR/mysql_bench.lua" "$URL" "$TASKS" "$SECS" text ;;
    mysql2) set -- env NODE_PATH="$NPM/node_modules" node "$DIR/node_mysql2.js" "$URL" "$TASKS" "$SECS" execute ;;
    mysql2_query) set -- env NODE_PATH="$NPM/node_modules" node "$DIR/node_mysql2.js" "$URL" "$TASKS" "$SECS" query ;;
    esac
    /usr/bin/time -f "%U %S" -o "$TMP/time" taskset -c 1 "$@" > "$TMP/out"
    q=$(tail -1 "$TMP/out"); set -- $(cat "$TMP/time")
    echo "$q $(awk -v u="$1" -v s="$2" 'BEGIN {print u + s}')"
}

PEERS="mysql2 luaio mysql2_query luaio_text"
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
base_q=$(awk '$1=="mysql2" {print $2}' "$TMP/results" | median)
base_u=$(awk '$1=="mysql2" {print $3}' "$TMP/results" | median)
printf "\n%-14s %10s %14s   %s\n" peer queries/s client_us/q "ratios to mysql2 execute (queries/s, client CPU/query)"
for p in $PEERS; do
    q=$(awk -v p=$p '$1==p {print $2}' "$TMP/results" | median)
    u=$(awk -v p=$p '$1==p {print $3}' "$TMP/results" | median)
    printf "%-14s %10s %14s   %.2f %.2f\n" $p "$q" "$u" "$(awk -v a="$q" -v b="$base_q" 'BEGIN {print a / b}')" \
        "$(awk -v a="$u" -v b="$base_u" 'BEGIN {print a / b}')"
done
