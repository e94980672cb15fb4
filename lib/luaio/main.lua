-- The boot sequence of the `luaio` command, run as the main task by bin/main.cpp.
local function fail(msg)
    io.stderr:write("luaio: ", msg, "\n")
    os.exit(1)
end

local function load_stdin()
    local src = io.stdin:read("*a") or ""
    if src:sub(1, 1) == "#" then src = "--" .. src end -- keep line numbers of a #! script
    return loadstring(src, "=stdin")
end

return function(plan)
    if plan.check then return require("luaio.check")(plan) end
    if plan.workers then return require("luaio.master")(plan) end
    local worker = os.getenv("LUAIO_WORKER_FD") and require("luaio.worker")
    if worker then worker.start() end
    for _, a in ipairs(plan.actions) do
        if a[1] == "e" then
            local f, err = loadstring(a[2], "=(command line)")
            if not f then fail(err) end
            f()
        else
            -- Called through pcall so that a missing library is not reported at this line.
            local ok, mod = pcall(require, a[2])
            if not ok then fail(mod) end
            _G[a[2]] = mod
        end
    end
    if plan.script then
        local f, err
        if plan.script == "-" then
            f, err = load_stdin()
        else
            f, err = loadfile(plan.script)
        end
        if not f then fail(err) end
        f(unpack(arg, 1, plan.nargs))
        if worker then worker.ready() end
    end
    if plan.repl then
        require("luaio.repl")()
    end
end
