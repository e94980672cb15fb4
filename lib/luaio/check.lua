--- `luaio --check app.lua` (as `nginx -t`): compiles the script and the modules it requires
--- from its own directory, without running any of them. Exits 0 when all compile; otherwise
--- prints the first error as file:line: message and exits 1.
local function fail(msg)
    io.stderr:write("luaio: ", msg, "\n")
    os.exit(1)
end

-- The module names a source requires with a literal name: require "x", require("x"), require 'x'.
local function required(src)
    local names = {}
    for name in src:gmatch("require%s*%(?%s*[\"']([%w_%.%-]+)[\"']") do names[#names + 1] = name end
    for name in src:gmatch("require%s*%(?%s*%[%[([%w_%.%-]+)%]%]") do names[#names + 1] = name end
    return names
end

return function(plan)
    local script = plan.script
    if not script then fail("--check needs a script") end
    -- Only the script's own directory: the modules of luaio and of the system are not the app's.
    local dir = script ~= "-" and script:match("^(.*)/[^/]*$") or "."
    local local_path = dir .. "/?.lua;" .. dir .. "/?/init.lua"
    local files, seen = { script }, { [script] = true }
    local i = 1
    while files[i] do
        local file = files[i]
        i = i + 1
        local src
        if file == "-" then
            src = io.stdin:read("*a") or ""
        else
            local f, err = io.open(file)
            if not f then fail("cannot open " .. tostring(err)) end
            src = f:read("*a")
            f:close()
        end
        if src:sub(1, 1) == "#" then src = "--" .. src end -- a #! line, as the loader takes it
        local ok, err = loadstring(src, file == "-" and "=stdin" or "@" .. file)
        if not ok then fail(err) end
        for _, name in ipairs(required(src)) do
            local path = package.searchpath(name, local_path)
            if path and not seen[path] then
                seen[path] = true
                files[#files + 1] = path
            end
        end
    end
    io.stdout:write(("luaio: %s: syntax ok (%d file%s)\n"):format(script, #files, #files == 1 and "" or "s"))
    os.exit(0)
end
