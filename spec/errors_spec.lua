-- errors: the one table of luaio's error names, codes and messages (runtime/errors.h), the
-- luaio.errors module, and how error tables print.
local errors = require "luaio.errors"
local tcp = require "tcp"
local json = require "json"
local helper = require "helper"

describe("luaio.errors", function()
    it("names libuv's codes, c-ares's and luaio's own, each name with one code", function()
        assert.are.equal(-110, errors.ETIMEDOUT)
        assert.are.equal(-111, errors.ECONNREFUSED) -- libuv's, not c-ares's 11
        assert.are.equal(-4095, errors.EOF)
        assert.are.equal(4, errors.ENOTFOUND) -- the dns module's (c-ares) code
        assert.is_true(errors.ELINETOOLONG < -5000)
        assert.is_true(errors.EJSON < -5000)
        assert.is_true(errors.ETOOMANYREDIRECTS < -5000)
        assert.are_not.equal(errors.ELINETOOLONG, errors.E2BIG)
    end)

    it("new(name | code[, message[, fields]]) makes an error table with the table's defaults", function()
        local e = errors.new("ETIMEDOUT")
        assert.are.equal(-110, e.code)
        assert.are.equal("ETIMEDOUT", e.name)
        assert.are.equal("connection timed out", e.message)
        e = errors.new(errors.EPIPE, "channel closed", { port = 5 })
        assert.are.equal("EPIPE", e.name)
        assert.are.equal("channel closed", e.message)
        assert.are.equal(5, e.port)
    end)

    it("new raises on an unknown name or a wrong argument, naming itself", function()
        assert.has_error(function() errors.new("EBOGUS") end, "errors.new: unknown error 'EBOGUS'")
        assert.has_error(function() errors.new({}) end)
        assert.has_error(function() errors.new("EINVAL", "x", 5) end)
    end)

    it("error tables from C++ and from Lua print as NAME: message (where)", function()
        assert.are.equal("ETIMEDOUT: connection timed out", tostring(errors.new("ETIMEDOUT")))
        assert.are.equal("ECONNREFUSED: connection refused (127.0.0.1:8080)",
            tostring(errors.new("ECONNREFUSED", nil, { address = "127.0.0.1", port = 8080 })))
        assert.are.equal("ECONNREFUSED: connection refused (localhost, [::1]:80)",
            tostring(errors.new("ECONNREFUSED", nil, { host = "localhost", address = "::1", port = 80 })))
        assert.are.equal("ENOTFOUND: host not found (nosuch.test)",
            tostring(errors.new("ENOTFOUND", "host not found", { host = "nosuch.test" })))
        local _, err = json.decode("{")
        assert.are.equal(errors.EJSON, err.code)
        assert.matches("^EJSON: json.decode: ", tostring(err))
    end)

    it("a line too long has luaio's own code, not E2BIG's", function()
        local srv = assert(tcp.createServer(0, function(sock)
            sock:write(("x"):rep(20) .. "\n")
        end, { host = "127.0.0.1" }))
        local c = assert(tcp.connect(srv:address().port, "127.0.0.1"))
        local line, err = c:readline(10)
        assert.is_nil(line)
        assert.are.equal("ELINETOOLONG", err.name)
        assert.are.equal(errors.ELINETOOLONG, err.code)
        c:close()
        srv:close()
        assert(helper.idle())
    end)

    it("lib/ has no literal error code", function()
        local out = helper.sh("grep -rnE 'code *= *-[0-9]+|error -[0-9]+ E' " .. helper.source_dir .. "/lib")
        assert.are.equal("", out)
    end)
end)

describe("HTTP reason phrases", function()
    it("are one table, shared by the server's status lines and Lua", function()
        local reasons = require("luaio.http").reasons
        assert.are.equal("OK", reasons[200])
        assert.are.equal("Content Too Large", reasons[413])
        assert.are.equal("Internal Server Error", reasons[500])
        local canned = require("luaio.http").canned
        assert.are.same({ E2BIG = 413, EPROTO = 400, ETIMEDOUT = 408 }, canned)
    end)
end)

describe("network errors say what they concern", function()
    -- A port of 127.0.0.1 where nothing listens (it did a moment ago).
    local function closed_port()
        local srv = assert(tcp.createServer(0, function() end, { host = "127.0.0.1" }))
        local port = srv:address().port
        srv:close()
        return port
    end

    it("tcp.connect: the address and port, and the host name asked", function()
        local port = closed_port()
        local _, err = tcp.connect(port, "127.0.0.1")
        assert.are.equal("127.0.0.1", err.address)
        assert.are.equal(port, err.port)
        assert.are.equal("ECONNREFUSED: connection refused (127.0.0.1:" .. port .. ")", tostring(err))
        _, err = tcp.connect(port, "localhost", { family = 4 })
        assert.are.equal("localhost", err.host)
        assert.are.equal("ECONNREFUSED: connection refused (localhost, 127.0.0.1:" .. port .. ")", tostring(err))
        _, err = tcp.connect(port, "::1")
        assert.are.equal("ECONNREFUSED: connection refused ([::1]:" .. port .. ")", tostring(err))
    end)

    it("a server that cannot listen: the address and port", function()
        local srv = assert(tcp.createServer(0, function() end, { host = "127.0.0.1" }))
        local port = srv:address().port
        local again, err = tcp.createServer(port, function() end, { host = "127.0.0.1" })
        assert.is_nil(again)
        assert.are.equal("EADDRINUSE: address already in use (127.0.0.1:" .. port .. ")", tostring(err))
        srv:close()
        assert(helper.idle())
    end)

    it("the http client: the server's address and port", function()
        local http = require "http"
        local port = closed_port()
        local _, err = http.get("http://127.0.0.1:" .. port .. "/")
        assert.are.equal("ECONNREFUSED: connection refused (127.0.0.1:" .. port .. ")", tostring(err))
        -- An error after connecting (the server says nothing within the timeout) names it too.
        local srv = assert(tcp.createServer(0, function() sleep(300) end, { host = "127.0.0.1" }))
        port = srv:address().port
        _, err = http.request({ url = "http://127.0.0.1:" .. port .. "/", timeout = 50 })
        assert.are.equal("ETIMEDOUT", err.name)
        assert.are.equal("127.0.0.1", err.address)
        assert.are.equal(port, err.port)
        srv:close()
        http.closeIdle()
        assert(helper.idle())
    end)

    it("dns: the name asked", function()
        local dns = require "dns"
        local _, err = tcp.connect(1, "nosuch.invalid")
        assert.truthy(err)
        assert.matches("%(nosuch.invalid%)$", tostring(err))
        local _, derr = dns.resolve4("nosuch.invalid", { timeout = 2000 })
        assert.matches("%(nosuch.invalid%)$", tostring(derr))
    end)
end)
