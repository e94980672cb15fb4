--- tcp: TCP servers and clients over IPv4 and IPv6 (see docs/tcp.md).
--
--   local server, err = tcp.createServer(port, function(sock, server) ... end[, options])
--   local sock, err = tcp.connect(port[, host[, options]])
--   tcp.isIP(address) -> 4 | 6 | 0
--
-- The sockets and servers are C++ objects (modules/tcp.cpp, registered as luaio.tcp); this
-- file adds what is easier in Lua: host names resolved through the dns module, and the
-- master's listening socket adopted in a worker of `luaio --workers`. Each connection's task
-- is started by C++, which closes its socket when the task ends (luaio::spawn's close_idx).
local core = require "luaio.tcp"
local errors = require "luaio.errors"
local new_error, raise = errors.new, errors.raise

local type, pcall, require, pairs = type, pcall, require, pairs
local format = string.format
local listen, connect, isIP = core.listen, core.connect, core.isIP

local tcp = {}

tcp.isIP = isIP

-- The process module when this process is a worker of `luaio --workers N`, else nil.
local function worker_process()
    local process = package.loaded.process
    return process and process.workerId and process or nil
end

local function check_port(port, fname)
    if type(port) ~= "number" then
        raise(fname, format("expected a port number as argument 1, got %s", type(port)))
    end
end

-- The addresses of `host` (an IP literal is its own address).
local function resolve(host, family)
    if isIP(host) ~= 0 then
        return { host }
    end
    local ok, dns = pcall(require, "dns")
    if not ok then
        return nil, new_error("EAFNOSUPPORT", "host names need the dns module", { host = host })
    end
    local addrs, err = dns.lookup(host, family)
    if not addrs or #addrs == 0 then
        return nil, err or new_error("ENOTFOUND", "host not found", { host = host })
    end
    return addrs
end

-- tcp.createServer, for servers built on it (http): fname is the public name in messages.
local function create_server(port, onconnect, options, fname)
    check_port(port, fname)
    if options ~= nil and type(options) ~= "table" then
        raise(fname, "expected an options table as argument 3, got " .. type(options))
    end
    local host = options and options.host
    if type(host) == "string" and isIP(host) == 0 then
        local addrs, err = resolve(host, options.family)
        if not addrs then
            return nil, err
        end
        local copy = {}
        for k, v in pairs(options) do
            copy[k] = v
        end
        copy.host = addrs[1]
        options = copy
    end
    if options == nil or options.fd == nil then
        -- Socket activation: systemd's socket for this port, if it passed one (docs/process.md).
        local fd = require("process")._activated(port)
        if fd then
            local copy = {}
            for k, v in pairs(options or {}) do
                copy[k] = v
            end
            copy.fd = fd
            options = copy
        end
    end
    local process = worker_process()
    if process and (options == nil or options.fd == nil) then
        -- In a worker of `luaio --workers`: listen on the master's socket for this slot, so
        -- connections queued while this worker restarts or is replaced are never reset.
        local copy = {}
        for k, v in pairs(options or {}) do
            copy[k] = v
        end
        local family = copy.family or 4
        local fd, real = process.listenSocket(copy.host or (family == 6 and "::" or "0.0.0.0"), port,
            copy.tcp_backlog or 511)
        if not fd then
            return nil, real
        end
        copy.fd = fd
        options = copy
    end
    local server, err = listen(port, onconnect, options, fname)
    if err and host ~= nil and isIP(host) == 0 then
        err.host = host
    end
    if server then
        -- A graceful stop (SIGTERM, SIGINT, process.shutdown()) stops the server and waits for
        -- its connections (see docs/process.md).
        require("process")._serve(server)
    end
    return server, err
end
tcp._createServer = create_server

--- Listens on port (0: a free port, see server:address()) and runs onconnect(sock, server)
--- in a new task for every connection. Returns the server, or nil and an error table.
function tcp.createServer(port, onconnect, options)
    local server, err = create_server(port, onconnect, options, "tcp.createServer")
    return server, err
end

-- tcp.connect, for clients built on it (tls): fname is the public name in messages.
local function connect_to(port, host, options, fname)
    check_port(port, fname)
    if type(host) == "table" and options == nil then
        host, options = nil, host
    end
    if options ~= nil and type(options) ~= "table" then
        raise(fname, "expected an options table as argument 3, got " .. type(options))
    end
    if host == nil then
        host = options and options.family == 6 and "::1" or "127.0.0.1"
    elseif type(host) ~= "string" then
        raise(fname, "expected a host name or address as argument 2, got " .. type(host))
    end
    if isIP(host) ~= 0 then
        return connect(port, host, options)
    end
    local addrs, err = resolve(host, options and options.family)
    if not addrs then
        return nil, err
    end
    -- Each address in turn, until one accepts.
    local sock
    for i = 1, #addrs do
        sock, err = connect(port, addrs[i], options)
        if sock then
            return sock
        end
    end
    err.host = host -- the name asked, beside the address that failed last
    return nil, err
end

tcp._connect = connect_to

--- Connects to host:port (host: an IP address or a name, default 127.0.0.1, or ::1 with
--- family 6). Returns the socket, or nil and an error table (ECONNREFUSED, ETIMEDOUT, ...).
function tcp.connect(port, host, options)
    return connect_to(port, host, options, "tcp.connect")
end

return tcp
