-- Runs busted (Debian's lua-busted) inside luaio: `luaio spec/run.lua spec/x_spec.lua`.
-- Specs run in the main task, so waiting calls work directly inside `it` blocks.
package.path = "spec/?.lua;" .. package.path
-- On failure busted ends a non-standalone run with error(nil), expecting the interpreter
-- to exit with status 1; do that without printing a meaningless "nil" error.
local ok, err = pcall(require "busted.runner", { standalone = false })
if not ok then
    if err ~= nil then io.stderr:write(tostring(err), "\n") end
    os.exit(1)
end
