-- Fetches a page over https, verifying the server's certificate against a CA file (the server
-- of examples/https_server.lua is its own CA) or, without one, the system's store.
--   luaio examples/https_get.lua [url] [ca.pem]
local http = require "http"

local url = (...) or "https://localhost:8443/"
local ca = select(2, ...) or (url:find("^https://localhost") and "cert.pem") or nil

local res, err = http.request({ url = url, tls = ca and { ca = ca } or nil })
if not res then
    print("failed: " .. tostring(err))
    os.exit(1)
end
print(res.status, res.headers["content-type"])
io.write(res.body)
