-- A reverse proxy in a few lines, on the client's keep-alive pool.
--   luaio examples/http_proxy.lua http://127.0.0.1:8081   (listens on 8080)
local http = require "http"
local upstream = arg[1] or "http://127.0.0.1:8081"

assert(http.createServer({ port = 8080 }, function(req, res)
    local headers = {}
    for k, v in pairs(req.headers) do
        if k ~= "host" and k ~= "connection" then headers[k] = v end
    end
    local up, err = http.request({ method = req.method, url = upstream .. req.url, headers = headers,
                                   body = req:body(), timeout = 10000 })
    if not up then
        res.status = 502
        return res:finish("bad gateway: " .. err.message .. "\n")
    end
    res.status = up.status
    for k, v in pairs(up.headers) do
        if k ~= "connection" and k ~= "transfer-encoding" and k ~= "content-length" then res:setHeader(k, v) end
    end
    res:finish(up.body)
end))
print("proxy on http://127.0.0.1:8080 -> " .. upstream)
