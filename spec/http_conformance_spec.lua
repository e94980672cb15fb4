-- HTTP/1.1 request syntax (RFC 9112) against hostile and borderline requests: the table of
-- spec/http_conformance_cases.lua (calibrated on nginx, see bench/http/conformance_nginx.sh)
-- run on raw connections against both server APIs, and a differential test with Python's h11.
local http = require "http"
local process = require "process"
local conformance = require "http_conformance_cases"

-- The quiet time after which a connection that stays open counts as kept alive.
local QUIET = 600

-- Runs every case against the server on port and returns the mismatches, one line each.
local function mismatches(port)
    local bad = {}
    for _, r in ipairs(conformance.run(port, QUIET)) do
        local c = r.case
        local want = c.luaio or c
        if r.status ~= want.status or r.close ~= want.close then
            bad[#bad + 1] = string.format("%s: expected %q%s, got %q%s", c.name, want.status,
                want.close and " and close" or "", r.status, r.close and " and close" or "")
        end
    end
    return bad
end

describe("http request syntax (RFC 9112, calibrated on nginx)", function()
    it("has well over a hundred cases", function()
        assert.is_true(#conformance.cases > 150)
    end)

    it("answers each case as the table says (createServer, the handler reads the body)", function()
        local srv = assert(http.createServer({ port = 0 }, function(req, res)
            local body = req:body()
            if body then
                res:finish("ok")
            end
        end))
        local bad = mismatches(srv.port)
        srv:close()
        assert.are.same({}, bad)
    end)

    it("answers each case as the table says (http.serve, the body read before the handler)", function()
        local srv = assert(http.serve({ port = 0 }, function()
            return { status = 200, body = "ok" }
        end))
        local bad = mismatches(srv.port)
        srv:close()
        assert.are.same({}, bad)
    end)

    it("runs nothing after a rejected request on the same connection", function()
        local ran = {}
        local srv = assert(http.createServer({ port = 0 }, function(req, res)
            ran[#ran + 1] = req.url
            res:finish("ok")
        end))
        local status, closed = conformance.probe(srv.port, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
            .. "GET /2 HTTP/1.1\r\nHost : a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n", QUIET)
        srv:close()
        assert.are.equal("200 400", status)
        assert.is_true(closed)
        assert.are.same({ "/1" }, ran)
    end)

    it("gives a handler an unknown method by its name and an HTTP/1.2 request as 1.1", function()
        local seen = {}
        local srv = assert(http.createServer({ port = 0 }, function(req, res)
            seen[#seen + 1] = req.method .. " " .. req.url .. " " .. req.httpVersion .. " " .. req.headers["x-a"]
            res:finish("ok")
        end))
        -- The bare-LF head comes first: its headers are made from the bytes received, which are
        -- shorter than the copy with CRLFs that llhttp parsed.
        local status = conformance.probe(srv.port, "GET /r HTTP/1.1\nHost: a\nX-A: 3\n\n"
            .. "PURGE_IT /p HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\nGET /q HTTP/1.2\r\nHost: a\r\nX-A: 2\r\n\r\n", QUIET)
        srv:close()
        assert.are.equal("200 200 200", status)
        assert.are.same({ "GET /r 1.1 3", "PURGE_IT /p 1.1 1", "GET /q 1.1 2" }, seen)
    end)
end)

-- Python's h11 is a strict parser of HTTP/1.1 syntax (it knows no origin-server rules: it takes
-- CONNECT, obs-fold, two Content-Length fields or any Host): every case that luaio serves must
-- be a valid request to h11, except the forms that RFC 9112 allows a recipient and nginx takes.
describe("http request syntax, differential with h11", function()
    local python = "/usr/bin/python3"

    it("serves only what h11 takes as a valid request", function()
        -- The cases go to the oracle as hex, one a line; it prints ok or bad for each.
        local input = {}
        for i, c in ipairs(conformance.cases) do
            input[i] = (c.req:gsub(".", function(ch) return string.format("%02x", ch:byte()) end))
        end
        local oracle = [[
import sys, h11
for line in sys.stdin:
    data = bytes.fromhex(line.strip())
    conn = h11.Connection(h11.SERVER)
    verdict = "bad"
    try:
        conn.receive_data(data)
        ev = conn.next_event()
        if isinstance(ev, h11.Request):
            while True:
                ev = conn.next_event()
                if isinstance(ev, h11.EndOfMessage):
                    verdict = "ok"
                    break
                if ev is h11.NEED_DATA or ev is h11.PAUSED:
                    verdict = "incomplete"
                    break
    except h11.RemoteProtocolError:
        pass
    print(verdict)
]]
        local r = assert(process.run({ python, "-c", oracle }, { input = table.concat(input, "\n") .. "\n", timeout = 60000 }))
        assert.are.equal(0, r.code, r.stderr)
        local verdicts = {}
        for v in r.stdout:gmatch("%S+") do
            verdicts[#verdicts + 1] = v
        end
        assert.are.equal(#conformance.cases, #verdicts)
        -- Laxer than h11 on purpose, as nginx is (RFC 9112 lets a server accept these).
        local lax = {
            ["leading empty lines"] = true, -- 2.2: a server SHOULD ignore at least one
            ["UTF-8 bytes in target"] = true, -- nginx takes raw bytes above 0x7f
            ["two spaces after method"] = true, -- 3: a recipient MAY accept any whitespace
            ["chunk extension with space before semicolon"] = true, -- 7.1.1: BWS
            ["HTTP/1.2"] = true, ["HTTP/1.9"] = true, -- RFC 9110 2.5: served as 1.1
            ["space after the version"] = true, -- nginx takes it
            -- nginx's ignore_invalid_headers: a bad name is skipped, a line without colon is empty
            ["line without colon"] = true,
            ["non-token byte in a field name (ignored)"] = true,
            ["parenthesis in a field name (ignored)"] = true,
            ["UTF-8 in a field name (ignored)"] = true,
            ["trailer line without colon"] = true, -- trailer fields are skipped unread, as nginx does
        }
        local disagree = {}
        for i, c in ipairs(conformance.cases) do
            local want = c.luaio or c
            local served = want.status:match("^%d+") == "200" or want.status:match("^100 200") ~= nil
            if served and verdicts[i] == "bad" and not lax[c.name] then
                disagree[#disagree + 1] = c.name .. ": h11 rejects it, luaio serves it"
            end
        end
        assert.are.same({}, disagree)
    end)
end)
