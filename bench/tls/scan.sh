#!/bin/sh
# sslscan against examples/https_server.lua (the same ECDSA P-256 certificate as the other
# benches): the protocols and cipher suites it accepts, the key exchange groups, and whether it
# renegotiates or compresses. The findings are in bench/tls/README.md.
#   bench/tls/scan.sh
# Needs: sslscan (scripts/setup.sh --bench).
set -eu
DIR=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$DIR/../.." && pwd)
LUAIO=${LUAIO:-$ROOT/build/luaio}
TMP=$(mktemp -d); trap 'kill $PID 2>/dev/null; rm -rf "$TMP"' EXIT
sh "$DIR/certs.sh" "$TMP"
PORT=29451
"$LUAIO" "$ROOT/examples/https_server.lua" $PORT "$TMP/cert.pem" "$TMP/key.pem" > /dev/null & PID=$!
i=0; until curl -sk -o /dev/null "https://127.0.0.1:$PORT/"; do i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.05; done
sslscan --no-colour --show-sigs 127.0.0.1:$PORT
