-- The package's smoke test (packaging/test-deb.sh): the installed luaio serves HTTP on a
-- port of its own and curl gets the answer.
local http = require "http"
local process = require "process"

local server = assert(http.createServer({ host = "127.0.0.1", port = 0 }, function(_, res)
    res:json({ hello = "from the package" })
end))
local r = assert(process.run({ "curl", "-sS", "--max-time", "5", "http://127.0.0.1:" .. server.port .. "/" }))
server:close()
assert(r.code == 0, "curl failed: " .. r.stderr)
assert(r.stdout == '{"hello":"from the package"}', "unexpected answer: " .. r.stdout)
print("smoke: " .. r.stdout)
