#!/usr/bin/env bash
# Start-up benchmark: time and peak RSS of `luaio -e ''` against `luajit -e ''` and
# `node -e ''` (method: bench/README.md). Prints medians and ratios.
#   bash bench/startup.sh [path/to/luaio] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
LUAIO=${1:-build/luaio}
RUNS=${2:-200}
command -v hyperfine >/dev/null || { echo "needs hyperfine (bash scripts/setup.sh --bench)"; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
peers=("$LUAIO -e ''")
command -v luajit >/dev/null && peers+=("luajit -e ''")
command -v node >/dev/null && peers+=("node -e ''")

hyperfine -N --warmup 20 --runs "$RUNS" --export-json "$out/t.json" "${peers[@]}" >/dev/null 2>&1

rss() { # median of 21 runs of the peak RSS, KiB
    for _ in $(seq 21); do /usr/bin/time -f %M sh -c "exec $1" 2>&1 >/dev/null | tail -1; done | sort -n | sed -n 11p
}

python3 - "$out/t.json" "${peers[@]}" <<PY
import json, sys, subprocess
data = json.load(open(sys.argv[1]))["results"]
peers = sys.argv[2:]
rows = []
for r, cmd in zip(data, peers):
    kib = int(subprocess.run(["bash", "-c", "for i in \$(seq 21); do /usr/bin/time -f %M sh -c \"exec \$0\" 2>&1 >/dev/null | tail -1; done | sort -n | sed -n 11p", cmd], capture_output=True, text=True).stdout.strip() or 0)
    rows.append((cmd, r["median"] * 1000, kib / 1024))
base = rows[0]
print(f"{'command':<28} {'median ms':>10} {'peak RSS MiB':>13} {'time vs luaio':>14}")
for cmd, ms, mib in rows:
    print(f"{cmd:<28} {ms:>10.2f} {mib:>13.1f} {ms / base[1]:>13.2f}x")
for cmd, ms, mib in rows[1:]:
    print(f"luaio / {cmd.split()[0]}: time {base[1] / ms:.2f}x, RSS {base[2] / mib:.2f}x")
PY
