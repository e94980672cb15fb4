-- fs: real files in a temporary directory; every call parks only its task.
local fs = require "fs"
local task = require "task"
local timer = require "timer"
local process = require "process"
local helper = require "helper"

local dir

local function path(name) return dir .. "/" .. name end

describe("fs", function()
    before_each(function()
        dir = assert(fs.mkdtemp(fs.tmpdir() .. "/luaio-fs-"))
    end)
    after_each(function()
        assert(fs.rm(dir, { recursive = true }))
    end)

    describe("whole files", function()
        it("writes, reads and appends", function()
            assert.is_true(fs.writeFile(path("a"), "hello"))
            assert.are.equal("hello", fs.readFile(path("a")))
            assert.is_true(fs.appendFile(path("a"), " world"))
            assert.are.equal("hello world", fs.readFile(path("a")))
            assert.is_true(fs.writeFile(path("a"), ""))
            assert.are.equal("", fs.readFile(path("a")))
        end)

        it("big files come back byte for byte, whatever their length, whole or in handle reads", function()
            -- Big reads become their Lua string without a copy (runtime/strbuf.h), and LuaJIT
            -- clears a new string's last word first: every length modulo 4 is checked, with a
            -- distinct last byte, and an equal string read twice.
            local unit = {}
            for i = 0, 255 do unit[#unit + 1] = string.char(i) end
            unit = table.concat(unit)
            local body = unit:rep(1100) -- 281,600 bytes
            -- No string equal to a file's content may be alive when it is read: LuaJIT would
            -- hand back that one (interning) and the read's own string would go unchecked.
            for _, n in ipairs({ 65536, 65537, 65538, 65539, 200003, #body }) do
                local head = body:sub(1, n - 1)
                local w = assert(fs.open(path("f" .. n), "w"))
                assert(w:write(head))
                assert(w:write("Z"))
                assert(w:close())
                local got = assert(fs.readFile(path("f" .. n)))
                assert.are.equal(n, #got)
                assert.is_true(got:sub(1, n - 1) == head, "readFile of " .. n .. " bytes")
                assert.are.equal("Z", got:sub(-1))
                local again = assert(fs.readFile(path("f" .. n)))
                assert.is_true(again == got)
                got, again = nil, nil
                local f = assert(fs.open(path("f" .. n)))
                local part = assert(f:read(n))
                assert(f:close())
                assert.is_true(part:sub(1, n - 1) == head, "f:read of " .. n .. " bytes")
                assert.are.equal("Z", part:sub(-1))
                part = nil
                collectgarbage()
            end
        end)

        it("reads files that report no size (/proc)", function()
            local s = assert(fs.readFile("/proc/self/status"))
            assert.truthy(s:find("Pid:", 1, true))
        end)

        it("writes atomically: the new content, the mode, and no temporary file left", function()
            assert(fs.writeFile(path("cfg"), "old"))
            assert.is_true(fs.writeFile(path("cfg"), "new", { atomic = true, mode = 384 }))
            assert.are.equal("new", fs.readFile(path("cfg")))
            assert.are.equal(384, fs.stat(path("cfg")).mode)
            local names = fs.readdir(dir)
            assert.are.equal(1, #names)
            assert.are.equal("cfg", names[1].name)
        end)

        it("an atomic write that fails leaves the old file and no temporary file", function()
            assert(fs.mkdir(path("d")))
            local ok, err = fs.writeFile(path("d"), "x", { atomic = true })
            assert.is_nil(ok)
            assert.are.equal("EISDIR", err.name)
            assert.are.equal(1, #fs.readdir(dir))
        end)

        it("reads a file of 32 MiB while other tasks run", function()
            local block = string.rep("x", 1024 * 1024)
            local f = assert(fs.open(path("big"), "w"))
            for _ = 1, 32 do assert(f:write(block)) end
            assert(f:close())
            -- A task that yields in a loop runs only while the reading task is parked: a blocking
            -- read returns before it ever runs. A loaded machine can leave the loop thread
            -- unscheduled for a whole read, so one read in three must let it run.
            local best = 0
            for _ = 1, 3 do
                local reading, turns = true, 0
                task.spawn(function()
                    while reading do
                        turns = turns + 1
                        task.yield()
                    end
                end)
                local data = assert(fs.readFile(path("big")))
                reading = false
                assert.are.equal(32 * 1024 * 1024, #data)
                best = math.max(best, turns)
                if best > 0 then break end
            end
            assert.is_true(best >= 1)
        end)

        it("a read that cannot finish (a FIFO without a writer) does not stall other tasks", function()
            assert(process.run({ "mkfifo", path("fifo") }))
            -- A writer of last resort, so that a blocking implementation ends the spec (failing)
            -- instead of hanging it.
            local late = assert(process.spawn("/bin/sh", { "-c", "sleep 5; echo late > " .. path("fifo") },
                { stdio = { "ignore", "ignore", "ignore" } }))
            local got
            task.spawn(function() got = { fs.readFile(path("fifo")) } end)
            sleep(20)
            assert.is_nil(got)
            local w = assert(fs.open(path("fifo"), "w"))
            assert(w:write("hello"))
            assert(w:close())
            for _ = 1, 200 do
                if got then break end
                sleep(5)
            end
            late:kill()
            late:wait()
            assert.are.equal("hello", got[1])
        end)
    end)

    describe("errors", function()
        it("carry the call and the path, and print them", function()
            local data, err = fs.readFile(path("missing"))
            assert.is_nil(data)
            assert.are.equal("ENOENT", err.name)
            assert.are.equal(-2, err.code)
            assert.are.equal("no such file or directory", err.message)
            assert.are.equal(path("missing"), err.path)
            assert.are.equal("ENOENT: no such file or directory, open '" .. path("missing") .. "'", tostring(err))
            local _, serr = fs.stat(path("missing"))
            assert.are.equal("ENOENT: no such file or directory, stat '" .. path("missing") .. "'", tostring(serr))
            local _, rerr = fs.rename(path("missing"), path("b"))
            assert.are.equal(path("b"), rerr.dest)
            assert.are.equal("ENOENT: no such file or directory, rename '" .. path("missing") .. "' -> '" .. path("b")
                .. "'", tostring(rerr))
            local _, oerr = fs.open(path("missing"))
            assert.are.equal(path("missing"), oerr.path)
        end)

        it("a handle's errors carry its path", function()
            assert(fs.writeFile(path("ro"), "x"))
            local f = assert(fs.open(path("ro"), "r"))
            local ok, err = f:write("y")
            assert.is_nil(ok)
            assert.are.equal("EBADF", err.name)
            assert.are.equal(path("ro"), err.path)
            assert(f:close())
        end)

        it("wrong argument types raise naming the function", function()
            assert.has_error(function() fs.readFile(42) end, "readFile: expected a path (a string) as argument 1, got number")
            assert.has_error(function() fs.writeFile("x", {}) end, "writeFile: expected data (a string) as argument 2, got table")
            assert.has_error(function() fs.stat(nil) end, "stat: expected a path (a string) as argument 1, got nil")
            assert.has_error(function() fs.mkdir("x", 5) end, "mkdir: expected an options table as argument 2, got number")
            assert.has_error(function() fs.open("x", "rw") end)
            assert.has_error(function() fs.readFile("a\0b") end, "readFile: the path in argument 1 contains a NUL byte")
            -- Node's encoding argument, or a misspelled option, is not silently ignored.
            assert.has_error(function() fs.readFile("x", "utf8") end,
                "readFile: takes only a path (got a string as argument 2): the content is returned as bytes")
            assert.has_error(function() fs.readFile("x", { encodin = "utf8" }) end,
                "readFile: takes only a path (got a table as argument 2): the content is returned as bytes")
            assert.has_error(function() fs.chmod("x") end)
            assert.has_error(function() fs.writeFile("x", "y", { mode = "rw" }) end)
        end)
    end)

    describe("handles", function()
        it("read, write, seek, stat, sync, truncate and close", function()
            local f = assert(fs.open(path("h"), "w+"))
            assert.is_true(f:write("0123456789"))
            assert.are.equal(10, f:seek("cur"))
            assert.are.equal(0, f:seek("set"))
            assert.are.equal("0123", f:read(4))
            assert.are.equal("89", f:read(100, 8)) -- at an offset: the position does not move
            assert.are.equal("456", f:read(3))
            assert.is_true(f:write("AB", 0))
            assert.are.equal(10, f:stat().size)
            assert.is_true(f:sync())
            assert.is_true(f:truncate(4))
            assert.are.equal(4, f:stat().size)
            assert.are.equal(4, f:seek("end"))
            local data, err = f:read()
            assert.is_nil(data)
            assert.are.equal("EOF", err.name)
            assert.is_true(f:close())
            assert.is_true(f:close()) -- a second close does nothing
            assert.has_error(function() f:read() end, "read: attempt to use a closed file")
            assert.are.equal("AB23", fs.readFile(path("h")))
        end)

        it("append mode writes at the end; wx refuses an existing file", function()
            assert(fs.writeFile(path("log"), "a"))
            local f = assert(fs.open(path("log"), "a"))
            assert(f:write("b"))
            assert(f:close())
            assert.are.equal("ab", fs.readFile(path("log")))
            local g, err = fs.open(path("log"), "wx")
            assert.is_nil(g)
            assert.are.equal("EEXIST", err.name)
        end)

        it("lines() reads lines in blocks, with \\r\\n and a last line without a newline", function()
            local parts = {}
            for i = 1, 20000 do parts[i] = "line " .. i end
            assert(fs.writeFile(path("l"), table.concat(parts, "\n") .. "\r\nlast"))
            local f = assert(fs.open(path("l")))
            local n, last = 0, nil
            for line in f:lines() do
                n = n + 1
                if n <= 20000 then assert.are.equal(parts[n], line) end
                last = line
            end
            assert(f:close())
            assert.are.equal(20001, n)
            assert.are.equal("last", last)
        end)

        it("close waits for a request of another task", function()
            assert(process.run({ "mkfifo", path("fifo") }))
            local f = assert(fs.open(path("fifo"), "r+")) -- O_RDWR: a FIFO opens at once
            local got, closed
            task.spawn(function() got = f:read(5) end)
            task.spawn(function()
                sleep(20)
                assert.is_nil(closed)
                local w = assert(fs.open(path("fifo"), "w"))
                assert(w:write("hello"))
                assert(w:close())
            end)
            sleep(5)
            assert.is_true(f:close()) -- parks until the read has its data
            closed = true
            assert.are.equal("hello", got)
        end)

        it("a forgotten handle is closed by the collector", function()
            assert(fs.writeFile(path("g"), "x"))
            local before = helper.fd_count()
            do
                local f = assert(fs.open(path("g")))
                assert.are.equal(before + 1, helper.fd_count())
                f = nil -- luacheck: ignore
            end
            collectgarbage()
            collectgarbage()
            assert.are.equal(before, helper.fd_count())
        end)
    end)

    describe("paths", function()
        it("stat and lstat give numbers and a type", function()
            assert(fs.writeFile(path("s"), "12345"))
            assert(fs.symlink(path("s"), path("ln")))
            local st = assert(fs.stat(path("s")))
            assert.are.equal("file", st.type)
            assert.are.equal(5, st.size)
            assert.are.equal("number", type(st.mode))
            assert.are.equal("number", type(st.mtime))
            assert.is_true(math.abs(st.mtime - os.time()) < 60)
            assert.are.equal("file", fs.stat(path("ln")).type)
            assert.are.equal("link", fs.lstat(path("ln")).type)
            assert.are.equal("directory", fs.stat(dir).type)
        end)

        it("exists and access", function()
            assert(fs.writeFile(path("e"), ""))
            assert.is_true(fs.exists(path("e")))
            assert.is_false(fs.exists(path("nope")))
            assert.is_false(fs.exists(path("e") .. "/below"))
            assert.is_true(fs.access(path("e"), "rw"))
            local ok, err = fs.access(path("nope"))
            assert.is_nil(ok)
            assert.are.equal("ENOENT", err.name)
        end)

        it("readdir gives sorted names with types; dir() iterates past one batch", function()
            assert(fs.mkdir(path("sub")))
            assert(fs.writeFile(path("f"), ""))
            local entries = fs.readdir(dir)
            assert.are.same({ { name = "f", type = "file" }, { name = "sub", type = "directory" } }, entries)
            for i = 1, 150 do assert(fs.writeFile(path("sub/" .. i), "")) end
            local seen, n = {}, 0
            for name, t in fs.dir(path("sub")) do
                assert.are.equal("file", t)
                seen[name] = true
                n = n + 1
            end
            assert.are.equal(150, n)
            assert.is_true(seen["1"] and seen["150"])
            assert.has_error(function() fs.dir(path("nope")) end)
            local _, err = fs.readdir(path("nope"))
            assert.are.equal("ENOENT", err.name)
        end)

        it("mkdir {recursive, mode} and rm {recursive, force}", function()
            assert.is_true(fs.mkdir(path("a/b/c"), { recursive = true, mode = 448 }))
            assert.is_true(fs.mkdir(path("a/b/c"), { recursive = true })) -- exists: fine
            assert.are.equal(448, fs.stat(path("a/b/c")).mode)
            local _, err = fs.mkdir(path("a"))
            assert.are.equal("EEXIST", err.name)
            assert(fs.writeFile(path("a/file"), ""))
            local _, nerr = fs.mkdir(path("a/file/x"), { recursive = true })
            assert.are.equal("ENOTDIR", nerr.name)
            local _, derr = fs.rm(path("a"))
            assert.are.equal("EISDIR", derr.name)
            assert(fs.symlink(dir, path("a/b/outside"))) -- a link is removed, not followed
            assert.is_true(fs.rm(path("a"), { recursive = true }))
            assert.is_false(fs.exists(path("a")))
            assert.is_true(fs.exists(dir))
            local _, rerr = fs.rm(path("a"))
            assert.are.equal("ENOENT", rerr.name)
            assert.is_true(fs.rm(path("a"), { force = true }))
        end)

        it("rename, unlink, copyFile, symlink, readlink, realpath, chmod, utime", function()
            assert(fs.writeFile(path("x"), "data"))
            assert.is_true(fs.rename(path("x"), path("y")))
            assert.is_true(fs.copyFile(path("y"), path("z")))
            assert.are.equal("data", fs.readFile(path("z")))
            local _, cerr = fs.copyFile(path("y"), path("z"), { exclusive = true })
            assert.are.equal("EEXIST", cerr.name)
            assert.is_true(fs.symlink("y", path("l")))
            assert.are.equal("y", fs.readlink(path("l")))
            assert.are.equal(fs.realpath(path("y")), fs.realpath(path("l")))
            assert.is_true(fs.chmod(path("y"), 256))
            assert.are.equal(256, fs.stat(path("y")).mode)
            assert.is_true(fs.utime(path("y"), 1000, 2000))
            assert.are.equal(2000, fs.stat(path("y")).mtime)
            assert.is_true(fs.unlink(path("y")))
            local _, uerr = fs.unlink(path("y"))
            assert.are.equal("ENOENT", uerr.name)
        end)
    end)

    describe("watch", function()
        it("next() parks until a change; close() ends it", function()
            local w = assert(fs.watch(dir))
            task.spawn(function()
                sleep(10)
                assert(fs.writeFile(path("new"), "x"))
            end)
            local ev = w:next()
            assert.are.equal("new", ev.filename)
            assert.is_true(ev.rename or ev.change)
            local after
            task.spawn(function() after = { w:next() } end)
            sleep(5)
            w:close()
            -- The waiting task is woken and runs on a later turn of the loop (a timer of a few ms
            -- may come first on a loaded machine).
            assert.is_true(require("helper").wait_for(function() return after ~= nil end))
            -- Events already queued may come first; once closed, next() gives nil.
            assert.is_nil(w:next())
            local none, err = fs.watch(path("missing"))
            assert.is_nil(none)
            assert.are.equal("ENOENT", err.name)
            assert.are.equal(path("missing"), err.path)
        end)
    end)
end)
