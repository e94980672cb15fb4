-- A real redis-server for specs: `local server = require("servers.redis").start{password = "pw"}`.
-- It listens on 127.0.0.1 on a free port (helper.free_port: below the ephemeral range), keeps its files in a
-- temporary directory, saves nothing, and is stopped by its PID (server:stop(), in teardown).
-- A server that does not start fails the spec (assert), it never skips it.
--   server.port  server.pid  server.dir
--   server:stop()     -- SIGTERM, waits for it, removes the directory
--   server:kill()     -- SIGKILL (a crash); server:restart() starts it again on the same port
--   server:pause()    -- SIGSTOP: it stops answering; server:resume() -- SIGCONT
--   server:cli(...)   -- redis-cli against it (blocking; short commands only): its output
local process = require "process"
local tcp = require "tcp"
local timer = require "timer"

local M = {}

local free_port = require("helper").free_port

local Server = {}
Server.__index = Server

local function launch(self)
    local tls = self.opts.tls -- {cert =, key =}: TLS only, on the port
    local args = { "--port", tls and "0" or tostring(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--save", "",
        "--appendonly", "no", "--daemonize", "no", "--logfile", self.dir .. "/redis.log", "--protected-mode", "no" }
    if self.opts.password then
        args[#args + 1] = "--requirepass"
        args[#args + 1] = self.opts.password
    end
    if tls then
        for _, a in ipairs({ "--tls-port", tostring(self.port), "--tls-cert-file", tls.cert, "--tls-key-file", tls.key,
            "--tls-auth-clients", "no" }) do
            args[#args + 1] = a
        end
    end
    for _, a in ipairs(self.opts.args or {}) do args[#args + 1] = a end
    local child = assert(process.spawn("redis-server", args, { stdio = { "ignore", "ignore", "ignore" } }))
    self.child, self.pid = child, child.pid
    -- Ready once it accepts a connection (bounded).
    for _ = 1, 400 do
        local sock = tcp.connect(self.port, "127.0.0.1")
        if sock then
            sock:close()
            return
        end
        timer.sleep(10)
    end
    self:kill()
    error("redis-server did not start on port " .. self.port .. ": " .. (io.open(self.dir .. "/redis.log") or
        { read = function() return "" end }):read("*a"))
end

function M.start(opts)
    local self = setmetatable({ opts = opts or {} }, Server)
    local f = assert(io.popen("mktemp -d /tmp/luaio-redis.XXXXXX"))
    self.dir = f:read("*l")
    f:close()
    self.port = free_port()
    launch(self)
    return self
end

function Server:kill()
    if self.child then
        self.child:kill("SIGKILL")
        self.child:wait()
        self.child = nil
    end
end

function Server:restart()
    self:kill()
    launch(self)
end

function Server:pause()
    process.kill(self.pid, "SIGSTOP")
    -- SIGSTOP is delivered asynchronously: a reply could still go out after kill() returned.
    assert(require("helper").wait_stopped(self.pid), "servers.redis: the server did not stop")
end

function Server:resume()
    process.kill(self.pid, "SIGCONT")
end

function Server:stop()
    if self.child then
        process.kill(self.pid, "SIGCONT")
        self.child:kill("SIGTERM")
        self.child:wait()
        self.child = nil
    end
    if self.dir then
        os.execute("rm -rf '" .. self.dir .. "'")
        self.dir = nil
    end
end

function Server:cli(...)
    local args = { "redis-cli", "-p", tostring(self.port) }
    if self.opts.password then
        args[#args + 1] = "--no-auth-warning"
        args[#args + 1] = "-a"
        args[#args + 1] = self.opts.password
    end
    for _, a in ipairs({ ... }) do args[#args + 1] = a end
    local r = assert(process.run(args))
    return (r.stdout:gsub("\n$", ""))
end

return M
