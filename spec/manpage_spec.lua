-- The manual page and the package agree with the program: the options of `luaio -h`, the
-- environment variables luaio reads, one version everywhere; the page renders without a
-- warning and the systemd units pass systemd's own checks.
local helper = require "helper"
local run, sh, read = helper.run, helper.sh, helper.read

local src = helper.source_dir
local MAN = src .. "/packaging/luaio.1"

-- A roff line as text: font escapes dropped, escaped minus signs as plain ones.
local function deroff(s)
    return (s:gsub("\\f[BIRP]", ""):gsub("\\%-", "-"):gsub("\\%(aq", "'"):gsub("\\&", ""))
end

-- The lines of one section (.SH NAME) of the page.
local function section(page, name)
    local lines, inside = {}, false
    for line in page:gmatch("([^\n]*)\n") do
        local sh_name = line:match('^%.SH "?([^"]*)"?$')
        if sh_name then
            inside = sh_name == name
        elseif inside then
            lines[#lines + 1] = line
        end
    end
    return lines
end

-- Sorted keys of a set, for readable comparisons.
local function sorted(set)
    local r = {}
    for k in pairs(set) do r[#r + 1] = k end
    table.sort(r)
    return r
end

-- The options of `luaio -h`: the first column of its indented lines ("-v, --version").
local function help_options()
    local out, _, status = run("-h")
    assert.are.equal(0, status)
    local opts = {}
    for line in out:gmatch("([^\n]*)\n") do
        local col = line:match("^  (%-.-)  ")
        if col then
            for piece in (col .. ", "):gmatch("(.-), ") do opts[piece:match("^%S+")] = true end
        end
    end
    return opts
end

-- The options of the page: the tag line after each .TP in OPTIONS.
local function man_options(page)
    local opts, lines = {}, section(page, "OPTIONS")
    for i, line in ipairs(lines) do
        if line == ".TP" and lines[i + 1] then
            local tag = deroff(lines[i + 1]:gsub('^%.[BIR][BIR]? ', ""):gsub('"', ""))
            for word in (tag .. ","):gmatch("%s*(%-[^%s,%[=]*)[^,]*,") do opts[word] = true end
        end
    end
    return opts
end

describe("the manual page luaio(1)", function()
    local page = assert(read(MAN), "cannot read " .. MAN)

    it("lists exactly the options of luaio -h", function()
        local help, man = help_options(), man_options(page)
        assert.is_true(help["-h"] and help["--help"] and help["-e"] and help["--"] and help["-"] or false,
            "could not read the options of luaio -h")
        assert.are.same(sorted(help), sorted(man))
    end)

    it("documents every environment variable that luaio reads", function()
        local documented = {}
        for _, line in ipairs(section(page, "ENVIRONMENT")) do
            if line:match("^%.B") then
                for name in deroff(line):gmatch("[%u_][%u%d_]+") do documented[name] = true end
            end
        end
        -- Every getenv("NAME") with a literal name in the C++ and Lua sources, and every
        -- string literal "LUAIO_..." or "LISTEN_..." (names read through a helper).
        local out = sh("cd " .. src .. " && grep -rhoE 'getenv\\(\"[A-Z_][A-Z0-9_]*\"\\)|\"(LUAIO|LISTEN)_[A-Z0-9_]*[A-Z0-9]\"' bin runtime modules lib")
        local read_names = {}
        for name in out:gmatch('"([%u%d_]+)"') do read_names[name] = true end
        assert.is_true(read_names.LUAIO_WORKER_FD, "the grep for getenv found nothing")
        read_names.LUA_PATH, read_names.LUA_CPATH = true, true -- read by LuaJIT's package library
        local missing = {}
        for _, name in ipairs(sorted(read_names)) do
            if not documented[name] then missing[#missing + 1] = name end
        end
        assert.are.same({}, missing, "add these to ENVIRONMENT in packaging/luaio.1")
        -- The restart limits are read as "LUAIO_RESTART_" .. key:upper() (lib/luaio/master.lua).
        for _, k in ipairs({ "DELAY", "MAX_DELAY", "LIMIT", "WINDOW", "STABLE" }) do
            assert.is_true(documented["LUAIO_RESTART_" .. k], "LUAIO_RESTART_" .. k)
        end
    end)

    it("names every built-in module", function()
        local listed = table.concat(section(page, "DESCRIPTION"), " "):match("built%-in modules (%b())")
        assert.is_truthy(listed, "no list of built-in modules in DESCRIPTION")
        local names = {}
        for name in sh("cd " .. src .. " && ls lib"):gmatch("([%w_]+)%.lua") do names[name] = true end
        for name in read(src .. "/modules/modules.cpp"):gmatch('preload%(L, "([%w_]+)"') do names[name] = true end
        assert.is_true(names.tcp and names.timer or false, "could not read the module names")
        local missing = {}
        for _, name in ipairs(sorted(names)) do
            if not listed:find("%f[%w]" .. name .. "%f[^%w]") then missing[#missing + 1] = name end
        end
        assert.are.same({}, missing, "add these to the list in DESCRIPTION of packaging/luaio.1")
    end)

    it("has the version of luaio -v, CMake's project(VERSION) and the Debian package", function()
        local cmake = read(src .. "/CMakeLists.txt"):match("project%(luaio VERSION ([%d.]+)")
        local out = run("-v")
        assert.are.equal("luaio " .. cmake, out:match("^[^\n]*"))
        assert.are.equal(cmake, page:match('\n%.TH LUAIO 1 %S+ "luaio ([%d.]+)"'))
        assert.are.equal(cmake, read(src .. "/packaging/debian/changelog"):match("^luaio %(([^)]+)%)"))
    end)

    it("has the sections a manual page needs", function()
        for _, name in ipairs({ "NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "ENVIRONMENT", "SIGNALS",
            "EXIT STATUS", "FILES", "EXAMPLES", "SEE ALSO" }) do
            assert.is_true(#section(page, name) > 0, name)
        end
        local signals = deroff(table.concat(section(page, "SIGNALS"), "\n"))
        for _, sig in ipairs({ "SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1" }) do
            assert.matches(sig, signals, 1, true)
        end
    end)

    it("renders without a warning (mandoc -T lint, groff -ww)", function()
        local out, err, status = sh("mandoc -T lint " .. MAN)
        assert.are.equal("", out .. err)
        assert.are.equal(0, status)
        out, err, status = sh("groff -ww -man -z " .. MAN)
        assert.are.equal("", out .. err)
        assert.are.equal(0, status)
        _, err, status = sh("MANWIDTH=80 man --warnings -l " .. MAN)
        assert.are.equal("", err)
        assert.are.equal(0, status)
    end)
end)

describe("the systemd units", function()
    -- The units name /usr/bin/luaio, which exists only once the package is installed: check
    -- copies that name the binary under test (CI verifies the installed units as they are).
    local function copies()
        local dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir " .. dir) == 0)
        local bin = helper.luaio
        if bin:sub(1, 1) ~= "/" then bin = os.getenv("PWD") .. "/" .. bin end
        for _, unit in ipairs({ "luaio@.service", "luaio.socket" }) do
            local text = read(src .. "/packaging/systemd/" .. unit):gsub("/usr/bin/luaio", bin)
            local f = assert(io.open(dir .. "/" .. unit, "w"))
            f:write(text)
            f:close()
        end
        return dir
    end

    it("pass systemd-analyze verify", function()
        local dir = copies()
        local out, err, status = sh("cd " .. dir .. " && systemd-analyze verify --man=no ./luaio@app.service ./luaio.socket")
        sh("rm -rf " .. dir)
        assert.are.equal("", out .. err)
        assert.are.equal(0, status)
    end)

    it("stay sandboxed: systemd-analyze security rates the service 2.0 or less", function()
        local dir = copies()
        local out, _, status = sh("cd " .. dir .. " && systemd-analyze security --offline=yes --no-pager ./luaio@app.service")
        sh("rm -rf " .. dir)
        assert.are.equal(0, status)
        local score = tonumber(out:match("Overall exposure level for luaio@app%.service: ([%d.]+)"))
        assert.is_number(score, out)
        assert.is_true(score <= 2.0, "exposure " .. tostring(score))
    end)

    it("stop within systemd's timeout and reload with SIGHUP", function()
        local unit = read(src .. "/packaging/systemd/luaio@.service")
        assert.matches("\nKillSignal=SIGTERM\n", unit, 1, true)
        assert.matches("\nExecReload=/bin/kill %-HUP %$MAINPID\n", unit)
        assert.matches("\nExecStart=/usr/bin/luaio %-%-workers %$LUAIO_WORKERS /etc/luaio/%%i%.lua\n", unit)
        -- systemd must not kill luaio before its own graceful stop has ended: the grace period
        -- of a worker (process.shutdownTimeout, after the drain) and the master's limit for
        -- its workers (LUAIO_STOP_TIMEOUT, or the master's default).
        local stop = tonumber(unit:match("\nTimeoutStopSec=(%d+)\n"))
        assert.is_number(stop)
        local out, err = run([[-e 'local p = require "process"; print(p.shutdownTimeout + (p.drainDelay or 0))']])
        local grace = tonumber(out)
        assert.is_number(grace, err)
        assert.is_true(stop * 1000 > grace, ("TimeoutStopSec=%d but a worker may take %d ms"):format(stop, grace))
        assert.is_true(stop * 1000 <= grace + 10000, ("TimeoutStopSec=%d is far above luaio's %d ms"):format(stop, grace))
        local master = tonumber(unit:match("\nEnvironment=LUAIO_STOP_TIMEOUT=(%d+)\n"))
            or tonumber(read(src .. "/lib/luaio/master.lua"):match("STOP_TIMEOUT = (%d+)"))
        assert.is_number(master, "the master's stop timeout")
        assert.is_true(stop * 1000 > master, ("TimeoutStopSec=%d but the master may wait %d ms"):format(stop, master))
    end)
end)
