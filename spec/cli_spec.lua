-- The luaio command line: options, arg, exit codes, errors, stdin, the prompt.
local helper = require "helper"
local run, script = helper.run, helper.script

describe("luaio command line", function()
    it("-v prints the versions of luaio and the libraries it was built with", function()
        local out, _, status = run("-v")
        assert.are.equal(0, status)
        assert.matches("^luaio %d+%.%d+%.%d+\n", out)
        for _, lib in ipairs({ "LuaJIT 2%.1", "libuv 1%.", "c%-ares 1%.", "llhttp 8%.", "OpenSSL 3%." }) do
            assert.matches(lib, out)
        end
        assert.are.equal(out, (run("--version")))
    end)

    it("maps no OpenSSL library until the first TLS call needs it (start-up cost)", function()
        -- libcrypto alone costs every start ~1.7 ms when linked (runtime/lazy.cpp).
        local code = [[
            local function mapped()
                local f = assert(io.open("/proc/self/maps"))
                local maps = f:read("*a")
                f:close()
                return (maps:find("libssl", 1, true) ~= nil), (maps:find("libcrypto", 1, true) ~= nil)
            end
            print("before", mapped())
            local probe = assert(require("tcp").createServer(0, function() end))
            local port = probe:address().port
            probe:close()
            local res, err = require("http").get("https://127.0.0.1:" .. port .. "/")
            print("refused", res == nil and err.name)
            print("after", mapped())
        ]]
        local out, err, status = run(script(code))
        assert.are.equal(0, status, err)
        assert.matches("before\tfalse\tfalse\n", out)
        assert.matches("refused\tECONNREFUSED\n", out)
        assert.matches("after\ttrue\ttrue\n", out)
    end)

    it("-h prints the usage", function()
        local out, _, status = run("-h")
        assert.are.equal(0, status)
        assert.matches("usage: luaio", out, 1, true)
        assert.matches("man luaio", out, 1, true)
    end)

    it("rejects an unknown option with status 1", function()
        local _, err, status = run("--bogus")
        assert.are.equal(1, status)
        assert.matches("unrecognized option '--bogus'", err, 1, true)
        _, err, status = run("-e")
        assert.are.equal(1, status)
        assert.matches("'-e' needs an argument", err, 1, true)
    end)

    it("--workers takes a number or a script, and the master checks the script before forking", function()
        local _, err, status = run("--workers abc /dev/null")
        assert.are.equal(1, status)
        assert.matches("--workers needs a number of workers between 1 and 1024, got 'abc'", err, 1, true)
        -- The master exits at once, without starting workers that cannot run.
        _, err, status = run("--workers 1 /nonexistent/nosuch.lua")
        assert.are.equal(1, status)
        assert.matches("cannot open /nonexistent/nosuch.lua", err, 1, true)
        assert.not_matches("restarting", err, 1, true)
        local bad = script("print(1")
        _, err, status = run("--workers 1 " .. bad)
        assert.are.equal(1, status)
        assert.matches(bad .. ":1:", err, 1, true)
        os.remove(bad)
    end)

    it("--check compiles the script and its local requires without running them", function()
        local app = script([[#!/usr/bin/env luaio
local m = require "checkmod_a"
local http = require("http") -- luaio's own: not checked
io.open("/tmp/luaio-check-ran", "w"):close()
]])
        local dir = app:match("^(.*)/")
        local function write(name, src)
            local f = assert(io.open(dir .. "/" .. name, "w"))
            f:write(src)
            f:close()
        end
        write("checkmod_a.lua", "local b = require('checkmod_b')\nreturn {}\n")
        write("checkmod_b.lua", "local x = 1\n\nlocal y = = 2\nreturn x\n")
        os.remove("/tmp/luaio-check-ran")
        local out, err, status = run("--check " .. app)
        assert.are.equal(1, status)
        assert.matches(dir .. "/checkmod_b.lua:3: unexpected symbol near '='", err, 1, true)
        write("checkmod_b.lua", "return 2\n")
        out, err, status = run("--check " .. app)
        assert.are.equal(0, status, err)
        assert.matches("syntax ok (3 files)", out, 1, true)
        assert.is_nil(io.open("/tmp/luaio-check-ran")) -- nothing ran
        _, err, status = run("--check " .. dir .. "/no-such-app.lua")
        assert.are.equal(1, status)
        assert.matches("cannot open", err, 1, true)
        os.remove(dir .. "/checkmod_a.lua")
        os.remove(dir .. "/checkmod_b.lua")
        os.remove(app)
    end)

    it("-e runs code, several times in order, and -l requires a library", function()
        local out, _, status = run([[-e 'x = 1' -e 'print(x + 1)' -l task -e 'print(type(task.spawn))']])
        assert.are.equal(0, status)
        assert.are.equal("2\nfunction\n", out)
        -- A library that cannot be found is the user's mistake, not a line of luaio's own lib/.
        local _, err
        _, err, status = run("-l nosuchlibrary -e 'print(1)'")
        assert.are.equal(1, status)
        assert.matches("^luaio: module 'nosuchlibrary' not found:", err)
        assert.is_nil(err:find("lib/luaio", 1, true), err)
    end)

    it("passes arguments in arg and ... as the stock interpreter", function()
        local path = script([[print(arg[0] == ..., arg[1], arg[2], select("#", ...), arg[-1] ~= nil)
print(...)]])
        local out, _, status = run(path .. " a 'b c'")
        assert.are.equal(0, status)
        assert.are.equal("false\ta\tb c\t2\ttrue\na\tb c\n", out)
        local probe = script("print(arg[-2], arg[-1], arg[0])")
        out = run("-e 'x = 1' " .. probe)
        assert.are.equal("-e\tx = 1\t" .. probe .. "\n", out)
    end)

    it("finds modules beside the script", function()
        local path = script([[print(require("mymod").hello)]])
        local dir = path:match("^(.*)/")
        local f = assert(io.open(dir .. "/mymod.lua", "w"))
        f:write("return { hello = 'from beside' }")
        f:close()
        local out, err, status = run(path)
        os.remove(dir .. "/mymod.lua")
        assert.are.equal(0, status, err)
        assert.are.equal("from beside\n", out)
    end)

    it("honours LUA_PATH and LUA_CPATH, where ';;' stands for the default path as in lua(1)", function()
        local dir = script(""):match("^(.*)/")
        local f = assert(io.open(dir .. "/envpathmod.lua", "w"))
        f:write("return 'from LUA_PATH'")
        f:close()
        local show = [[-e 'print(package.path) print(package.cpath) print((pcall(require, "envpathmod")))']]
        local function paths(env)
            local out, err, status = helper.sh(env .. " " .. helper.luaio .. " " .. show)
            assert.are.equal(0, status, err)
            return out:match("^([^\n]*)\n([^\n]*)\n([^\n]*)\n$")
        end
        local function templates(path)
            local set, n = {}, 0
            for t in (path .. ";"):gmatch("([^;]*);") do
                assert.are_not.equal("", t, "an empty template in " .. path)
                assert.is_nil(set[t], t .. " twice in " .. path)
                set[t], n = true, n + 1
            end
            return set, n
        end
        local default_path, default_cpath = paths("")
        local only_path, _, found_only = paths("LUA_PATH='" .. dir .. "/?.lua'")
        local path, cpath, found = paths("LUA_PATH='" .. dir .. "/?.lua;;' LUA_CPATH='/nowhere/?.so;;'")
        os.remove(dir .. "/envpathmod.lua")
        assert.are.equal("true", found_only)
        assert.are.equal("true", found)
        local all, with = templates(path), templates(cpath)
        assert.is_true(all[dir .. "/?.lua"])
        assert.is_true(with["/nowhere/?.so"])
        -- Every template of the default paths is still searched, LuaJIT's own included.
        for t in pairs(templates(default_path)) do assert.is_true(all[t], t) end
        for t in pairs(templates(default_cpath)) do assert.is_true(with[t], t) end
        assert.is_truthy(default_path:find("/usr/share/luajit-2.1", 1, true))
        -- Without ';;' LUA_PATH replaces LuaJIT's default (Debian's directories stay, documented).
        assert.is_nil(only_path:find("/usr/share/luajit-2.1", 1, true))
        templates(only_path)
    end)

    it("loads Lua 5.1 C modules from Debian (cjson, lfs)", function()
        local out, err, status = run([[-e 'print(require("cjson").encode({1,2}), type(require("lfs").currentdir()))']])
        assert.are.equal(0, status, err)
        assert.are.equal("[1,2]\tstring\n", out)
    end)

    it("reports an uncaught error with file, line and traceback, status 1", function()
        local path = script("local x = 1\n\nerror('it broke')\n")
        local out, err, status = run(path)
        assert.are.equal(1, status)
        assert.are.equal("", out)
        assert.matches("^luaio: " .. path:gsub("%p", "%%%0") .. ":3: it broke\nstack traceback:\n", err)
    end)

    it("reports an uncaught error table as its name and message, status 1", function()
        -- assert(tcp.connect(...)) raises the error table itself: the report says what it is.
        local path = script("local tcp = require 'tcp'\n"
            .. "local srv = assert(tcp.createServer(0, function() end))\n"
            .. "assert(tcp.createServer(srv:address().port, function() end))\n")
        local out, err, status = run(path)
        assert.are.equal(1, status)
        assert.are.equal("", out)
        assert.matches("^luaio: EADDRINUSE: address already in use %(0%.0%.0%.0:%d+%)\nstack traceback:\n", err)
        local _, err2 = run([[-e 'error({name = "EX", message = "described"})']])
        assert.matches("^luaio: EX: described\n", err2)
        local _, err3 = run([[-e 'error(setmetatable({}, {__tostring = function() return "by tostring" end}))']])
        assert.matches("^luaio: by tostring\n", err3)
        local _, err4 = run([[-e 'error({1, 2})']])
        assert.matches("^luaio: %(error object is a table value%)\n", err4)
    end)

    it("reports a syntax error with file and line, status 1", function()
        local path = script("local x = = 1\n")
        local _, err, status = run(path)
        assert.are.equal(1, status)
        assert.matches("^luaio: " .. path:gsub("%p", "%%%0") .. ":1: unexpected symbol near '='\n$", err)
    end)

    it("reports a missing script, status 1", function()
        local _, err, status = run("/nonexistent/app.lua")
        assert.are.equal(1, status)
        assert.matches("cannot open /nonexistent/app.lua", err, 1, true)
    end)

    it("exits with process.exit / os.exit's status", function()
        local _, _, status = run([[-e 'os.exit(7)']])
        assert.are.equal(7, status)
        -- os.exit closes the state first, as process.exit does: the finalizer's line shows it.
        local out
        out, _, status = run([[-e 'getmetatable(newproxy(true)).__gc = function() print("finalized") end os.exit(false)']])
        assert.are.equal(1, status)
        assert.are.equal("finalized\n", out)
        _, _, status = run([[-e 'os.exit(true)']])
        assert.are.equal(0, status)
    end)

    it("runs a script from standard input with '-' or when stdin is not a terminal", function()
        local out, _, status = run("-", "print('from stdin', ...)")
        assert.are.equal(0, status)
        assert.are.equal("from stdin\n", out)
        out = run("", "#!/usr/bin/env luaio\nsleep(1) print('piped')")
        assert.are.equal("piped\n", out)
    end)

    it("ends when the loop has nothing left to do", function()
        local out, _, status = run([[-e 'local task = require "task"; task.spawn(function() sleep(50) print("late") end) print("early")']])
        assert.are.equal(0, status)
        assert.are.equal("early\nlate\n", out)
    end)

    it("offers a prompt (-i) where expressions print, statements run, waits work and errors do not end it", function()
        local input = table.concat({
            "1 + 1",
            "x = 20",
            "x * 2",
            "sleep(5) return 'slept'",
            "error('oops')",
            "for i = 1, 2 do",
            "  print('loop', i)",
            "end",
            "'still here'",
        }, "\n") .. "\n"
        local out, err, status = run("-i", input)
        assert.are.equal(0, status, err)
        assert.matches("\n?> 2\n", out)
        assert.matches("40\n", out, 1, true)
        assert.matches("slept\n", out, 1, true)
        assert.matches("oops", out, 1, true)
        assert.matches("loop\t1\n", out, 1, true)
        assert.matches("loop\t2\n", out, 1, true)
        assert.matches("still here\n", out, 1, true)
    end)
end)
