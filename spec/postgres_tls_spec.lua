-- postgres over TLS (libpq's own OpenSSL) against a real PostgreSQL 15 with ssl = on and a
-- certificate for 127.0.0.1 signed by a CA made at spec time (spec/servers/postgres.lua): the
-- certificate verified with sslrootcert, a wrong CA, sslmode=require against a server without
-- TLS, sslmode=disable, and libpq's OpenSSL beside luaio's own (runtime/lazy.cpp) in one process.
local postgres = require "postgres"
local tls = require "tls"
local helper = require "helper"
local pgserver = require "servers.postgres"

local server, plain, dir

local function sh(cmd)
    local out, err, code = helper.sh(cmd)
    assert(code == 0, cmd .. ": " .. out .. err)
    return out
end

setup(function()
    server = pgserver.start { tls = true }
    -- A CA that did not sign the server's certificate.
    dir = sh("mktemp -d /tmp/luaio-pgtls.XXXXXX"):gsub("%s+$", "")
    helper.make_ca(dir, "other")
end)

teardown(function()
    if server then server:stop() end
    if plain then plain:stop() end
    if dir then sh("rm -rf " .. dir) end
end)

local function options(srv, extra)
    local o = {}
    for k, v in pairs(srv.options) do o[k] = v end
    for k, v in pairs(extra) do o[k] = v end
    return o
end

-- Whether the connection's session is encrypted, as the server sees it.
local function ssl_of(db)
    local rows = assert(db:query("select ssl, version from pg_stat_ssl where pid = pg_backend_pid()"))
    return rows[1].ssl, rows[1].version
end

describe("postgres over TLS", function()
    it("verifies the server's certificate with sslmode=verify-full and sslrootcert", function()
        local db, err = postgres.connect(options(server, { sslmode = "verify-full", sslrootcert = server.ca }))
        assert(db, err and tostring(err))
        local ssl, version = ssl_of(db)
        assert.is_true(ssl)
        assert.matches("^TLSv1%.[23]$", version)
        db:close()
        -- The same through the URL's query string.
        local url = server.url .. "?sslmode=verify-full&sslrootcert=" .. server.ca
        local db2, err2 = postgres.connect(url)
        assert(db2, err2 and tostring(err2))
        assert.is_true((ssl_of(db2)))
        db2:close()
    end)

    it("fails with EPG and libpq's reason when the certificate is not signed by sslrootcert", function()
        local db, err = postgres.connect(options(server, { sslmode = "verify-full", sslrootcert = dir .. "/other.pem" }))
        assert.is_nil(db)
        assert.are.equal("EPG", err.name)
        assert.truthy(err.message:find("certificate verify failed", 1, true), err.message)
        -- A missing sslrootcert file is named in the error.
        local db2, err2 = postgres.connect(options(server, { sslmode = "verify-full", sslrootcert = dir .. "/none.pem" }))
        assert.is_nil(db2)
        assert.are.equal("EPG", err2.name)
        assert.truthy(err2.message:find(dir .. "/none.pem", 1, true), err2.message)
    end)

    it("checks the host name with verify-full, not with verify-ca", function()
        -- other.example is not in the certificate; hostaddr sends the connection to 127.0.0.1.
        local url = ("postgresql://%s:%s@other.example:%d/postgres?hostaddr=127.0.0.1&sslrootcert=%s&sslmode=")
            :format(pgserver.user, pgserver.password, server.port, server.ca)
        local db, err = postgres.connect(url .. "verify-full")
        assert.is_nil(db)
        assert.are.equal("EPG", err.name)
        assert.truthy(err.message:find("does not match host name", 1, true), err.message)
        local db2, err2 = postgres.connect(url .. "verify-ca")
        assert(db2, err2 and tostring(err2))
        assert.is_true((ssl_of(db2)))
        db2:close()
    end)

    it("connects without TLS with sslmode=disable", function()
        local db, err = postgres.connect(options(server, { sslmode = "disable" }))
        assert(db, err and tostring(err))
        assert.is_false((ssl_of(db)))
        db:close()
    end)

    it("fails with EPG when sslmode=require meets a server without TLS", function()
        plain = pgserver.start()
        local db, err = postgres.connect(options(plain, { sslmode = "require" }))
        assert.is_nil(db)
        assert.are.equal("EPG", err.name)
        assert.truthy(err.message:find("server does not support SSL", 1, true), err.message)
        plain:stop()
        plain = nil
    end)
end)

describe("libpq's OpenSSL beside luaio's", function()
    -- luaio's TLS echo through its own OpenSSL, then a TLS query through libpq's, then TLS again.
    local function both(srv)
        local echo = assert(tls.createServer(0, helper.echo, { host = "127.0.0.1", cert = srv.cert, key = srv.key }))
        local function roundtrip(line)
            local sock = assert(tls.connect(echo:address().port, "127.0.0.1", { ca = srv.ca }))
            assert.is_nil(sock:write(line .. "\n"))
            assert.are.equal(line, sock:readline())
            assert.is_true(sock:tlsInfo().authorized)
            sock:close()
        end
        roundtrip("before")
        local db, err = postgres.connect(options(srv, { sslmode = "verify-full", sslrootcert = srv.ca }))
        assert(db, err and tostring(err))
        assert.is_true((ssl_of(db)))
        roundtrip("between")
        assert.are.equal(2, db:query("select 1 + 1 as n")[1].n)
        db:close()
        roundtrip("after")
        echo:close()
    end

    it("work in one process, libpq loaded first", function()
        both(server)
    end)

    it("work in one process, luaio's OpenSSL loaded first", function()
        -- A new process, so that luaio maps OpenSSL before the postgres module loads libpq.
        local path = helper.script(([[
            local tls = require "tls"
            local echo = assert(tls.createServer(0, function(s) s:write(s:readline() .. "\n") s:close() end,
                { host = "127.0.0.1", cert = %q, key = %q }))
            local sock = assert(tls.connect(echo:address().port, "127.0.0.1", { ca = %q }))
            sock:write("hi\n")
            assert(sock:readline() == "hi")
            sock:close()
            local postgres = require "postgres"
            local db = assert(postgres.connect { host = "127.0.0.1", port = %d, user = "postgres",
                password = %q, database = "postgres", sslmode = "verify-full", sslrootcert = %q })
            local rows = assert(db:query("select ssl from pg_stat_ssl where pid = pg_backend_pid()"))
            db:close()
            echo:close()
            print(rows[1].ssl)
        ]]):format(server.cert, server.key, server.ca, server.port, pgserver.password, server.ca))
        local out, err, code = helper.run(path)
        os.remove(path)
        assert.are.equal(0, code, err)
        assert.are.equal("true\n", out)
    end)
end)
