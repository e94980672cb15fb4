#!/usr/bin/env bash
# Installs what luaio needs on Debian 12 (idempotent) and builds it into build/.
#   bash scripts/setup.sh            # runtime and test dependencies, then a release build
#   bash scripts/setup.sh --bench    # also the benchmark peers (nginx+Lua, Node.js, luv, wrk, hyperfine, valgrind, sslscan)
#   bash scripts/setup.sh --no-build # packages only
set -euo pipefail
cd "$(dirname "$0")/.."

bench=0
build=1
for a in "$@"; do
    case "$a" in
    --bench) bench=1 ;;
    --no-build) build=0 ;;
    *) echo "setup.sh: unknown option $a" >&2; exit 2 ;;
    esac
done

# Build and library packages (see DESIGN.md), then what the specs talk to.
packages=(
    build-essential cmake ninja-build pkg-config clang-format
    libluajit2-5.1-dev libuv1-dev libc-ares-dev node-llhttp libssl-dev libgtest-dev zlib1g-dev
    lua-busted lua-cjson
    # The fuzz drivers (tests/fuzz) and their sanitizer runtime.
    clang-14 libfuzzer-14-dev libclang-rt-14-dev
    # What the specs talk to: curl, a DNS server, a fake DNS server and a strict HTTP oracle
    # (Python), a load balancer for the rolling-restart spec, Node's ws client for the websocket spec.
    curl dnsmasq-base netcat-openbsd procps iproute2 python3 python3-h11 haproxy nodejs node-ws
    # Packaging (packaging/build-deb.sh) and its checks.
    debhelper dpkg-dev fakeroot lintian mandoc systemd
    # The database clients' C libraries, and the real servers their specs start and stop.
    libpq-dev libmariadb-dev redis-server redis-tools postgresql postgresql-contrib
    mariadb-server mariadb-client
    # Further WebSocket peers for the websocket spec: Python's websockets and headless Chromium.
    python3-websockets chromium chromium-driver
    # Another TLS stack as a client of luaio's TLS servers (spec/tls_peers_spec.lua).
    gnutls-bin
)
if [ "$bench" = 1 ]; then
    packages+=(nginx libnginx-mod-http-lua lua-luv wrk hyperfine time valgrind luajit2 sslscan)
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    # libluajit2-5.1-dev (OpenResty's LuaJIT branch) conflicts with libluajit-5.1-dev.
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ "$build" = 1 ]; then
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLUAIO_WERROR=ON >/dev/null
    ninja -C build
fi
