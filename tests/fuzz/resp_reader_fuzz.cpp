// libFuzzer driver for luaio's RESP2/RESP3 reader (modules/resp_reader.h).
//
// Input: byte 0 is the size of the reads the rest is cut into (0: all at once); the rest is what
// a server sends. The stream is read twice, in those reads and whole, with the text builder of
// the unit tests (tests/resp_reader_test.h): both must give the same replies and the same error,
// and every complete reply must have left exactly one value built.
#include "tests/resp_reader_test.h"

#include <cstdio>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    size_t cut = data[0];
    std::string in(reinterpret_cast<const char*>(data) + 1, size - 1);
    bool bad = false;
    std::string whole = luaio::resp::read_all(in, 0, &bad);
    std::string pieces = luaio::resp::read_all(in, cut, &bad);
    if (whole != pieces || bad) {
        std::fprintf(stderr, "whole:  %s\npieces: %s\n", whole.c_str(), pieces.c_str());
        std::abort();
    }
    return 0;
}
