#!/usr/bin/env bash
# Redis benchmark: 64 tasks doing GET for 10 s against one redis-server (started here on a free
# port, temporary directory, stopped by PID), ops/s and client CPU per op, for luaio (one shared
# connection; one connection per task; pipelines of 16), redis-benchmark -c 64 (the C ceiling;
# -P 16 pipelined), Node with ioredis and Bun's Bun.redis (both installed here with npm into
# bench/.npm, not at spec time). Prints each result and the ratios.
#   bash bench/redis/run.sh [path/to/luaio] [seconds] [rounds]
set -euo pipefail
cd "$(dirname "$0")/../.."
LUAIO=${1:-build/luaio}
SECS=${2:-10}
ROUNDS=${3:-3}
TASKS=64
DEPTH=16

NPM=bench/.npm
if [ ! -d "$NPM/node_modules/ioredis" ] || [ ! -d "$NPM/node_modules/bun" ]; then
    npm install --silent --no-audit --no-fund --prefix "$NPM" ioredis bun >/dev/null
fi
export NODE_PATH="$PWD/$NPM/node_modules"
BUN=$(ls "$NPM"/node_modules/bun/bin/bun.exe "$NPM"/node_modules/.bin/bun 2>/dev/null | head -1 || true)

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" --daemonize no \
    --logfile "$dir/log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done

declare -A OPS CPU
# Each measurement appends "ops cpu" to RES[name]; the report takes the median round, since a
# shared machine's load changes between runs (the rounds alternate the clients).
declare -A RES
run() { # name command...
    local name=$1; shift
    local out
    out=$("$@" 2>&1 | grep 'ops/s' | tail -1) || true
    RES[$name]+="$(echo "$out" | awk '{print $2, $4}');"
}
# redis-benchmark: requests per second; CPU per op from its user+sys time.
rb() { # name extra-args...
    local name=$1; shift
    local n=$((SECS * 150000))
    local out cpu rps
    out=$( { /usr/bin/time -f 'cpu %U %S' redis-benchmark -p "$port" -c $TASKS -n $n -t get -q "$@"; } 2>&1 )
    rps=$(echo "$out" | tr '\r' '\n' | grep 'requests per second' | tail -1 | awk '{print $2}')
    cpu=$(echo "$out" | awk '/^cpu/ {print ($2 + $3)}')
    RES[$name]+="${rps%.*} $(python3 -c "print(f'{$cpu * 1e6 / $n:.3f}')");"
}

redis-cli -p "$port" set key xxx >/dev/null
NAMES=(redis-benchmark luaio-shared luaio-conns node-ioredis node-ioredis-auto node-ioredis-conns)
[ -n "$BUN" ] && NAMES+=(bun-redis bun-redis-conns)
NAMES+=(redis-benchmark-P16 luaio-pipeline)
[ -n "$BUN" ] && NAMES+=(bun-redis-pipeline)
NAMES+=(node-ioredis-pipeline)
echo "GET, $TASKS concurrent, ${SECS}s each, median of $ROUNDS rounds (pipelined: $DEPTH per round trip)"
for round in $(seq "$ROUNDS"); do
    rb redis-benchmark
    run luaio-shared "$LUAIO" bench/redis/get.lua "$port" $TASKS "$SECS" shared
    run luaio-conns "$LUAIO" bench/redis/get.lua "$port" $TASKS "$SECS" conns
    run node-ioredis node bench/redis/ioredis.js "$port" $TASKS "$SECS" shared
    run node-ioredis-auto node bench/redis/ioredis.js "$port" $TASKS "$SECS" auto
    run node-ioredis-conns node bench/redis/ioredis.js "$port" $TASKS "$SECS" conns
    if [ -n "$BUN" ]; then
        run bun-redis "$BUN" bench/redis/bun_redis.js "$port" $TASKS "$SECS" shared
        run bun-redis-conns "$BUN" bench/redis/bun_redis.js "$port" $TASKS "$SECS" conns
    fi
    rb redis-benchmark-P16 -P $DEPTH
    # luaio and Bun right after each other: the ratio of a round is of the same moment's load.
    run luaio-pipeline "$LUAIO" bench/redis/get.lua "$port" $TASKS "$SECS" pipeline $DEPTH
    [ -n "$BUN" ] && run bun-redis-pipeline "$BUN" bench/redis/bun_redis.js "$port" $TASKS "$SECS" pipeline $DEPTH
    run node-ioredis-pipeline node bench/redis/ioredis.js "$port" $TASKS "$SECS" pipeline $DEPTH
    echo "round $round done" >&2
done
for name in "${NAMES[@]}"; do
    read -r OPS[$name] CPU[$name] < <(python3 -c "
rows = [r.split() for r in '${RES[$name]:-}'.split(';') if len(r.split()) == 2]
rows.sort(key=lambda r: float(r[0]))
print(*rows[len(rows) // 2] if rows else ('?', '?'))")
    printf '%-24s %10s ops/s %8s us CPU/op   (rounds: %s)\n' "$name" "${OPS[$name]}" "${CPU[$name]}" "${RES[$name]}"
done

ratio() { python3 -c "a, b = '${OPS[$1]:-?}', '${OPS[$2]:-?}'; print(f'{float(a) / float(b):.2f}x' if '?' not in (a, b) else '?')"; }
echo
echo "luaio-shared / redis-benchmark:      $(ratio luaio-shared redis-benchmark)"
echo "luaio-shared / node-ioredis:         $(ratio luaio-shared node-ioredis)"
echo "luaio-shared / node-ioredis-auto:    $(ratio luaio-shared node-ioredis-auto)"
echo "luaio-conns / node-ioredis-conns:    $(ratio luaio-conns node-ioredis-conns)"
echo "luaio-shared / bun-redis:            $(ratio luaio-shared bun-redis)"
echo "luaio-conns / bun-redis-conns:       $(ratio luaio-conns bun-redis-conns)"
echo "luaio-pipeline / redis-benchmark-P16: $(ratio luaio-pipeline redis-benchmark-P16)"
echo "luaio-pipeline / node-ioredis-pipeline: $(ratio luaio-pipeline node-ioredis-pipeline)"
echo "luaio-pipeline / bun-redis-pipeline: $(ratio luaio-pipeline bun-redis-pipeline)"
# The same ratios round by round (each round's two runs are adjacent), and their median.
rounds() {
    python3 -c "
a = [r.split() for r in '${RES[$1]:-}'.split(';') if len(r.split()) == 2]
b = [r.split() for r in '${RES[$2]:-}'.split(';') if len(r.split()) == 2]
q = sorted(float(x[0]) / float(y[0]) for x, y in zip(a, b))
print(' '.join(f'{v:.2f}' for v in q), ' median', f'{q[len(q) // 2]:.2f}x' if q else '?')"
}
echo "per round, luaio-shared / bun-redis:          $(rounds luaio-shared bun-redis)"
echo "per round, luaio-pipeline / bun-redis-pipeline: $(rounds luaio-pipeline bun-redis-pipeline)"
