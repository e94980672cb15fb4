-- A JSON API with the router: path parameters, 404, 405 with Allow.
--   luaio examples/http_json_api.lua
--   curl http://127.0.0.1:8080/users/1
--   curl -X POST -d '{"name":"ann"}' http://127.0.0.1:8080/users
local http = require "http"
local json = require "json"

local users, next_id = { ["1"] = { id = 1, name = "root" } }, 2
local r = http.router()

r:get("/health", function(_, res)
    res:json({ status = "healthy", server = "luaio" })
end)

r:get("/users/:id", function(_, res, params)
    local u = users[params.id]
    if not u then
        return res:json({ error = "no such user" }, 404)
    end
    res:json(u)
end)

r:post("/users", function(req, res)
    local body, err = json.decode(req:body() or "")
    if not body or type(body.name) ~= "string" then
        return res:json({ error = err and err.message or "name is required" }, 400)
    end
    local u = { id = next_id, name = body.name }
    users[tostring(next_id)], next_id = u, next_id + 1
    res:json(u, 201)
end)

r:delete("/users/:id", function(_, res, params)
    users[params.id] = nil
    res.status = 204
    res:finish()
end)

assert(http.createServer({ port = 8080 }, r))
print("JSON API on http://127.0.0.1:8080")
