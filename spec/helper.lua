-- Shared helpers for specs: `local helper = require "helper"` (spec/ is on package.path).
local helper = {}

helper.luaio = os.getenv("LUAIO_BIN") or "build/luaio"
helper.source_dir = os.getenv("LUAIO_SOURCE_DIR") or "."

--- This process's pid (from /proc/self/stat, without the process module).
function helper.pid()
    if not helper._pid then
        local f = assert(io.open("/proc/self/stat"))
        helper._pid = tonumber(f:read("*a"):match("^(%d+)"))
        f:close()
    end
    return helper._pid
end

local ffi = require "ffi"
ffi.cdef [[
typedef struct DIR DIR;
struct luaio_spec_dirent { uint64_t d_ino; int64_t d_off; unsigned short d_reclen; unsigned char d_type; char d_name[256]; };
DIR* opendir(const char* name);
struct luaio_spec_dirent* readdir(DIR* d);
int closedir(DIR* d);
]]

--- Number of open file descriptors of this process. Read in-process: `ls` through io.popen
--- raced with popen, which closes the pipe's write end only after the child started, so the
--- count was sometimes one too high.
function helper.fd_count()
    local d = ffi.C.opendir("/proc/self/fd")
    assert(d ~= nil, "cannot open /proc/self/fd")
    local n = 0
    while ffi.C.readdir(d) ~= nil do n = n + 1 end
    ffi.C.closedir(d)
    return n - 3 -- ".", ".." and the directory's own descriptor
end

--- The whole content of a file, or nil if it cannot be opened.
function helper.read(path)
    local f = io.open(path)
    if not f then return nil end
    local s = f:read("*a")
    f:close()
    return s
end

--- Writes `src` to a temporary .lua file and returns its path.
function helper.script(src)
    local path = os.tmpname() .. ".lua"
    local f = assert(io.open(path, "w"))
    f:write(src)
    f:close()
    return path
end

--- Runs a shell command (blocking; for short commands only) and returns its stdout,
--- stderr and exit status.
function helper.sh(cmd)
    local out, err = os.tmpname(), os.tmpname()
    local ok, _, code = os.execute("(" .. cmd .. ") >" .. out .. " 2>" .. err)
    local function slurp(p)
        local f = io.open(p)
        local s = f and f:read("*a") or ""
        if f then f:close() end
        os.remove(p)
        return s
    end
    -- LuaJIT's os.execute returns the raw status (exit code * 256) unless built with 5.2 compat.
    local status
    if type(ok) == "number" then
        status = ok >= 256 and math.floor(ok / 256) or ok
    else
        status = code
    end
    return slurp(out), slurp(err), status
end

--- Runs luaio with the given shell-quoted arguments; returns stdout, stderr, exit status.
function helper.run(args, stdin)
    local cmd = helper.luaio .. " " .. args
    if stdin then
        local p = os.tmpname()
        local f = io.open(p, "w")
        f:write(stdin)
        f:close()
        cmd = cmd .. " <" .. p
    end
    return helper.sh(cmd)
end

--- Waits (up to `ms`, default 1000) until no libuv handle keeps the loop alive and, if
--- `fds` is given, the open descriptor count is back to it. Returns true, or false and what
--- is left. A leaked socket, timer or child fails the spec that calls this.
function helper.idle(fds, ms)
    local core = require "luaio.core"
    local waited = 0
    while true do
        local h, f = core.handles(), fds and helper.fd_count() or nil
        if h == 0 and (not fds or f <= fds) then return true end
        if waited >= (ms or 1000) then
            return false, ("%d handle(s) active, %s descriptors (baseline %s)"):format(h, tostring(f), tostring(fds))
        end
        sleep(10)
        waited = waited + 10
    end
end

return helper
