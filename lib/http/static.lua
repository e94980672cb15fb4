--- http.static(root[, options]): a handler(req, res) that serves the files under root (see
--- docs/http.md, "Static files"). Usable with createServer and as a router route:
---   http.createServer({port = 8080}, http.static("public"))
---   r:get("/assets/*path", http.static("public"))   -- serves params.path
--
-- Every request path is checked segment by segment on its raw (percent-encoded) form before a
-- file is looked up: a segment that decodes to "..", or that contains "/", "\" or NUL once
-- decoded, is refused (400), so neither "..", "%2e%2e" nor "%2f" can leave the root; dotfiles
-- are hidden; a symbolic link that resolves outside the root is refused unless allowed.
-- The body goes from the open file to the socket (Response:_file: sendfile on a plain socket,
-- blocks read and encrypted one at a time on TLS), never through Lua. Open files and their stat
-- stay in a bounded cache for a short time (nginx's open_file_cache), so that a request for a
-- file served a moment ago costs no system call but the send.
local fs = require "fs"
local raise = require("luaio.errors").raise
local core_fs = require "luaio.fs"
local lookup, discard = core_fs.lookup, core_fs.discard
local hrtime = require("system").hrtime
local timer = require "timer"
local task = require "task"
local filecache = require("luaio.http").filecache

local type, error, tonumber, tostring, pairs, ipairs = type, error, tonumber, tostring, pairs, ipairs
local floor = math.floor
local byte, char, find, format, gsub, lower, match, sub, gmatch =
    string.byte, string.char, string.find, string.format, string.gsub, string.lower, string.match, string.sub,
    string.gmatch
local concat = table.concat
local date = os.date

local static = {}

-- The open-file cache's defaults: entries, and how long (ms) an entry is used before the path
-- is looked up again (a changed or replaced file is then seen). Entries past it are closed
-- within as long again, whether or not they are asked for.
local CACHE_MAX = 256
local CACHE_VALID = 1000
-- nginx's default large_client_header_buffers line is 8 KiB; a path past this is refused (414).
local MAX_PATH = 4096
-- A file up to this size goes out in one write with its head (modules/http.cpp, kSmallFileBody),
-- and a server whose handler static is may answer it again without Lua (see send_file).
local SMALL_FILE = 16 * 1024
-- The precompressed variants looked for: coding, suffix.
local VARIANTS = { { "br", ".br" }, { "gzip", ".gz" } }

-- Handlers made by static.new, with their cache of whole small responses (static.cached_files).
local handlers = setmetatable({}, { __mode = "k" })

-- ---------------------------------------------------------------- MIME types

local FALLBACK_TYPES = {
    html = "text/html", htm = "text/html", css = "text/css", js = "text/javascript", mjs = "text/javascript",
    json = "application/json", txt = "text/plain", xml = "application/xml", svg = "image/svg+xml",
    png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg", gif = "image/gif", webp = "image/webp",
    ico = "image/vnd.microsoft.icon", avif = "image/avif", woff = "font/woff", woff2 = "font/woff2",
    ttf = "font/ttf", otf = "font/otf", pdf = "application/pdf", zip = "application/zip",
    gz = "application/gzip", wasm = "application/wasm", mp4 = "video/mp4", webm = "video/webm",
    mp3 = "audio/mpeg", ogg = "audio/ogg", wav = "audio/wav", csv = "text/csv", md = "text/markdown",
    map = "application/json", tar = "application/x-tar",
}

local mime_types -- extension -> type, loaded on first use

--- The MIME types of /etc/mime.types (Debian's media-types) over the built-in table.
function static.load_mime_types(file)
    local types = {}
    for k, v in pairs(FALLBACK_TYPES) do types[k] = v end
    local data = fs.readFile(file or "/etc/mime.types")
    if data then
        for line in gmatch(data, "[^\n]+") do
            local t, exts = match(line, "^([%w%.%-%+]+/[%w%.%-%+]+)%s+(.+)$")
            if t and sub(line, 1, 1) ~= "#" then
                for ext in gmatch(exts, "%S+") do types[lower(ext)] = t end
            end
        end
    end
    -- Browsers run JavaScript only with a JavaScript type; mime.types has application/javascript.
    types.js = types.js or "text/javascript"
    return types
end

local function content_type(path)
    mime_types = mime_types or static.load_mime_types()
    local ext = match(path, "%.([^./]+)$")
    local t = ext and mime_types[lower(ext)] or "application/octet-stream"
    if sub(t, 1, 5) == "text/" or t == "application/javascript" or t == "application/json" or t == "image/svg+xml" then
        t = t .. "; charset=utf-8"
    end
    return t
end

-- ---------------------------------------------------------------- paths

local function hex(c)
    c = byte(c)
    if c >= 48 and c <= 57 then return c - 48 end
    if c >= 65 and c <= 70 then return c - 55 end
    if c >= 97 and c <= 102 then return c - 87 end
end

-- Decodes one raw segment; nil when it is malformed or decodes to something a file name may not
-- hold here ("/", "\", NUL, "..").
local function decode_segment(seg)
    if find(seg, "\\", 1, true) or find(seg, "\0", 1, true) then return nil end
    -- Most segments have no escape: no gsub (whose closure LuaJIT does not compile).
    if not find(seg, "%", 1, true) then return seg ~= ".." and seg or nil end
    local bad = false
    local s = gsub(seg, "%%(..)", function(h)
        local a, b = hex(sub(h, 1, 1)), hex(sub(h, 2, 2))
        if not a or not b then
            bad = true
            return ""
        end
        return char(a * 16 + b)
    end)
    if bad or find(s, "[/\\%z]") or s == ".." then return nil end
    return s
end

-- The segments of a raw request path below the root: an array, or nil and the status to answer.
local function segments_of(raw)
    if #raw > MAX_PATH then return nil, 414 end
    if sub(raw, 1, 1) ~= "/" then return nil, 400 end
    local segs = {}
    for seg in gmatch(raw, "[^/]+") do
        local s = decode_segment(seg)
        if not s then return nil, 400 end
        if s ~= "." then segs[#segs + 1] = s end
    end
    return segs
end

-- ---------------------------------------------------------------- validators

local function http_date(t)
    return date("!%a, %d %b %Y %H:%M:%S GMT", floor(t))
end

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9, Oct = 10,
    Nov = 11, Dec = 12 }

-- Seconds since the epoch of an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), or nil.
local function parse_http_date(s)
    local d, mon, y, h, mi, sec = match(s or "", "^%a+, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
    local m = MONTHS[mon]
    if not m then return nil end
    y, m, d = tonumber(y), m, tonumber(d)
    -- Days from the civil date (Howard Hinnant's algorithm).
    y = m <= 2 and y - 1 or y
    local era = floor(y / 400)
    local yoe = y - era * 400
    local doy = floor((153 * (m + (m > 2 and -3 or 9)) + 2) / 5) + d - 1
    local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
    local days = era * 146097 + doe - 719468
    return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
end

local function etag_of(st, suffix)
    return format('"%x-%x%s"', floor(st.mtime), st.size, suffix or "")
end

-- Whether an If-None-Match list matches the ETag (weak comparison, RFC 9110 §13.1.2).
local function none_match(header, etag)
    if match(header, "^%s*%*%s*$") then return true end
    for tag in gmatch(header, "[^,%s]+") do
        if tag == etag or tag == "W/" .. etag then return true end
    end
    return false
end

-- The byte range of a Range header for a file of `size` bytes: first, last; or false when it is
-- unsatisfiable (416); or nil when the header is to be ignored (absent, malformed, several ranges).
local function range_of(header, size)
    local a, b = match(header, "^%s*bytes%s*=%s*(%d*)%s*%-%s*(%d*)%s*$")
    if not a or (a == "" and b == "") then return nil end
    if a == "" then -- the last b bytes
        local n = tonumber(b)
        if n == 0 or size == 0 then return false end
        return size > n and size - n or 0, size - 1
    end
    local first, last = tonumber(a), b ~= "" and tonumber(b) or size - 1
    if last < first then return nil end
    if first >= size then return false end
    if last >= size then last = size - 1 end
    return first, last
end

-- Whether Accept-Encoding accepts `coding` (a q of 0 refuses it).
local function accepts(header, coding)
    for item in gmatch(header, "[^,]+") do
        local name, params = match(item, "^%s*([%w%-%*]+)%s*(.*)$")
        if name and (lower(name) == coding) then
            local q = match(params, "[qQ]%s*=%s*([%d%.]+)")
            return not q or tonumber(q) > 0
        end
    end
    return false
end

-- ---------------------------------------------------------------- responses

local function plain(res, status, body, extra)
    res:setStatus(status)
    res:setHeader("Content-Type", "text/plain; charset=utf-8")
    if extra then
        for k, v in pairs(extra) do res:setHeader(k, v) end
    end
    return res:finish(body)
end

local function html_escape(s)
    return (gsub(s, "[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end

local function url_escape(s)
    return (gsub(s, "[^%w%-%._~]", function(c) return format("%%%02X", byte(c)) end))
end

local function listing(res, dir, shown_path, o, head)
    local entries = fs.readdir(dir)
    if not entries then return plain(res, 404, "Not Found\n") end
    local out = { "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of ", html_escape(shown_path),
        "</title></head><body><h1>Index of ", html_escape(shown_path), "</h1><ul>\n" }
    for _, e in ipairs(entries) do
        if o.dotfiles == "allow" or sub(e.name, 1, 1) ~= "." then
            local slash = e.type == "directory" and "/" or ""
            out[#out + 1] = format('<li><a href="%s%s">%s%s</a></li>\n', url_escape(e.name), slash,
                html_escape(e.name), slash)
        end
    end
    out[#out + 1] = "</ul></body></html>\n"
    res:setHeader("Content-Type", "text/html; charset=utf-8")
    local body = concat(out)
    if head then
        res:setHeader("Content-Length", tostring(#body))
        return res:finish()
    end
    return res:finish(body)
end

-- Sets a header field of static's own. On a response that had no field before static's (own),
-- the field is appended (a response keeps its fields as name, value pairs in slots 2 to _n: see
-- lib/http/server.lua): static sets each name once. Otherwise setHeader, which replaces a field
-- of the same name; its loop over the fields keeps LuaJIT from compiling the request's path.
local function put(res, own, name, value)
    if not own then return res:setHeader(name, value) end
    local n = res._n
    res[n + 1], res[n + 2] = name, value
    res._n = n + 2
end

-- Sends the file of cache entry e (see static.new) with the validators and range of the request.
-- A whole small file sent with static's fields only (`own`, no variant: `plain`) is offered to
-- the server with the raw request path and the entry's expiry: a server whose handler static
-- is answers the next GET or HEAD of that path itself until then, with the same bytes (when the
-- request has no validator or range, which come here).
local function send_file(req, res, e, o, encoding, vary, own, plain)
    local head = req.method == "HEAD"
    local st = e.st
    local etag = encoding and etag_of(st, "-" .. encoding) or e.etag
    local modified = e.modified
    put(res, own, "ETag", etag)
    put(res, own, "Last-Modified", modified)
    put(res, own, "Accept-Ranges", "bytes")
    if o.cacheControl then put(res, own, "Cache-Control", o.cacheControl) end
    if vary then put(res, own, "Vary", "Accept-Encoding") end
    if encoding then put(res, own, "Content-Encoding", encoding) end
    local h = req.headers
    local inm, ims = h["if-none-match"], h["if-modified-since"]
    if inm then
        if none_match(inm, etag) then
            res:setStatus(304)
            return res:finish()
        end
    elseif ims then
        local t = parse_http_date(ims)
        if ims == modified or (t and floor(st.mtime) <= t) then
            res:setStatus(304)
            return res:finish()
        end
    end
    local size = st.size
    local first, last = 0, size - 1
    local range = h.range
    local ranged = false
    if range and req.method == "GET" then
        local if_range = h["if-range"]
        if if_range and if_range ~= etag and if_range ~= modified then range = nil end
        if range then
            local a, b = range_of(range, size)
            if a == false then
                res:setStatus(416)
                res:setHeader("Content-Range", "bytes */" .. size)
                res:setHeader("Content-Type", nil)
                return res:finish()
            elseif a then
                first, last, ranged = a, b, true
                res:setStatus(206)
                res:setHeader("Content-Range", format("bytes %d-%d/%d", first, last, size))
            end
        end
    end
    local length = last - first + 1
    if head or length == 0 then
        res:setHeader("Content-Length", format("%d", length))
        return res:finish()
    end
    -- The descriptor stays open while it is sent: the request holds the entry (see find).
    if plain and not ranged and size <= SMALL_FILE then
        res:_file(e.fd, 0, length, req.path, e.expires, e.path)
    else
        res:_file(e.fd, first, length)
    end
    local err = res:finish()
    if err then e.expires = 0 end -- looked up again by the next request (the file may have changed)
    return err
end

local function check_options(root, options)
    if type(root) ~= "string" then error("http.static: expected a root directory (a string) as argument 1, got " .. type(root), 3) end
    if options ~= nil and type(options) ~= "table" then
        error("http.static: expected an options table as argument 2, got " .. type(options), 3)
    end
    local o = {}
    for k, v in pairs(options or {}) do
        if k ~= "index" and k ~= "dotfiles" and k ~= "listing" and k ~= "cacheControl" and k ~= "maxAge"
            and k ~= "precompressed" and k ~= "symlinks" and k ~= "param" and k ~= "fileCache" then
            error("http.static: unknown option '" .. tostring(k) .. "'", 3)
        end
        o[k] = v
    end
    if o.index == nil then o.index = "index.html" end
    o.dotfiles = o.dotfiles or "ignore"
    if o.dotfiles ~= "ignore" and o.dotfiles ~= "allow" and o.dotfiles ~= "deny" then
        error("http.static: dotfiles must be \"ignore\", \"allow\" or \"deny\"", 3)
    end
    if o.maxAge and not o.cacheControl then o.cacheControl = format("public, max-age=%d", o.maxAge) end
    if o.precompressed == nil then o.precompressed = true end
    o.param = o.param or "path"
    local c = o.fileCache
    if c == nil or c == true then c = {} end
    if c == false then c = { max = 0 } end
    if type(c) ~= "table" then error("http.static: option 'fileCache' must be a table {max, valid} or false", 3) end
    for k, v in pairs(c) do
        if k == "watch" then
            if type(v) ~= "boolean" then error("http.static: fileCache.watch must be a boolean", 3) end
        elseif (k ~= "max" and k ~= "valid") or type(v) ~= "number" or v < 0 then
            error("http.static: fileCache." .. tostring(k) .. " must be max or valid, a number >= 0", 3)
        end
    end
    o.cache_max, o.cache_valid = floor(c.max or CACHE_MAX), (c.valid or CACHE_VALID) * 1e6
    o.cache_watch = c.watch ~= false
    return o
end

--- The handler (see the file's head).
function static.new(root, options)
    local o = check_options(root, options)
    -- A root that is not there is a mistake best told at once (a typo would otherwise be a 404
    -- for every request).
    local st, err = fs.stat(root)
    if not st then
        if err.name == "ENOENT" or err.name == "ENOTDIR" then raise("http.static", format("no such directory '%s'", root)) end
        raise("http.static", format("cannot use '%s' as the root: %s", root, err.message))
    elseif st.type ~= "directory" then
        raise("http.static", format("not a directory '%s'", root))
    end
    root = gsub(root, "/+$", "")
    if root == "" then root = "/" end
    -- The resolved root, resolved again when a path seems to be outside it, at most once per
    -- fileCache.valid: a root that is a symbolic link swapped at a deploy (current -> release-2)
    -- is then followed, as nginx follows it.
    local real_root, resolved_at = fs.realpath(root), hrtime()
    local function under(real)
        return real_root and (real == real_root or real_root == "/" or sub(real, 1, #real_root + 1) == real_root .. "/")
    end
    -- Whether a resolved path is under the root (always, with the symlinks option).
    local function inside(real)
        if o.symlinks or under(real) then return true end
        local now = hrtime()
        if now - resolved_at < o.cache_valid then return false end
        real_root, resolved_at = fs.realpath(root), now
        return under(real) or false
    end
    -- The open-file cache: path -> entry {real, st, file (an open fs.file for a regular file),
    -- fd, inside, etag, modified, expires (hrtime ns), users (sends in progress)}. Lookups that
    -- fail are not kept. Bounded: when full, expired entries go, else one at random. An
    -- unreferenced interval timer closes expired entries while the cache holds any, so that a
    -- file no longer asked for (or a handler no longer used) does not keep its descriptor.
    local cache, count = {}, 0
    local cache_max, cache_valid = o.cache_max, o.cache_valid
    -- The whole small responses a server whose handler this is answers without Lua.
    local kept = cache_max > 0 and filecache(cache_max) or nil
    local sweeper
    local function drop(e)
        e.dropped = true
        if e.file and e.users == 0 then discard(e.file) end
    end
    -- The directories of cached entries are watched (inotify, through fs.watch): a file that
    -- changes, is replaced or goes is forgotten at once, instead of within fileCache.valid ms.
    -- dir -> {watch, n = entries in it}; a directory's watch closes with its last entry.
    local watched = {}
    local remove
    local function changed(dir, name)
        local d = watched[dir]
        if d then d.gen = d.gen + 1 end
        if not name or name == "" then -- the watch could not say which file: all of them
            for path, e in pairs(cache) do
                if e.dir == dir then remove(path, true) end
            end
            return
        end
        local path = dir .. "/" .. name
        remove(path, true)
        -- A variant that appears or goes changes what its file's responses may be.
        local base = match(path, "^(.*)%.gz$") or match(path, "^(.*)%.br$")
        if base then remove(base, true) end
    end
    local function watch(dir)
        if not o.cache_watch then return end
        local d = watched[dir]
        if d then
            d.n = d.n + 1
            return
        end
        local w = fs.watch(dir)
        if not w then return end -- (no watch: fileCache.valid still applies)
        w:unref() -- a cache does not keep the process alive (its sweeper neither)
        watched[dir] = { w = w, n = 1, gen = 0 }
        task.spawn(function()
            while true do
                local ev = w:next()
                if not ev then return end -- closed
                changed(dir, ev.filename)
            end
        end)
    end
    local function unwatch(dir)
        local d = watched[dir]
        if not d then return end
        d.n = d.n - 1
        if d.n == 0 then
            watched[dir] = nil
            d.w:close()
        end
    end
    -- Removes the entry of a path; `forget`: the file changed, so the server's kept response of
    -- it goes too (else it ends at the same time as the entry).
    function remove(path, forget)
        local e = cache[path]
        if e then
            cache[path], count = nil, count - 1
            drop(e)
            unwatch(e.dir)
        end
        if forget and kept then kept:forget(path) end
    end
    local function remove_expired(now)
        for path, e in pairs(cache) do
            if e.expires <= now and e.users == 0 then remove(path) end
        end
    end
    local function sweep()
        remove_expired(hrtime())
        if count == 0 then
            sweeper:stop()
            sweeper = nil
        end
    end
    local function make_room(now)
        remove_expired(now)
        if count >= cache_max then remove((next(cache))) end
    end
    -- The entry of a path, from the cache while it is valid; nil when there is no such file. The
    -- entry is held (its users counted) until the request ends (see the handler below): the
    -- sweeper or a full cache may drop it while the request waits for another lookup, and its
    -- descriptor must stay open until the response is sent.
    local function hold(e, held)
        e.users = e.users + 1
        held[#held + 1] = e
        return e
    end
    local function find(path, held)
        local now = hrtime()
        local e = cache[path]
        if e and e.expires > now then return hold(e, held) end
        local dir = match(path, "^(.*)/")
        local d = watched[dir]
        local gen = d and d.gen
        local real, st, file = lookup(path)
        if not real then
            remove(path) -- the stale entry, or one that another request made meanwhile
            return nil
        end
        e = { real = real, st = st, file = file, fd = file and file:fd(), inside = inside(real), users = 0,
            expires = hrtime() + cache_valid, etag = etag_of(st), modified = http_date(st.mtime), dropped = false,
            ctype = st.type == "file" and content_type(path) or false, path = path, dir = dir }
        if cache_max == 0 then
            remove(path)
            e.dropped = true -- no cache: closed at the end of the request
        else
            watch(dir) -- before the stale entry goes, so that the directory's watch stays open
            remove(path)
            -- A change seen while the lookup ran may be newer than what it found: used once.
            if d and d.gen ~= gen then e.expires = 0 end
            if count >= cache_max then make_room(now) end
            cache[path], count = e, count + 1
            if not sweeper then
                sweeper = timer.setInterval(math.max(cache_valid / 1e6, 10), sweep)
                sweeper:unref()
            end
        end
        return hold(e, held)
    end
    -- The file path of a request path (raw, percent-encoded) or of a router's catch-all (rel,
    -- decoded), checked segment by segment; nil once the request is answered (400, 403, 404,
    -- 414). Its result only depends on the path, so paths that passed are remembered (checked,
    -- bounded like the cache): a repeated request skips the checks.
    local checked, nchecked = {}, 0
    local function file_of(res, raw, rel)
        local segs, status = segments_of(raw)
        if not segs then
            plain(res, status, status == 414 and "URI Too Long\n" or "Bad Request\n")
            return nil
        end
        if rel then -- a router's catch-all, already decoded: checked again, segment by segment
            segs = {}
            for seg in gmatch(rel, "[^/]+") do
                if seg == ".." or find(seg, "[\\%z]") then
                    plain(res, 400, "Bad Request\n")
                    return nil
                end
                if seg ~= "." then segs[#segs + 1] = seg end
            end
        end
        for _, s in ipairs(segs) do
            if sub(s, 1, 1) == "." and o.dotfiles ~= "allow" then
                plain(res, o.dotfiles == "deny" and 403 or 404, o.dotfiles == "deny" and "Forbidden\n" or "Not Found\n")
                return nil
            end
        end
        return root .. (#segs > 0 and "/" .. concat(segs, "/") or "")
    end
    local function serve(req, res, params, held)
        local method = req.method
        if method ~= "GET" and method ~= "HEAD" then
            return plain(res, 405, "Method Not Allowed\n", { Allow = "GET, HEAD" })
        end
        local raw = req.path
        params = params or req.params
        local rel = params and params[o.param]
        -- A router's catch-all comes with the raw path: both are checked, and remembered together
        -- (the same raw path may be another file under another route).
        local c = checked[raw]
        local file = c and c[1] == (rel or false) and c[2]
        if not file then
            file = file_of(res, raw, rel)
            if not file then return end -- answered (400, 403, 404, 414)
            if nchecked >= cache_max then checked, nchecked = {}, 0 end
            checked[raw], nchecked = { rel or false, file }, nchecked + 1
        end
        -- One trip to the thread pool on a miss: the resolved path, its stat and the open file.
        local e = find(file, held)
        if not e or not e.inside then return plain(res, 404, "Not Found\n") end
        local t = e.st.type
        if t == "directory" then
            if sub(raw, -1) ~= "/" then
                local q = match(req.url, "%?.*$") or ""
                return plain(res, 301, "Moved Permanently\n", { Location = raw .. "/" .. q })
            end
            if o.index then
                local ie = find(file .. "/" .. o.index, held)
                if ie and ie.st.type == "file" and ie.inside then
                    file, e, t = file .. "/" .. o.index, ie, "file"
                end
            end
            if t == "directory" then
                if o.listing then return listing(res, file, raw, o, method == "HEAD") end
                return plain(res, 404, "Not Found\n")
            end
        elseif t ~= "file" then
            return plain(res, 404, "Not Found\n")
        end
        local own = res._n == 1 -- no field set before static's (see put)
        put(res, own, "Content-Type", e.ctype or content_type(file))
        -- Variants: picked for a client that says what it accepts; for any client, a file that
        -- has one says Vary (a cache must not give its plain response to every client). Whether
        -- it has one is known once per cache entry.
        local encoding, vary
        local ae = o.precompressed and req.headers["accept-encoding"]
        if ae then
            local orig = e
            for _, v in ipairs(VARIANTS) do
                local ve = find(file .. v[2], held)
                if ve and ve.st.type == "file" and ve.inside then
                    vary = true
                    if not encoding and accepts(ae, v[1]) then encoding, e = v[1], ve end
                end
            end
            orig.variants = vary or false
        elseif o.precompressed then
            vary = e.variants
            if vary == nil then
                vary = false
                for _, v in ipairs(VARIANTS) do
                    local ve = find(file .. v[2], held)
                    if ve and ve.st.type == "file" and ve.inside then vary = true end
                end
                e.variants = vary
            end
            vary = vary or nil
        end
        -- A file with no variant: a server may then answer it without Lua (see send_file).
        local plain = own and not vary and e.st.size <= SMALL_FILE
        return send_file(req, res, e, o, encoding, vary, own, plain)
    end
    -- The handler: serve, then let go of the entries the request held (an entry dropped
    -- meanwhile closes its descriptor now), also when serve raised.
    local function handler(req, res, params)
        local held = {}
        local ok, err = pcall(serve, req, res, params, held)
        for i = 1, #held do
            local e = held[i]
            e.users = e.users - 1
            if e.dropped and e.users == 0 and e.file then discard(e.file) end
        end
        if not ok then error(err, 0) end
        return err
    end
    if kept then handlers[handler] = kept end
    return handler
end

--- The cache of whole small responses (core.filecache) of a handler made by static.new, or nil
--- for any other function: a server whose handler it is answers from it (lib/http/server.lua).
function static.cached_files(handler)
    return handlers[handler]
end

static.parse_http_date = parse_http_date
static.range_of = range_of

return static
