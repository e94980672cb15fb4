-- The router: methods, path parameters, catch-all, 404 and 405 with Allow, JSON responses.
local http = require "http"
local json = require "json"

describe("http router", function()
    local srv, base
    setup(function()
        local r = http.router()
        r:get("/users/:id", function(req, res, params)
            res:json({ id = params.id, same = req.params.id == params.id })
        end)
        r:post("/users", function(req, res)
            local body = assert(json.decode(assert(req:body())))
            res:json({ created = body.name }, 201)
        end)
        r:put("/users/:id", function(_, res, p) res:json({ put = p.id }) end)
        r:patch("/users/:id", function(_, res, p) res:json({ patch = p.id }) end)
        r:delete("/users/:id", function(_, res, p) res:json({ deleted = p.id }) end)
        r:get("/files/*path", function(_, res, p) res:finish(p.path) end)
        r:get("/users/me", function(_, res) res:finish("me") end)
        srv = assert(http.createServer({ port = 0 }, r))
        base = "http://127.0.0.1:" .. srv.port
    end)
    teardown(function()
        srv:close()
    end)
    -- The client keeps idle connections for reuse: each spec ends with none, for the leak check.
    after_each(function() http.closeIdle() end)

    it("routes by method and path with decoded parameters", function()
        local res = assert(http.get(base .. "/users/a%20b"))
        assert.are.equal(200, res.status)
        assert.are.equal("application/json", res.headers["content-type"])
        assert.are.same({ id = "a b", same = true }, json.decode(res.body))
        assert.are.equal("me", assert(http.get(base .. "/users/me")).body)
        res = assert(http.request({ method = "POST", url = base .. "/users", body = '{"name":"ann"}' }))
        assert.are.equal(201, res.status)
        assert.are.same({ created = "ann" }, json.decode(res.body))
        for _, m in ipairs({ "PUT", "PATCH", "DELETE" }) do
            res = assert(http.request({ method = m, url = base .. "/users/7" }))
            assert.are.equal("7", select(2, next(json.decode(res.body))))
        end
        assert.are.equal("a/b/c", assert(http.get(base .. "/files/a/b/c")).body)
    end)

    it("answers 404 for unknown paths and 405 with Allow for other methods", function()
        local res = assert(http.get(base .. "/nope"))
        assert.are.equal(404, res.status)
        assert.are.same({ error = "not found" }, json.decode(res.body))
        res = assert(http.request({ method = "POST", url = base .. "/users/1" }))
        assert.are.equal(405, res.status)
        assert.are.equal("DELETE, GET, HEAD, PATCH, PUT", res.headers.allow)
    end)

    it("answers HEAD from GET routes", function()
        local res = assert(http.request({ method = "HEAD", url = base .. "/users/1" }))
        assert.are.equal(200, res.status)
        assert.are.equal("", res.body)
    end)

    it("raises on bad routes, naming the method called at the caller's line", function()
        local r = http.router()
        local function raises(f, message)
            local ok, err = pcall(f)
            assert.is_false(ok)
            assert.are.equal(message, (err:gsub("^[^:]*:%d+: ", "")))
            assert.truthy(err:find("http_router_spec%.lua:%d+: router:"), err)
        end
        raises(function() r:get("nope", function() end) end, "router:get: expected a path starting with '/', got 'nope'")
        raises(function() r:post(5, function() end) end, "router:post: expected a path starting with '/', got number")
        raises(function() r:get("/x", "not a function") end,
            "router:get: expected a handler function for GET /x, got string")
        raises(function() r:all("/x") end, "router:all: expected a handler function for * /x, got nil")
        raises(function() r:add(nil, "/x", function() end) end,
            "router:add: expected a method name (a string) as argument 1, got nil")
        raises(function() r.get("/x", function() end) end,
            "router:get: expected a router as self, got string (call it with ':')")
        r:get("/a/:id", function() end)
        raises(function() r:get("/a/:other", function() end) end,
            "router:get: parameter :other conflicts with :id in /a/:other")
    end)
end)
