-- The interactive prompt. Each input runs in its own task, so waiting calls (sleep, I/O)
-- work at the prompt, and servers started there keep serving between inputs.
local core = require "luaio.core"
local task = require "task"

local function show(ok, ...)
    if select("#", ...) > 0 then print(...) end
end

return function()
    print("luaio " .. (jit and jit.version or "") .. " -- Ctrl-D to exit")
    while true do
        local chunk = core.readline("> ")
        if not chunk then
            io.write("\n")
            return
        end
        local f, err = loadstring("return " .. chunk, "=stdin")
        if not f then
            f, err = loadstring(chunk, "=stdin")
            -- An unfinished statement: read more lines until it parses or fails otherwise.
            while not f and err:find("<eof>", 1, true) do
                local more = core.readline(">> ")
                if not more then break end
                chunk = chunk .. "\n" .. more
                f, err = loadstring(chunk, "=stdin")
            end
        end
        if not f then
            print(err)
        else
            local h = task.spawn(f)
            local r = { h:join() }
            if r[1] then
                show(unpack(r, 1, table.maxn(r)))
            else
                print(h.trace or tostring(r[2]))
            end
        end
    end
end
