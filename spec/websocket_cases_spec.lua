-- The RFC 6455/7692 case list (spec/websocket_cases.lua, modelled on Autobahn's sections) against
-- luaio's server: every case on its own connection, judged frame by frame.
local http = require "http"
local raw = require "ws_raw"
local list = require("websocket_cases").cases

local char = string.char

describe("websocket case list", function()
    local srv, port
    setup(function()
        local r = http.router()
        local function echo(ws)
            for msg, kind in ws:messages() do
                if ws:send(msg, kind) then return end
            end
        end
        r:websocket("/echo", echo, { maxMessageSize = 1024 * 1024 })
        r:websocket("/limit", echo, { maxMessageSize = 1000, maxFrameSize = 600 })
        r:websocket("/z", echo, { maxMessageSize = 1000, deflate = { threshold = 2 ^ 31 - 1 } })
        srv = assert(http.createServer({ port = 0, host = "127.0.0.1" }, r))
        port = srv.port
    end)
    teardown(function()
        srv:close()
    end)

    -- Runs one case; returns nil, or what went wrong.
    local function run(c)
        local sock, head = raw.connect(port, c.path or "/echo", c.ext)
        if c.ext and not head:lower():find("permessage-deflate", 1, true) then
            sock:close()
            return "the server did not accept permessage-deflate"
        end
        local sends = type(c.send) == "table" and c.send or { c.send }
        for _, b in ipairs(sends) do
            local err = sock:write(b)
            if err then
                sock:close()
                return "write: " .. tostring(err)
            end
        end
        if c.close == nil then
            sock:write(raw.frame(0x88, char(3, 232)))
        end
        local function fail(why)
            sock:close()
            return why
        end
        for i, want in ipairs(c.expect or {}) do
            local op, p, b0, masked = raw.read_frame(sock)
            if op ~= want[1] or p ~= want[2] then
                return fail(string.format("frame %d: expected opcode %d (%d bytes), got %s (%s bytes)", i, want[1],
                    #want[2], tostring(op), p and #tostring(p) or "?"))
            end
            if b0 < 128 or masked or (b0 % 128) >= 16 then
                return fail("frame " .. i .. ": not FIN, masked or with RSV bits")
            end
        end
        local op, p = raw.read_frame(sock)
        if op ~= 8 then
            return fail("expected a close frame, got " .. tostring(op) .. " " .. tostring(p))
        end
        local want = c.close == nil and 1000 or c.close
        if want == "empty" then
            if p ~= "" then return fail("expected an empty close payload, got " .. #p .. " bytes") end
        elseif raw.close_code(p) ~= want then
            return fail("expected close code " .. want .. ", got " .. tostring(raw.close_code(p)))
        end
        local rest, err = sock:read(1)
        if rest or not err or err.name ~= "EOF" then
            return fail("the server did not end the connection after its close frame: " .. tostring(rest or err))
        end
        sock:close()
    end

    it("has the Autobahn sections and more than 150 cases, with unique ids", function()
        assert.is_true(#list > 150, #list)
        local seen, sections = {}, {}
        for _, c in ipairs(list) do
            assert.is_nil(seen[c.id], c.id)
            seen[c.id] = true
            sections[tonumber(c.id:match("^(%d+)"))] = true
        end
        for _, s in ipairs({ 1, 2, 3, 4, 5, 6, 7, 9, 12, 13 }) do
            assert.is_true(sections[s], "section " .. s)
        end
    end)

    it("answers every case as RFC 6455 and 7692 require", function()
        local bad = {}
        for _, c in ipairs(list) do
            local why = run(c)
            if why then bad[#bad + 1] = c.id .. ": " .. why end
        end
        assert.are.equal("", table.concat(bad, "\n"))
    end)
end)
