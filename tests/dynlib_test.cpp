// load_library (runtime/dynlib.h) against zlib, which every luaio machine has.
#include "runtime/dynlib.h"

#include <gtest/gtest.h>
#include <zlib.h>

TEST(Dynlib, ResolvesEverySymbol) {
    decltype(&::zlibVersion) version = nullptr;
    decltype(&::crc32) crc = nullptr;
    const luaio::Symbol syms[] = {{"zlibVersion", reinterpret_cast<void**>(&version)},
                                  {"crc32", reinterpret_cast<void**>(&crc)}};
    std::string err;
    ASSERT_TRUE(luaio::load_library("libz.so.1", "zlib1g", syms, 2, &err)) << err;
    ASSERT_NE(version, nullptr);
    EXPECT_EQ(version()[0], '1');
    EXPECT_EQ(crc(0, reinterpret_cast<const Bytef*>("a"), 1), 0xe8b7be43u);
    // A second load is the same library.
    ASSERT_TRUE(luaio::load_library("libz.so.1", "zlib1g", syms, 2, &err));
}

TEST(Dynlib, AMissingLibraryNamesItsPackage) {
    void* p = nullptr;
    const luaio::Symbol syms[] = {{"f", &p}};
    std::string err;
    EXPECT_FALSE(luaio::load_library("libluaio-nonexistent.so.9", "libluaio-nonexistent9", syms, 1, &err));
    EXPECT_NE(err.find("cannot load libluaio-nonexistent.so.9"), std::string::npos) << err;
    EXPECT_NE(err.find("install the Debian package libluaio-nonexistent9"), std::string::npos) << err;
    EXPECT_EQ(p, nullptr);
}

TEST(Dynlib, AMissingSymbolLeavesEverySlotAlone) {
    void* a = nullptr;
    void* b = nullptr;
    const luaio::Symbol syms[] = {{"zlibVersion", &a}, {"no_such_function_in_zlib", &b}};
    std::string err;
    EXPECT_FALSE(luaio::load_library("libz.so.1", "zlib1g", syms, 2, &err));
    EXPECT_NE(err.find("has no function no_such_function_in_zlib"), std::string::npos) << err;
    EXPECT_EQ(a, nullptr);
    EXPECT_EQ(b, nullptr);
}
