-- Runs busted (Debian's lua-busted) inside luaio: `luaio spec/run.lua spec/x_spec.lua`.
-- Specs run in the main task, so waiting calls work directly inside `it` blocks.
package.path = "spec/?.lua;" .. package.path
-- spec/helper.lua as busted's helper: its leak check then runs after every spec of every file.
table.insert(arg, 1, "--helper=helper")
-- On failure busted ends a non-standalone run with error(nil), expecting the interpreter
-- to exit with status 1; do that without printing a meaningless "nil" error.
local leaks = require "leaks"
-- A spec that waits for what never comes leaves nothing to wake the main task: the process would
-- end with status 0, as if every spec had passed. A finalizer, run when the state closes, tells.
local finished = false
local sentinel = newproxy(true)
getmetatable(sentinel).__gc = function()
    if not finished then
        io.stderr:write("spec/run.lua: the specs did not finish: a task waits for what nothing will wake\n")
        os.exit(1)
    end
end
package.loaded["spec.run.sentinel"] = sentinel -- kept until the state closes
local exit = os.exit
os.exit = function(...) -- busted's own exit (a failure, --help) is an end as well
    finished = true
    return exit(...)
end
local start = leaks.snapshot()
local ok, err = pcall(require "busted.runner", { standalone = false })
finished = true
if not ok then
    if err ~= nil then io.stderr:write(tostring(err), "\n") end
    os.exit(1)
end
-- What a file's setup() opened for its specs must be closed by its teardown().
local left = leaks.wait(start)
if left then
    io.stderr:write("leak check: the spec file left ", left, "\n")
    os.exit(1)
end
