-- luaio's peer in bench/mysql/run.sh: `tasks` tasks, one connection each, running
-- `select ? as v` (a prepared statement, kept per connection) or `select <n> as v` (the text
-- protocol) for `secs` seconds; prints the queries done.
--   luaio mysql_bench.lua <url> [tasks=32] [secs=10] [mode=prepared|text]
local mysql = require "mysql"
local timer = require "timer"
local task = require "task"

local url, ntasks, secs, mode = arg[1], tonumber(arg[2] or 32), tonumber(arg[3] or 10), arg[4] or "prepared"
local dbs = {}
for i = 1, ntasks do dbs[i] = assert(mysql.connect(url)) end
local done, stop = 0, false
local workers = {}
for i = 1, ntasks do
    workers[i] = task.spawn(function()
        local db = dbs[i]
        local n = 0
        while not stop do
            n = n + 1
            local rows, err
            if mode == "text" then
                rows, err = db:query("select " .. n .. " as v")
            else
                rows, err = db:query("select ? as v", n)
            end
            assert(rows and rows[1].v == n, err and tostring(err))
            done = done + 1
        end
    end)
end
timer.sleep(secs * 1000)
stop = true
for _, w in ipairs(workers) do assert(w:join()) end
print(done)
for _, db in ipairs(dbs) do db:close() end
