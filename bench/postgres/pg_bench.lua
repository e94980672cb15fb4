-- luaio's peer in bench/postgres/run.sh: `tasks` tasks, one connection each, running
-- `select $1::int` for `secs` seconds; prints the queries done.
--   luaio pg_bench.lua <url> [tasks=32] [secs=10] [mode=query|prepared|pool]
local postgres = require "postgres"
local timer = require "timer"
local task = require "task"
local system = require "system"

local url, ntasks, secs, mode = arg[1], tonumber(arg[2] or 32), tonumber(arg[3] or 10), arg[4] or "query"
local pool = mode == "pool" and postgres.pool { url = url, size = ntasks } or nil
local dbs = {}
if not pool then
    for i = 1, ntasks do dbs[i] = assert(postgres.connect(url)) end
end
local done, stop = 0, false
local workers = {}
for i = 1, ntasks do
    workers[i] = task.spawn(function()
        local db, st = dbs[i], nil
        if mode == "prepared" then st = assert(db:prepare("select $1::int as v")) end
        local n = 0
        while not stop do
            n = n + 1
            local rows, err
            if st then
                rows, err = st:query(n)
            elseif pool then
                rows, err = pool:query("select $1::int as v", n)
            else
                rows, err = db:query("select $1::int as v", n)
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
if pool then pool:close() end
