-- Calibrates spec/http_conformance_cases.lua on another server (nginx: see conformance_nginx.sh):
-- runs every case against 127.0.0.1:<port> and prints each case whose outcome differs from the
-- table. Usage: luaio bench/http/conformance_nginx.lua <port> [quiet ms]
package.path = "spec/?.lua;" .. package.path
local conformance = require "http_conformance_cases"
local port = assert(tonumber(arg[1]), "usage: conformance_nginx.lua <port> [quiet ms]")
local quiet = tonumber(arg[2]) or 500
local differ = 0
for _, r in ipairs(conformance.run(port, quiet)) do
    local c = r.case
    if r.status ~= c.status or r.close ~= c.close then
        differ = differ + 1
        print(string.format("%-55s expected %-8q close=%-5s got %-8q close=%s", c.name, c.status,
            tostring(c.close), r.status, tostring(r.close)))
    end
end
print(string.format("%d cases, %d differ", #conformance.cases, differ))
os.exit(differ == 0 and 0 or 1)
