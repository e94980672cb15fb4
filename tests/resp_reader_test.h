// A Builder for modules/resp_reader.h that writes each reply as text, for the unit tests and the
// fuzz driver: a scalar is its type byte and value, an aggregate its type, count and "{...}".
#pragma once

#include "modules/resp_reader.h"

#include <cstdio>
#include <string>
#include <vector>

namespace luaio::resp {

struct TextBuilder {
    std::vector<std::string> st; // the values being built; the reply is st[0] once complete
    std::string begun;           // the type of each reply begun

    void begin(char t) {
        begun += t;
        st.clear();
    }
    void string(char t, const char* s, size_t n, bool root) {
        st.push_back(std::string(1, t) + std::string(s, n) + (root ? "^" : ""));
    }
    void integer(long long v) { st.push_back(":" + std::to_string(v)); }
    void number(double v) {
        char b[64];
        std::snprintf(b, sizeof b, ",%.17g", v);
        st.push_back(b);
    }
    void boolean(bool v) { st.push_back(v ? "#t" : "#f"); }
    void null(bool root) { st.push_back(root ? "nil" : "null"); }
    void aggregate(char t, size_t n) { st.push_back(std::string(1, t) + std::to_string(n) + "{"); }
    void add(char, size_t idx) {
        std::string v = st.back();
        st.pop_back();
        st.back() += (idx ? "," : "") + v;
    }
};

// Feeds in pieces of `cut` bytes (0: all at once) and returns every reply, "|" after each, and
// "ERROR: <message>" at a protocol error. *bad is set when a reply left other than one value.
inline std::string read_all(const std::string& in, size_t cut = 0, bool* bad = nullptr) {
    Reader r;
    TextBuilder b;
    std::string out;
    size_t fed = 0;
    for (;;) {
        Status s = r.parse(b);
        if (s == Status::Reply) {
            if (b.st.size() != 1 && bad) *bad = true;
            out += (b.st.size() == 1 ? b.st[0] : "<bad stack>") + "|";
            b.st.clear();
            continue;
        }
        if (s == Status::Error) return out + "ERROR: " + r.error();
        if (fed == in.size()) return out;
        size_t n = cut && in.size() - fed > cut ? cut : in.size() - fed;
        r.feed(in.data() + fed, n);
        fed += n;
    }
}

} // namespace luaio::resp
