#!/bin/sh
# fs benchmark, same run: luaio's fs against Node's fs.promises and Bun (files in page cache).
# Bun comes from npm (the `bun` package) into the bench-local prefix bench/.npm when it installs;
# without it the Bun column says "-". The peers run in turn, ROUNDS times (default 3), after a
# warm-up round (see below) and with the test files written back to disk (sync); each figure is
# the median of its rounds.
#   bash bench/fs/run.sh [path/to/luaio]
set -e
LUAIO=${1:-build/luaio}
ROUNDS=${ROUNDS:-3}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
BUN=bench/.npm/node_modules/.bin/bun
[ -x "$BUN" ] || npm install --silent --no-audit --no-fund --prefix bench/.npm bun >/dev/null 2>&1 || true
head -c 1000000 /dev/urandom > "$DIR/small.bin"
head -c 100000000 /dev/urandom > "$DIR/big.bin"
# 1 GiB for the lateness of block reads (the issue's target); sparse-free, read once to cache it.
head -c 1073741824 /dev/zero > "$DIR/huge.bin"
sync
cat "$DIR/big.bin" "$DIR/huge.bin" > /dev/null
have_bun=no
[ -x "$BUN" ] && "$BUN" --version >/dev/null 2>&1 && have_bun=yes
run_peer() { # peer round
    case $1 in
    luaio) "$LUAIO" bench/fs/fs_bench.lua "$DIR" > "$DIR/luaio.$2" ;;
    node) node bench/fs/node_bench.js "$DIR" > "$DIR/node.$2" ;;
    bun) [ $have_bun = no ] || "$BUN" bench/fs/node_bench.js "$DIR" > "$DIR/bun.$2" 2>/dev/null || have_bun=no ;;
    esac
}
# A warm-up round first, not counted: memory a virtual machine's guest has not touched yet is
# slow to fault in (seen here: the first peer after the files were made read 100 MB at 400 MB/s,
# the same peer 1.2-1.8 GB/s two rounds later). Then the order turns each round.
for peer in luaio node bun; do run_peer $peer warmup; done
rm -f "$DIR"/*.warmup
for round in $(seq "$ROUNDS"); do
    case $((round % 3)) in
    1) order="luaio node bun" ;;
    2) order="node bun luaio" ;;
    0) order="bun luaio node" ;;
    esac
    for peer in $order; do run_peer $peer $round; done
done
# The median of each measure over the rounds: "name value" lines per peer.
median() { # peer
    cat "$DIR/$1".* | sort -k1,1 -k2,2g | awk '
        { v[$1] = v[$1] " " $2; n[$1]++ }
        END { for (k in v) { split(substr(v[k], 2), a, " "); print k, a[int((n[k] + 1) / 2)] } }' | sort
}
median luaio > "$DIR/luaio.txt"
median node > "$DIR/node.txt"
if [ $have_bun = yes ]; then median bun > "$DIR/bun.txt"; else sed 's/ .*/ -/' "$DIR/node.txt" > "$DIR/bun.txt"; fi
printf "%-32s %10s %10s %10s %10s %10s   (medians of %s rounds)\n" measure luaio node bun luaio/node luaio/bun "$ROUNDS"
join "$DIR/luaio.txt" "$DIR/node.txt" | join - "$DIR/bun.txt" | while read -r name l n b; do
    printf "%-32s %10s %10s %10s %10s %10s\n" "$name" "$l" "$n" "$b" \
        "$(echo "$l $n" | awk '{ if ($2 > 0) printf "%.2f", $1 / $2; else print "-" }')" \
        "$(echo "$l $b" | awk '{ if ($2 + 0 > 0) printf "%.2f", $1 / $2; else print "-" }')"
done
echo "(rates: higher is better; timer_late_ms: lower is better)"
echo "luaio only, the lateness the loop thread's own CPU time explains (a loaded machine's waits not counted):"
grep '^loop_late_cpu' "$DIR/luaio.txt"
