#!/usr/bin/env bash
# Builds the libFuzzer driver of the WebSocket frame parser with clang 14
# (-fsanitize=fuzzer,address,undefined) and runs it on its seed corpus for the given number of
# seconds (default 20). New inputs go to a scratch corpus beside the build; a crash leaves its
# input in build-fuzz/ and the script fails.
# Usage: bash tests/fuzz/run_websocket.sh [seconds] [extra libFuzzer flags...]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-20}
shift || true
out=build-fuzz
mkdir -p "$out/corpus_ws"
flags=(-O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
clang++-14 -std=c++17 "${flags[@]}" -Wall -Wextra -Werror -I. \
    tests/fuzz/websocket_frame_fuzz.cpp modules/websocket_frame.cpp -o "$out/websocket_frame_fuzz"
cd "$out"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ./websocket_frame_fuzz -max_total_time="$secs" -max_len=4096 -timeout=10 -print_final_stats=1 \
    "$@" corpus_ws ../tests/fuzz/corpus_ws
