-- An https hello server. Make a certificate first (a throwaway one for localhost):
--   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
--     -keyout key.pem -out cert.pem -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1
--   luaio examples/https_server.lua [port] [cert.pem] [key.pem]
--   curl --cacert cert.pem https://localhost:8443/    or    luaio examples/https_get.lua
local http = require "http"

local port = tonumber((...)) or 8443
local cert, key = select(2, ...) or "cert.pem", select(3, ...) or "key.pem"

local srv = assert(http.createServer({ port = port, tls = { cert = cert, key = key } }, function(req, res)
    res:setHeader("Content-Type", "text/plain")
    res:finish("hello over TLS, " .. req.path .. "\n")
end))
print("https://localhost:" .. srv:address().port .. "/")
