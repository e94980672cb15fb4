-- Runs busted (Debian's lua-busted) inside luaio: `luaio spec/run.lua spec/x_spec.lua`.
-- Specs run in the main task, so waiting calls work directly inside `it` blocks.
package.path = "spec/?.lua;" .. package.path
-- spec/helper.lua as busted's helper: its leak check then runs after every spec of every file.
table.insert(arg, 1, "--helper=helper")
-- On failure busted ends a non-standalone run with error(nil), expecting the interpreter
-- to exit with status 1; do that without printing a meaningless "nil" error.
local leaks = require "leaks"
local start = leaks.snapshot()
local ok, err = pcall(require "busted.runner", { standalone = false })
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
