#!/usr/bin/env bash
# TCP echo benchmark of luaio against Node.js `net` and luv under LuaJIT, all on 127.0.0.1
# (method: bench/README.md): CONNS connections, SIZE-byte ping-pong, servers pinned to
# core 0, the epoll load client (bench/tcp_echo_client.c) pinned to core 1, rounds interleaved,
# a fresh server per round, medians and ratios printed.
#
#   bash bench/tcp_echo.sh [echo]   messages/s    env: LUAIO ROUNDS DURATION WARMUP CONNS SIZE
#   bash bench/tcp_echo.sh idle     RSS per idle connection          env: LUAIO IDLE (10000)
#
# Peers that are not installed (node, luajit + lua-luv) are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-echo}
LUAIO=${LUAIO:-build/luaio}
ROUNDS=${ROUNDS:-3}
# Not $SECONDS: bash sets that one itself (seconds since the shell started).
SECONDS_=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
SIZE=${SIZE:-64}
IDLE=${IDLE:-10000}
PORT=${PORT:-19701}

work=$(mktemp -d)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

client=$work/tcp_echo_client
cc -O2 -Wall -Wextra -Werror -o "$client" bench/tcp_echo_client.c

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

peers=(luaio)
command -v node >/dev/null && peers+=(node)
command -v luajit >/dev/null && luajit -e 'require "luv"' 2>/dev/null && peers+=(luv)

start_server() { # peer port
    case $1 in
    luaio) taskset -c 0 "$LUAIO" bench/tcp_echo_server.lua "$2" & ;;
    node) taskset -c 0 node bench/tcp_echo_node.js "$2" & ;;
    luv) taskset -c 0 luajit bench/tcp_echo_luv.lua "$2" & ;;
    esac
    server_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "server $1 did not start" >&2
    return 1
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

if [ "$MODE" = idle ]; then
    printf '%-8s %12s %12s %14s\n' peer "RSS before" "RSS after" "bytes/conn"
    for peer in "${peers[@]}"; do
        port=$((PORT++))
        start_server "$peer" "$port"
        sleep 0.3
        before=$(rss_kib "$server_pid")
        mkfifo "$work/hold"
        taskset -c 1 "$client" idle "$port" "$IDLE" <"$work/hold" >"$work/idle.out" &
        client_pid=$!
        exec 4>"$work/hold"
        for _ in $(seq 600); do grep -q ready "$work/idle.out" && break; sleep 0.1; done
        sleep 1
        after=$(rss_kib "$server_pid")
        n=$(awk '{print $2}' "$work/idle.out")
        exec 4>&-
        wait "$client_pid" || true
        rm -f "$work/hold"
        stop_server
        printf '%-8s %9s KiB %9s KiB %14.0f   (%s connections)\n' "$peer" "$before" "$after" \
            "$(echo "($after - $before) * 1024 / ${n:-1}" | bc -l)" "$n"
    done
    exit 0
fi

for round in $(seq "$ROUNDS"); do
    for peer in "${peers[@]}"; do
        port=$((PORT++))
        start_server "$peer" "$port"
        # Server CPU time over the whole client run (warm-up included), in clock ticks.
        t0=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
        out=$(taskset -c 1 "$client" echo "$port" "$CONNS" "$SIZE" "$WARMUP" "$SECONDS_")
        t1=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
        echo "round $round $peer $out ticks=$((t1 - t0))" | tee -a "$work/results" >&2
        stop_server
    done
done

python3 - "$work/results" "$(getconf CLK_TCK)" "$WARMUP" "$SECONDS_" "${peers[@]}" <<'PY'
import statistics, sys
hz, warmup, secs = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    kv = dict(x.split("=") for x in f[3:])
    rate = float(kv["rate"])
    # CPU per message: ticks over warm-up + measured time, messages scaled to that time.
    cpu_us = int(kv["ticks"]) / hz * 1e6 / max(rate * (warmup + secs), 1)
    rows.setdefault(f[2], []).append((rate, int(kv["p99_us"]), cpu_us))
peers = sys.argv[5:]
print(f"{'peer':<8} {'messages/s':>12} {'best':>10} {'p99 us':>8} {'server CPU us/msg':>18}   (median of {len(rows[peers[0]])} rounds)")
med, best, cpu = {}, {}, {}
for peer in peers:
    r = rows[peer]
    med[peer] = statistics.median(x[0] for x in r)
    best[peer] = max(x[0] for x in r)
    cpu[peer] = statistics.median(x[2] for x in r)
    print(f"{peer:<8} {med[peer]:>12,.0f} {best[peer]:>10,.0f} {statistics.median(x[1] for x in r):>8.0f} {cpu[peer]:>18.2f}")
for peer in peers:
    if peer != "luaio":
        print(f"luaio / {peer}: {med['luaio'] / med[peer]:.2f}x messages/s (best rounds {best['luaio'] / best[peer]:.2f}x),"
              f" {cpu[peer] / cpu['luaio']:.2f}x less CPU per message")
PY
