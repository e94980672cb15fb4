#!/usr/bin/env bash
# Runs the cases of spec/http_conformance_cases.lua against nginx (with the Lua module: the
# handler reads the body, then answers 200, as the spec's luaio handler does) and prints the
# cases where nginx differs from the table. Usage: bash bench/http/conformance_nginx.sh [port]
set -euo pipefail
cd "$(dirname "$0")/../.."
port=${1:-18931}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
error_log $dir/error.log info;
pid $dir/nginx.pid;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  client_max_body_size 1m;
  server {
    listen 127.0.0.1:$port;
    location / { content_by_lua_block { ngx.req.read_body() ngx.print("ok") } }
  }
}
CONF
nginx -p "$dir" -c "$dir/nginx.conf" &
pid=$!
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
"${LUAIO_BIN:-build/luaio}" bench/http/conformance_nginx.lua "$port" "${QUIET_MS:-500}"
