--- fs: files and directories; every call parks only its task (see docs/fs.md).
--
--   local data, err = fs.readFile(path)
--   assert(fs.writeFile(path, data, { atomic = true }))
--   local f = assert(fs.open(path, "r"))
--   for line in f:lines() do ... end
--   f:close()
--
-- The work is C++'s (modules/fs.cpp, registered as luaio.fs: libuv's fs requests in its thread
-- pool); this file adds what reads better in Lua: options, f:lines(), fs.dir() and fs.exists().
local core = require "luaio.fs"

local type, error, pairs = type, error, pairs
local find, sub = string.find, string.sub
local concat = table.concat

local fs = {}

for name, fn in pairs(core) do
    if name ~= "write_file" and name ~= "copy_file" and name ~= "lookup" then fs[name] = fn end
end

local function check_options(options, fname, idx)
    if options ~= nil and type(options) ~= "table" then
        error(fname .. ": expected an options table as argument " .. idx .. ", got " .. type(options), 3)
    end
    return options or {}
end

--- writeFile(path, data[, {mode = 0o666, atomic = false}]): true or nil, err. With atomic, the
--- data goes to a temporary file in the same directory, which is fsynced and renamed over path.
function fs.writeFile(path, data, options)
    local o = check_options(options, "writeFile", 3)
    return core.write_file(path, data, o.mode, o.atomic, false)
end

--- appendFile(path, data[, {mode}]): true or nil, err.
function fs.appendFile(path, data, options)
    local o = check_options(options, "appendFile", 3)
    return core.write_file(path, data, o.mode, false, true)
end

--- copyFile(src, dest[, {exclusive = false}]): a copy-on-write clone where the file system
--- offers one (btrfs, xfs), else a kernel copy. exclusive: fail with EEXIST if dest exists.
function fs.copyFile(src, dest, options)
    local o = check_options(options, "copyFile", 3)
    return core.copy_file(src, dest, o.exclusive)
end

--- exists(path): true or false (false, err for an error other than ENOENT and ENOTDIR).
function fs.exists(path)
    local st, err = core.stat(path)
    if st then return true end
    if err.name == "ENOENT" or err.name == "ENOTDIR" then return false end
    return false, err
end

--- dir(path): an iterator over a directory's entries, read 64 at a time, for directories too
--- big for readdir's one table: `for name, type in fs.dir(path) do ... end`. Raises if the
--- directory cannot be opened or read (readdir returns the error instead).
-- The loop's state is a table given to one shared iterator, not a closure per loop: a compiled
-- loop keeps the function it calls alive for the trace's life, and with a closure the directory
-- of a loop left early would stay open (docs/CONTRIBUTING-internals.md).
local function dir_next(s)
    local batch, i = s.batch, s.i
    if not batch or i == #batch then
        if not batch and i < 0 then return nil end
        local b, rerr = s.d:read()
        if not b then
            s.d:close()
            s.batch, s.i = nil, -1
            if rerr then error(rerr, 2) end
            return nil
        end
        batch, i = b, 0
        s.batch = b
    end
    i = i + 1
    s.i = i
    local e = batch[i]
    return e.name, e.type
end

function fs.dir(path)
    local d, err = core.opendir(path)
    if not d then error(err, 2) end
    return dir_next, { d = d, batch = false, i = 0 }
end

-- f:lines(): the file's lines without their "\n" (or "\r\n"), read ahead in blocks of 64 KiB.
-- A read error other than the end of the file raises.
-- The registry holds the file class's metatable by name (luaio::new_class).
local file_index = debug.getregistry()["luaio.fs.file"].__index

local pending = {} -- concat's scratch (nothing yields between filling and using it)

-- One shared iterator over the loop's state (see dir_next for why not a closure).
local function lines_next(s)
    while true do
        local buf = s.buf
        local nl = find(buf, "\n", 1, true)
        if nl then
            local line = sub(buf, 1, nl - 1)
            s.buf = sub(buf, nl + 1)
            if sub(line, -1) == "\r" then line = sub(line, 1, -2) end
            return line
        end
        if s.done then
            if buf == "" then return nil end
            s.buf = ""
            return buf
        end
        local data, err = s.f:read(65536)
        if not data then
            if err.name ~= "EOF" then error(err, 2) end
            s.done = true
        else
            pending[1], pending[2] = s.buf, data
            s.buf = concat(pending, "", 1, 2)
            pending[1], pending[2] = nil, nil
        end
    end
end

local function lines(f)
    return lines_next, { f = f, buf = "", done = false }
end

file_index.lines = lines

return fs
