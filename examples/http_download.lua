-- A streaming download: the file goes out in chunks, never whole in memory.
--   luaio examples/http_download.lua /path/to/file   then   curl -O http://127.0.0.1:8080/file
local fs = require "fs"
local http = require "http"
local path = arg[1] or "/etc/os-release"

assert(http.createServer({ port = 8080 }, function(_, res)
    -- fs calls park only this request's task: a slow disk stalls no other client.
    local f = fs.open(path, "r")
    if not f then
        res.status = 404
        return res:finish("not found\n")
    end
    local st = f:stat()
    res:setHeader("Content-Type", "application/octet-stream")
    res:setHeader("Content-Length", st.size)
    while true do
        local piece = f:read(64 * 1024)
        if not piece then break end
        if res:write(piece) then break end -- the client went away
    end
    f:close()
    res:finish()
end))
print("serving " .. path .. " on http://127.0.0.1:8080")
