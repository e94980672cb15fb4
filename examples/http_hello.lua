-- The seed's hello server (000): only the require line differs from the seed.
--   luaio examples/http_hello.lua   then   curl http://127.0.0.1:8080/
local motor = require("http")

motor.serve({
    host = "127.0.0.1",
    port = 8080
}, function(request)
    return {
        status = 200,
        headers = { ["Content-Type"] = "text/plain" },
        body = "Hello from Motor!"
    }
end)
