-- A JSON API backed by PostgreSQL, with a Redis cache in front of reads (cache-aside).
--   luaio examples/pg_redis_api.lua [port=8080] [postgresql://URL] [redis_port=6379]
--   (the URL may also come from DATABASE_URL; Redis runs on 127.0.0.1)
--   curl -X POST -d '{"name":"lamp","tags":["home"]}' http://127.0.0.1:8080/items
--   curl -i http://127.0.0.1:8080/items/1          -- X-Cache: miss, then hit
--   curl -X PUT -d '{"name":"desk lamp"}' http://127.0.0.1:8080/items/1
--   curl -X DELETE http://127.0.0.1:8080/items/1
-- Both clients are pools: every request task takes a connection for one query and gives it back.
local http = require "http"
local json = require "json"
local postgres = require "postgres"
local redis = require "redis"

local port = tonumber(arg[1]) or 8080
local url = arg[2] or os.getenv("DATABASE_URL") or "postgresql://postgres@127.0.0.1/postgres"
local db = postgres.pool { url = url, size = 16 }
local cache = redis.pool { host = "127.0.0.1", port = tonumber(arg[3]) or 6379, size = 16 }
local TTL = 60 -- seconds a cached item lives

assert(db:exec([[create table if not exists items (
    id serial primary key, name text not null, tags jsonb not null default '[]', created timestamptz not null default now())]]))

local function key(id) return "item:" .. id end

-- The item as JSON text, from the cache or else from the database (then cached); nil if none.
local function item_json(id)
    local cached = cache:get(key(id)) -- a cache that fails is a miss: the database answers
    if cached then return cached, "hit" end
    local rows, err = db:query("select id, name, tags, created from items where id = $1", id)
    if not rows then return nil, err end
    if not rows[1] then return nil end
    local text = assert(json.encode(rows[1]))
    cache:set(key(id), text, "EX", TTL)
    return text, "miss"
end

local function fail(res, err)
    res:json({ error = tostring(err) }, 500)
end

-- The JSON body of a request, or nil after answering 400.
local function body(req, res)
    local v = json.decode(req:body() or "")
    if type(v) ~= "table" or (v.name ~= nil and type(v.name) ~= "string") then
        res:json({ error = "expected a JSON object with a string name" }, 400)
        return nil
    end
    return v
end

local function id_of(params, res)
    local id = tonumber(params.id)
    if not id or id % 1 ~= 0 or id < 1 or id > 2147483647 then
        res:json({ error = "no such item" }, 404)
        return nil
    end
    return id
end

local r = http.router()

r:get("/health", function(_, res)
    local pg, perr = db:query("select 1 as ok")
    local rd, rerr = cache:ping()
    res:json({ postgres = pg and "up" or tostring(perr), redis = rd and "up" or tostring(rerr) }, pg and rd and 200 or 503)
end)

r:get("/items", function(_, res)
    local rows, err = db:query("select id, name, tags, created from items order by id limit 100")
    if not rows then return fail(res, err) end
    rows.affected = nil
    res:json(json.array(rows))
end)

r:get("/items/:id", function(_, res, params)
    local id = id_of(params, res)
    if not id then return end
    local text, how = item_json(id)
    if not text then
        if how then return fail(res, how) end
        return res:json({ error = "no such item" }, 404)
    end
    res:setHeader("Content-Type", "application/json")
    res:setHeader("X-Cache", how)
    res:finish(text)
end)

r:post("/items", function(req, res)
    local v = body(req, res)
    if not v then return end
    if not v.name then return res:json({ error = "name is required" }, 400) end
    local rows, err = db:query("insert into items (name, tags) values ($1, $2) returning id, name, tags, created",
        v.name, json.array(v.tags or {}))
    if not rows then return fail(res, err) end
    res:json(rows[1], 201)
end)

r:put("/items/:id", function(req, res, params)
    local id = id_of(params, res)
    if not id then return end
    local v = body(req, res)
    if not v then return end
    local rows, err = db:query([[update items set name = coalesce($2, name), tags = coalesce($3, tags)
        where id = $1 returning id, name, tags, created]], id, v.name, v.tags and json.array(v.tags))
    if not rows then return fail(res, err) end
    if not rows[1] then return res:json({ error = "no such item" }, 404) end
    cache:del(key(id)) -- the next read fills the cache again
    res:json(rows[1])
end)

r:delete("/items/:id", function(_, res, params)
    local id = id_of(params, res)
    if not id then return end
    local n, err = db:exec("delete from items where id = $1", id)
    if not n then return fail(res, err) end
    cache:del(key(id))
    if n == 0 then return res:json({ error = "no such item" }, 404) end
    res.status = 204
    res:finish()
end)

assert(http.createServer({ port = port, host = "127.0.0.1" }, r))
print("items API on http://127.0.0.1:" .. port)
