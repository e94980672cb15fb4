#!/bin/sh
# fs benchmark, same run: luaio's fs against Node's fs.promises and Bun (files in page cache).
# Bun comes from npm (the `bun` package) into the bench-local prefix bench/.npm when it installs;
# without it the Bun column says "-".
#   bash bench/fs/run.sh [path/to/luaio]
set -e
LUAIO=${1:-build/luaio}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
BUN=bench/.npm/node_modules/.bin/bun
[ -x "$BUN" ] || npm install --silent --no-audit --no-fund --prefix bench/.npm bun >/dev/null 2>&1 || true
head -c 1000000 /dev/urandom > "$DIR/small.bin"
head -c 100000000 /dev/urandom > "$DIR/big.bin"
# 1 GiB for the lateness of block reads (the issue's target); sparse-free, read once to cache it.
head -c 1073741824 /dev/zero > "$DIR/huge.bin"
cat "$DIR/big.bin" "$DIR/huge.bin" > /dev/null
"$LUAIO" bench/fs/fs_bench.lua "$DIR" > "$DIR/luaio.txt"
node bench/fs/node_bench.js "$DIR" > "$DIR/node.txt"
if [ -x "$BUN" ] && "$BUN" bench/fs/node_bench.js "$DIR" > "$DIR/bun.txt" 2>/dev/null; then :; else
    sed 's/ .*/ -/' "$DIR/node.txt" > "$DIR/bun.txt"
fi
printf "%-32s %10s %10s %10s %10s %10s\n" measure luaio node bun luaio/node luaio/bun
join "$DIR/luaio.txt" "$DIR/node.txt" | join - "$DIR/bun.txt" | while read -r name l n b; do
    printf "%-32s %10s %10s %10s %10s %10s\n" "$name" "$l" "$n" "$b" \
        "$(echo "$l $n" | awk '{ if ($2 > 0) printf "%.2f", $1 / $2; else print "-" }')" \
        "$(echo "$l $b" | awk '{ if ($2 + 0 > 0) printf "%.2f", $1 / $2; else print "-" }')"
done
echo "(rates: higher is better; timer_late_ms: lower is better)"
echo "luaio only, the lateness the loop thread's own CPU time explains (a loaded machine's waits not counted):"
grep '^loop_late_cpu' "$DIR/luaio.txt"
