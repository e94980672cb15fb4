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
    end)
end)
