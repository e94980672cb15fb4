#!/usr/bin/env bash
# Builds the .deb, checks it with lintian, installs it, runs the installed luaio and its
# units through their checks, and removes it again, leaving the system as it was.
# Run as root on a machine where nothing else installs luaio (CI: .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# The build's output goes through a file: `tee /dev/stderr` would reopen the caller's stderr
# with O_TRUNC and wipe a CI log that is a regular file.
build_log=$(mktemp)
status=0
bash packaging/build-deb.sh > "$build_log" || status=$?
cat "$build_log"
[ "$status" = 0 ] || exit "$status"
deb=$(tail -n 1 "$build_log")

echo "== lintian"
# Errors fail; the warnings left are listed in packaging/README.md.
lintian --fail-on error --tag-display-limit 0 "$deb"

echo "== install"
if dpkg-query -W -f='${Status}' luaio 2>/dev/null | grep -q "install ok installed"; then
    echo "test-deb.sh: luaio is already installed; not touching it" >&2
    exit 1
fi
# What the package may touch, before it is installed; compared after its removal.
snapshot() { find /usr /etc /lib/systemd /var/lib/systemd -xdev 2>/dev/null | grep -v '^/usr/share/man/index' | sort; }
before=$(mktemp); after=$(mktemp)
trap 'rm -f "$before" "$after" "$build_log"' EXIT
snapshot >"$before"
dpkg -i "$deb"

echo "== the installed luaio"
test "$(command -v luaio)" = /usr/bin/luaio
! grep -q '^/usr/local' <<<"$(dpkg -L luaio)" || { echo "test-deb.sh: files in /usr/local" >&2; exit 1; }
# Debian's hardening flags reached the binary: PIE, full RELRO (relro + now), stack
# protector, fortified calls; and it is stripped.
elf=$(readelf -hdlSW /usr/bin/luaio)
dyn=$(nm -D /usr/bin/luaio)
grep -q 'DYN (Position-Independent Executable' <<<"$elf"
grep -q 'FLAGS.*BIND_NOW' <<<"$elf"
grep -q GNU_RELRO <<<"$elf"
grep -q __stack_chk_fail <<<"$dyn"
grep -qE '__[a-z]+_chk@' <<<"$dyn"
! grep -q '\.debug_info' <<<"$elf" || { echo "test-deb.sh: not stripped" >&2; exit 1; }
/usr/bin/luaio -v | sed -n 1p
/usr/bin/luaio packaging/smoke.lua
test "$(man -w luaio)" = /usr/share/man/man1/luaio.1.gz
warnings=$(MANWIDTH=80 man --warnings -l /usr/share/man/man1/luaio.1.gz 2>&1 >/dev/null)
test -z "$warnings" || { echo "$warnings" >&2; exit 1; }
systemd-analyze verify /lib/systemd/system/luaio@app.service /lib/systemd/system/luaio.socket

echo "== socket activation, as luaio.socket starts luaio@app.service"
# systemd-socket-activate listens, then execs the master with LISTEN_PID/LISTEN_FDS as
# systemd does; the master hands the socket to its workers, whose server adopts it.
port=18093
app=$(mktemp --suffix=.lua)
cat >"$app" <<'LUA'
local http = require "http"
assert(http.createServer({ host = "127.0.0.1", port = tonumber(arg[1]) }, function(_, res)
    res:finish("activated")
end))
LUA
systemd-socket-activate -l "127.0.0.1:$port" /usr/bin/luaio --workers 1 "$app" "$port" &
activator=$!
answer=$(curl -sS --retry 20 --retry-connrefused --retry-delay 0 --max-time 10 "http://127.0.0.1:$port/") || true
kill -TERM "$activator"
wait "$activator"
rm -f "$app"
test "$answer" = activated
systemd-analyze security --offline=yes --no-pager /lib/systemd/system/luaio@app.service | tail -n 1

echo "== remove"
dpkg -r luaio
# No conffile and no maintainer script: dpkg forgets the package entirely.
test -z "$(dpkg-query -W -f='${db:Status-Abbrev}' luaio 2>/dev/null | tr -d ' ')" ||
    dpkg-query -W -f='${db:Status-Abbrev}\n' luaio | grep -q '^un'
test -z "$(ls /var/lib/dpkg/info/luaio.* 2>/dev/null)"
snapshot >"$after"
if ! diff "$before" "$after"; then
    echo "test-deb.sh: dpkg -r left files behind (above)" >&2
    exit 1
fi
echo "test-deb.sh: ok"
