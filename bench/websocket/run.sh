#!/usr/bin/env bash
# WebSocket benchmarks of luaio against Bun (Bun.serve, uWebSockets) and Node.js with the npm `ws`
# library, on 127.0.0.1 (method: bench/README.md): servers pinned to core 0, the epoll
# load client (bench/websocket/ws_client.c, masked frames) pinned to core 1, rounds interleaved,
# a fresh server per round, medians and same-run ratios printed.
#
#   bash bench/websocket/run.sh echo        messages/s, CONNS (64) connections, SIZE (64) bytes, one in flight each
#   bash bench/websocket/run.sh broadcast   deliveries/s, SUBS (1000) subscribers, one publisher, SIZE bytes
#   bash bench/websocket/run.sh idle        RSS per idle WebSocket connection, IDLE (5000) connections
#   env: LUAIO ROUNDS (3) DURATION (5) WARMUP (1) CONNS SUBS SIZE IDLE PREFIX PEERS (a subset)
#
# Two luaio peers: "luaio" serves /echo with handlers (ws:handle: a task per message batch, none
# while idle), "luaio-task" with a task per connection looping over ws:messages().
#
# Bun and ws come from the npm registry into a bench-local prefix (PREFIX, default
# bench/results/websocket-peers), installed on first use; a peer that cannot be installed is skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODE=${1:-echo}
LUAIO=${LUAIO:-build/luaio}
ROUNDS=${ROUNDS:-3}
SECONDS_=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
SUBS=${SUBS:-1000}
SIZE=${SIZE:-64}
IDLE=${IDLE:-5000}
PORT=${PORT:-24801}
PREFIX=${PREFIX:-bench/results/websocket-peers}

work=$(mktemp -d)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

client=$work/ws_client
cc -O2 -Wall -Wextra -Werror -o "$client" bench/websocket/ws_client.c
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ ! -x "$PREFIX/node_modules/.bin/bun" ] || [ ! -d "$PREFIX/node_modules/ws" ]; then
    mkdir -p "$PREFIX"
    npm install --prefix "$PREFIX" --no-audit --no-fund --silent bun ws >&2 || echo "npm install failed: peers skipped" >&2
fi
peers=(luaio)
[ "$MODE" != broadcast ] && peers+=(luaio-task)
[ -x "$PREFIX/node_modules/.bin/bun" ] && "$PREFIX/node_modules/.bin/bun" --version >/dev/null 2>&1 && peers+=(bun)
command -v node >/dev/null && [ -d "$PREFIX/node_modules/ws" ] && peers+=(node)
[ -n "${PEERS:-}" ] && read -r -a peers <<<"$PEERS" # e.g. PEERS="luaio bun"

# The next port nobody listens on (other programs may hold some).
next_port() {
    while (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done
    port=$PORT
    PORT=$((PORT + 1))
}

start_server() { # peer port
    case $1 in
    luaio | luaio-task) taskset -c 0 "$LUAIO" bench/websocket/server.lua "$2" & ;;
    bun) taskset -c 0 "$PREFIX/node_modules/.bin/bun" bench/websocket/server_bun.js "$2" & ;;
    node) NODE_PATH="$PREFIX/node_modules" taskset -c 0 node bench/websocket/server_node.js "$2" & ;;
    esac
    server_pid=$!
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "server $1 did not start" >&2
    return 1
}

echo_path() { [ "$1" = luaio-task ] && echo /echo-task || echo /echo; }

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

# The server's RSS: of the process and its children (Bun's bin may be a wrapper).
rss_kib() { ps -o rss= --ppid "$1" -p "$1" | awk '{s += $1} END {print s}'; }

if [ "$MODE" = idle ]; then
    printf '%-10s %12s %12s %14s\n' peer "RSS before" "RSS after" "bytes/conn"
    for peer in "${peers[@]}"; do
        next_port
        start_server "$peer" "$port"
        # One connection first, then closed: what a server loads on its first WebSocket (luaio
        # maps libcrypto for the handshake's SHA-1 then) is not counted per connection.
        taskset -c 1 "$client" idle "$port" 1 </dev/null >/dev/null
        sleep 0.5
        before=$(rss_kib "$server_pid")
        mkfifo "$work/hold"
        ECHO_PATH=$(echo_path "$peer") taskset -c 1 "$client" idle "$port" "$IDLE" <"$work/hold" >"$work/idle.out" &
        client_pid=$!
        exec 4>"$work/hold"
        for _ in $(seq 1200); do grep -q ready "$work/idle.out" && break; sleep 0.1; done
        sleep 1
        after=$(rss_kib "$server_pid")
        n=$(awk '{print $2}' "$work/idle.out")
        exec 4>&-
        wait "$client_pid" || true
        rm -f "$work/hold"
        stop_server
        printf '%-10s %9s KiB %9s KiB %14.0f   (%s connections)\n' "$peer" "$before" "$after" \
            "$(echo "($after - $before) * 1024 / ${n:-1}" | bc -l)" "$n"
    done
    exit 0
fi

for round in $(seq "$ROUNDS"); do
    for peer in "${peers[@]}"; do
        next_port
        start_server "$peer" "$port"
        read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$server_pid/stat")
        if [ "$MODE" = broadcast ]; then
            out=$(taskset -c 1 "$client" broadcast "$port" "$SUBS" "$SIZE" "$WARMUP" "$SECONDS_")
        else
            out=$(ECHO_PATH=$(echo_path "$peer") taskset -c 1 "$client" echo "$port" "$CONNS" "$SIZE" "$WARMUP" "$SECONDS_")
        fi
        read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$server_pid/stat")
        echo "round $round $peer $out uticks=$((u1 - u0)) sticks=$((s1 - s0))" | tee -a "$work/results" >&2
        stop_server
    done
done

python3 - "$work/results" "$(getconf CLK_TCK)" "$WARMUP" "$SECONDS_" "$MODE" "${peers[@]}" <<'PY'
import statistics, sys
hz, warmup, secs, mode = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    kv = dict(x.split("=") for x in f[3:])
    rate = float(kv["rate"])
    # CPU per message (user and system): ticks over warm-up + measured time, messages scaled to
    # that time.
    per = lambda t: int(kv[t]) / hz * 1e6 / max(rate * (warmup + secs), 1)
    rows.setdefault(f[2], []).append((rate, per("uticks") + per("sticks"), per("uticks"), per("sticks")))
peers = sys.argv[6:]
unit = "deliveries/s" if mode == "broadcast" else "messages/s"
print(f"{'peer':<10} {unit:>14} {'best':>12} {'server CPU us/msg':>18} {'user':>6} {'system':>6}   ({mode}, median of {len(rows[peers[0]])} rounds)")
med, best, cpu = {}, {}, {}
for peer in peers:
    r = rows[peer]
    med[peer] = statistics.median(x[0] for x in r)
    best[peer] = max(x[0] for x in r)
    cpu[peer] = statistics.median(x[1] for x in r)
    user, system = statistics.median(x[2] for x in r), statistics.median(x[3] for x in r)
    print(f"{peer:<10} {med[peer]:>14,.0f} {best[peer]:>12,.0f} {cpu[peer]:>18.2f} {user:>6.2f} {system:>6.2f}")
for peer in peers:
    if peer != "luaio":
        print(f"luaio / {peer}: {med['luaio'] / med[peer]:.2f}x {unit} (best rounds {best['luaio'] / best[peer]:.2f}x),"
              f" {cpu[peer] / cpu['luaio']:.2f}x less CPU per message")
PY
