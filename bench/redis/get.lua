-- luaio's side of bench/redis/run.sh: `tasks` tasks doing GET for `seconds` seconds.
--   luaio bench/redis/get.lua port [tasks [seconds [mode [depth]]]]
-- mode: shared (one connection for all tasks: commands pipeline by themselves), conns (one
-- connection per task, as redis-benchmark -c), pipeline (one connection, each task sends
-- r:pipeline of `depth` GETs at a time). Prints ops/s and the client's CPU per op.
local redis = require "redis"
local task = require "task"
local timer = require "timer"

local port = assert(tonumber(arg[1]), "port")
local ntasks = tonumber(arg[2] or 64)
local seconds = tonumber(arg[3] or 10)
local mode = arg[4] or "shared"
local depth = tonumber(arg[5] or 16)

local shared = assert(redis.connect { port = port })
assert(shared:set("key", "xxx"))
local stop, count = false, 0

local function get_loop(r)
    while not stop do
        local v = r:get("key")
        if v ~= "xxx" then error("bad reply " .. tostring(v)) end
        count = count + 1
    end
end

local function pipe_loop(r)
    local function fill(p)
        for _ = 1, depth do p:get("key") end
    end
    while not stop do
        local res = assert(r:pipeline(fill))
        if res[depth] ~= "xxx" then error("bad reply") end
        count = count + depth
    end
end

local conns = {}
local tasks = {}
for i = 1, ntasks do
    local r = shared
    if mode == "conns" then
        r = assert(redis.connect { port = port })
        conns[#conns + 1] = r
    end
    tasks[i] = task.spawn(mode == "pipeline" and pipe_loop or get_loop, r)
end
local t0, c0 = os.time(), os.clock()
local start = require("system").hrtime()
timer.sleep(seconds * 1000)
stop = true
local elapsed = (require("system").hrtime() - start) / 1e9
local cpu = os.clock() - c0
local n = count
for i = 1, ntasks do assert(tasks[i]:join()) end
for _, r in ipairs(conns) do r:close() end
shared:close()
local _ = t0
print(string.format("ops/s %.0f cpu_us_per_op %.3f", n / elapsed, cpu * 1e6 / n))
