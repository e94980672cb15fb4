-- A reverse proxy in a few lines, on the client's keep-alive pool. Bodies stream through in
-- pieces both ways: neither an upload nor a download is ever whole in memory.
--   luaio examples/http_proxy.lua [upstream=http://127.0.0.1:8081] [port=8080]
--   in front of the JSON API (which listens on 8080):
--   luaio examples/http_proxy.lua http://127.0.0.1:8080 8081   then   curl http://127.0.0.1:8081/users/1
local http = require "http"
local upstream = arg[1] or "http://127.0.0.1:8081"
local port = tonumber(arg[2]) or 8080

-- Hop-by-hop fields (RFC 9110 7.6.1) and the framing, which each side does itself.
local hop = { host = true, connection = true, ["keep-alive"] = true, ["transfer-encoding"] = true, te = true,
              upgrade = true, ["proxy-connection"] = true }

local function copy(from)
    local headers = {}
    for k, v in pairs(from) do
        if not hop[k] then headers[k] = v end
    end
    return headers
end

assert(http.createServer({ port = port, maxBodySize = 1024 ^ 3 }, function(req, res)
    local body -- a request with a body sends it on piece by piece
    if req.headers["content-length"] or req.headers["transfer-encoding"] then
        body = req
    end
    local up, err = http.request({ method = req.method, url = upstream .. req.url, headers = copy(req.headers),
                                   body = body, timeout = 10000, stream = true })
    if not up then
        res.status = 502
        return res:finish("bad gateway: " .. err.message .. "\n")
    end
    res.status = up.status
    for k, v in pairs(copy(up.headers)) do res:setHeader(k, v) end
    while true do
        local piece, perr = up:read()
        if perr then
            -- A truncated upstream body must not look complete: the connection ends.
            error("upstream: " .. perr.message)
        end
        if not piece then break end
        if res:write(piece) then return up:close() end -- the client went away
    end
    res:finish()
end))
print("proxy on http://127.0.0.1:" .. port .. " -> " .. upstream)
