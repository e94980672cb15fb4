-- A throwaway PostgreSQL server for specs: `local pg = require("servers.postgres").start()`.
--
-- initdb into a temporary directory, then the postmaster on 127.0.0.1 and a free port, run as
-- the `postgres` system user (PostgreSQL refuses to run as root, and CI runs as root). The
-- superuser `postgres` has the password `secret` over TCP (scram-sha-256), so a wrong password
-- can be tested. The postmaster is our child: stop() ends it
-- by PID, kill(signal) signals it, and pause()/resume() stop and continue the postmaster and its
-- children (by PID), a server that stops answering.
--
-- start{tls = true} turns TLS on: a CA and a certificate for 127.0.0.1 and localhost signed by it
-- are made in the server's directory (server.ca is the CA's file, server.cert and server.key the
-- server's); the key is the postgres user's with mode 0600, which PostgreSQL demands. pg_hba's
-- `host` lines take connections with and without TLS.
--
--   local server = pgserver.start()          -- asserts that it started: a spec never skips
--   server.port  server.url  server.options  -- connect options {host, port, user, password, database}
--   server:kill("SIGKILL")  server:restart()  server:pause()  server:resume()  server:stop()
local process = require "process"
local tcp = require "tcp"
local timer = require "timer"

local M = {}
M.user, M.password = "postgres", "secret"

local BIN = "/usr/lib/postgresql/15/bin/"

local function run(cmd, options)
    local r, err = process.run(cmd, options)
    assert(r, err and tostring(err))
    assert(r.code == 0, ("%s failed (%s): %s%s"):format(cmd[1] or cmd, tostring(r.code), r.stdout, r.stderr))
    return r.stdout
end

local free_port = require("helper").free_port

local Server = {}
Server.__index = Server

-- True once the server accepts logins (pg_isready: it listens before it has recovered, and
-- answers "the database system is starting up" until then).
local function accepting(port)
    local r = process.run({ BIN .. "pg_isready", "-q", "-h", "127.0.0.1", "-p", tostring(port) })
    return r ~= nil and r.code == 0
end

function Server:_spawn()
    local args = {
        "-D", self.dir .. "/data", "-p", tostring(self.port), "-h", "127.0.0.1", "-k", self.dir,
        "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        "-c", "max_connections=60", "-c", "shared_buffers=16MB", "-c", "logging_collector=off",
        "-c", "log_min_messages=fatal", "-c", "log_min_error_statement=panic",
    }
    if self.cert then
        for _, a in ipairs({ "-c", "ssl=on", "-c", "ssl_cert_file=" .. self.cert, "-c", "ssl_key_file=" .. self.key }) do
            args[#args + 1] = a
        end
    end
    local child, err = process.spawn(BIN .. "postgres", args, { uid = "postgres", gid = "postgres", stdio = { "ignore", "ignore", "ignore" } })
    assert(child, err and tostring(err))
    self.child, self.pid = child, child.pid
    -- Recovery after a SIGKILL can take a while on a loaded machine: wait up to 30 s.
    for _ = 1, 600 do
        if accepting(self.port) then return self end
        timer.sleep(50)
    end
    self:stop()
    error("servers.postgres: the server did not start on port " .. self.port)
end

-- A CA and a certificate for 127.0.0.1 and localhost signed by it, in dir (helper.make_ca and
-- make_cert).
local function make_certs(self)
    local d = self.dir
    self.ca, self.cert, self.key = d .. "/ca.pem", d .. "/server.pem", d .. "/server.key"
    local helper = require "helper"
    helper.make_ca(d, "ca")
    helper.make_cert(d, "server", "DNS:localhost,IP:127.0.0.1", "ca")
    run({ "chmod", "0600", self.key })
end

--- Starts a new server (initdb, then the postmaster); fails the calling spec if it cannot.
--- options.tls: with TLS on (above).
function M.start(options)
    local dir = run({ "mktemp", "-d", "/tmp/luaio-pg.XXXXXX" }):gsub("%s+$", "")
    local self = setmetatable({ dir = dir, port = free_port() }, Server)
    local pwfile = dir .. "/pw"
    local f = assert(io.open(pwfile, "w"))
    f:write(M.password, "\n")
    f:close()
    if options and options.tls then make_certs(self) end
    run({ "chown", "-R", "postgres:postgres", dir })
    run({ BIN .. "initdb", "-D", dir .. "/data", "-U", M.user, "--pwfile=" .. pwfile, "-E", "UTF8",
          "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync" },
        { uid = "postgres", gid = "postgres" })
    self:_spawn()
    self.options = { host = "127.0.0.1", port = self.port, user = M.user, password = M.password, database = "postgres" }
    self.url = ("postgresql://%s:%s@127.0.0.1:%d/postgres"):format(M.user, M.password, self.port)
    return self
end

--- Sends a signal to the postmaster (by PID); waits for it to end when the signal ends it.
function Server:kill(signal)
    if not self.child then return end
    local children = self:_children()
    process.kill(self.pid, signal or "SIGTERM")
    if signal == "SIGSTOP" or signal == "SIGCONT" then return end
    self.child:wait()
    self.child = nil
    -- The backends and helper processes leave when they see the postmaster gone; a new
    -- postmaster on this data directory refuses to start while they hold its shared memory.
    for _ = 1, 200 do
        local alive = false
        for _, pid in ipairs(children) do
            local f = io.open("/proc/" .. pid .. "/stat")
            local st = f and f:read("*a") or ""
            if f then f:close() end
            if st ~= "" and not st:match("^%d+ %b() Z") then alive = true end
        end
        if not alive then break end
        timer.sleep(50)
    end
end

-- The PIDs of the postmaster's children (backends and helpers: each is a session leader of its
-- own, so a process group does not reach them).
function Server:_children()
    local r = assert(process.run({ "ps", "-o", "pid=", "--ppid", tostring(self.pid) }))
    local pids = {}
    for pid in r.stdout:gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
    return pids
end

--- Stops the whole server (the postmaster first, so that it starts no new backend, then its
--- children) from answering; resume() lets it go on.
function Server:pause()
    process.kill(self.pid, "SIGSTOP")
    local children = self:_children()
    for _, pid in ipairs(children) do process.kill(pid, "SIGSTOP") end
    -- SIGSTOP is delivered asynchronously: wait until each process has stopped.
    local helper = require "helper"
    assert(helper.wait_stopped(self.pid), "servers.postgres: the postmaster did not stop")
    for _, pid in ipairs(children) do helper.wait_stopped(pid) end
end

function Server:resume()
    for _, pid in ipairs(self:_children()) do process.kill(pid, "SIGCONT") end
    process.kill(self.pid, "SIGCONT")
end

--- Starts the server again on the same port and data (after kill or stop).
function Server:restart()
    assert(not self.child, "servers.postgres: restart of a running server")
    return self:_spawn()
end

--- Stops the server (fast shutdown) and removes its directory.
function Server:stop()
    if self.child then
        self:resume()
        self:kill("SIGINT")
    end
    if self.dir then
        os.execute("rm -rf '" .. self.dir .. "'")
        self.dir = nil
    end
end

return M
