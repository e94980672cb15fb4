-- The build: a packager's or user's build (Release, dpkg-buildflags) must not fail on a
-- compiler warning; -Werror stays on in the development and CI builds.
local helper = require "helper"

local src = helper.source_dir

-- Configures a build tree in a fresh temporary directory; returns its path and cmake's status.
local function configure(args, env)
    local dir = os.tmpname()
    os.remove(dir)
    local _, err, status = helper.sh(("%s cmake -S %s -B %s -G Ninja %s"):format(env or "", src, dir, args))
    return dir, status, err
end

local function cache_value(dir, key)
    return (helper.read(dir .. "/CMakeCache.txt") or ""):match("\n" .. key .. ":%w+=([^\n]*)")
end

describe("build", function()
    it("warnings are errors in RelWithDebInfo and Debug builds, not in Release or None", function()
        for _, case in ipairs({ { "RelWithDebInfo", "ON" }, { "Debug", "ON" }, { "Release", "OFF" }, { "None", "OFF" } }) do
            local dir, status, err = configure("-DCMAKE_BUILD_TYPE=" .. case[1])
            assert.are.equal(0, status, err)
            assert.are.equal(case[2], cache_value(dir, "LUAIO_WERROR"), case[1])
            local ninja = helper.read(dir .. "/build.ninja")
            assert.are.equal(case[2] == "ON", ninja:find("-Werror ", 1, true) ~= nil, case[1])
            helper.sh("rm -rf " .. dir)
        end
    end)

    it("takes dpkg-buildflags' CPPFLAGS, CXXFLAGS and LDFLAGS from the environment", function()
        local dir, status, err = configure("-DCMAKE_BUILD_TYPE=None",
            "CPPFLAGS='-Wdate-time -D_FORTIFY_SOURCE=2' CXXFLAGS='-O2 -fstack-protector-strong' LDFLAGS='-Wl,-z,now'")
        assert.are.equal(0, status, err)
        local ninja = helper.read(dir .. "/build.ninja")
        assert.truthy(ninja:find("-D_FORTIFY_SOURCE=2", 1, true))
        assert.truthy(ninja:find("-fstack-protector-strong", 1, true))
        assert.truthy(ninja:find("-Wl,-z,now", 1, true))
        helper.sh("rm -rf " .. dir)
    end)

    it("runtime/stream.cpp compiles at -O3 with -Werror (GCC's -Wnonnull false positive)", function()
        local out = os.tmpname()
        local _, err, status = helper.sh(("c++ -std=c++17 -O3 -Wall -Wextra -Werror -I%s $(pkg-config --cflags luajit) -c %s/runtime/stream.cpp -o %s")
            :format(src, src, out))
        os.remove(out)
        assert.are.equal(0, status, err)
    end)
end)
