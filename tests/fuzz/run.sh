#!/usr/bin/env bash
# Builds the libFuzzer driver of the http parser with clang 14 (-fsanitize=fuzzer,address,
# undefined) and runs it on the seed corpus for the given number of seconds (default 60).
# New inputs go to a scratch corpus beside the build (FUZZ_OUT, default build-fuzz), not into the
# repository; a crash leaves its input there and the script fails.
# Usage: bash tests/fuzz/run.sh [seconds] [extra libFuzzer flags...]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
shift || true
root=$(pwd)
out=${FUZZ_OUT:-build-fuzz}
mkdir -p "$out/corpus"
flags=(-O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
# llhttp's C sources (Debian's node-llhttp), instrumented too so coverage guides into them.
for f in llhttp http api; do
    if [ ! -f "$out/$f.o" ] || [ "/usr/share/llhttp/$f.c" -nt "$out/$f.o" ]; then
        clang-14 "${flags[@]}" -w -I/usr/share/include/llhttp -c "/usr/share/llhttp/$f.c" -o "$out/$f.o"
    fi
done
clang++-14 -std=c++17 "${flags[@]}" -fsanitize=fuzzer -Wall -Wextra -Werror -I"$root" -I/usr/share/include/llhttp \
    tests/fuzz/http_parser_fuzz.cpp "$out/llhttp.o" "$out/http.o" "$out/api.o" -o "$out/http_parser_fuzz"
cd "$out"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ./http_parser_fuzz -max_total_time="$secs" -max_len=4096 -timeout=10 -print_final_stats=1 \
    -dict="$root/tests/fuzz/http.dict" "$@" corpus "$root/tests/fuzz/corpus"
