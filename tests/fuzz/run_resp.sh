#!/usr/bin/env bash
# Builds the libFuzzer driver of the RESP reader (modules/resp_reader.h) with clang 14
# (-fsanitize=fuzzer,address,undefined) and runs it on its seed corpus for the given number of
# seconds (default 20). New inputs go to a scratch corpus beside the build; a crash leaves its
# input in build-fuzz/ and the script fails.
# Usage: bash tests/fuzz/run_resp.sh [seconds] [extra libFuzzer flags...]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-20}
shift || true
out=build-fuzz
mkdir -p "$out/corpus_resp"
flags=(-O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
clang++-14 -std=c++17 "${flags[@]}" -Wall -Wextra -Werror -I. \
    tests/fuzz/resp_reader_fuzz.cpp -o "$out/resp_reader_fuzz"
cd "$out"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ./resp_reader_fuzz -max_total_time="$secs" -max_len=4096 -timeout=10 -print_final_stats=1 \
    "$@" corpus_resp ../tests/fuzz/corpus_resp
