#!/bin/sh
# fs benchmark, same run: luaio's fs against Node's fs.promises (files in page cache).
#   bash bench/fs/run.sh [path/to/luaio]
set -e
LUAIO=${1:-build/luaio}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
head -c 1000000 /dev/urandom > "$DIR/small.bin"
head -c 100000000 /dev/urandom > "$DIR/big.bin"
cat "$DIR/big.bin" > /dev/null
"$LUAIO" bench/fs/fs_bench.lua "$DIR" > "$DIR/luaio.txt"
node bench/fs/node_bench.js "$DIR" > "$DIR/node.txt"
printf "%-32s %12s %12s %8s\n" measure luaio node ratio
join "$DIR/luaio.txt" "$DIR/node.txt" | while read -r name l n; do
    printf "%-32s %12s %12s %8s\n" "$name" "$l" "$n" "$(echo "$l $n" | awk '{ if ($2 > 0) printf "%.2f", $1 / $2; else print "-" }')"
done
echo "(rates: higher is better; timer_late_ms: lower is better)"
