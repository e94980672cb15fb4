-- The json module (lua-cjson underneath).
local json = require "json"

describe("json", function()
    it("encodes and decodes round trip", function()
        local v = { a = 1, b = { 1, 2, 3 }, c = "x\"y", d = true, e = 1.5 }
        local s = assert(json.encode(v))
        assert.are.same(v, json.decode(s))
    end)

    it("keeps null distinct from nil", function()
        local v = assert(json.decode('{"a":null,"b":[null,1]}'))
        assert.are.equal(json.null, v.a)
        assert.are.equal("[null,1]", json.encode(v.b))
    end)

    it("encodes marked empty arrays as arrays", function()
        local s = json.encode({ list = json.array() })
        assert.truthy(s == '{"list":[]}' or s == '{"list":{}}')
    end)

    it("returns an error table for bad JSON, saying where", function()
        for _, bad in ipairs({ "{", "[1,,2]", "nul", '{"a" 1}', "", "\"unterminated" }) do
            local v, err = json.decode(bad)
            assert.is_nil(v)
            assert.are.equal("EJSON", err.name)
            assert.truthy(err.message:find("^json.decode: "))
        end
        local v, err = json.decode(42)
        assert.is_nil(v)
        assert.truthy(err.message:find("expected a string", 1, true))
    end)

    it("returns an error table for values JSON cannot hold", function()
        -- The message names the type that cannot be encoded.
        for _, case in ipairs({ { function() end, "function" }, { { f = print }, "function" },
            { coroutine.create(print), "thread" }, { 0 / 0, "number" } }) do
            local bad, kind = case[1], case[2]
            local s, err = json.encode(bad)
            assert.is_nil(s)
            assert.are.equal("EJSON", err.name)
            assert.truthy(err.message:find("^json.encode: cannot encode " .. kind .. ": "), err.message)
        end
        local _, err = json.decode("[1,,2]")
        assert.truthy(err.message:find("at character 4", 1, true), err.message)
        local t = {}
        t.self = t
        local s, err = json.encode(t)
        assert.is_nil(s)
        assert.are.equal("EJSON", err.name)
    end)
end)
