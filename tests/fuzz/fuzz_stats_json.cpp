// json_string on arbitrary bytes (paths in the statistics document are any
// bytes but '\0'): the output is one JSON string of valid UTF-8 and nothing
// else, and decoding it as Python's json and os.fsencode do gives back the
// input exactly (U+DC80..U+DCFF stand for the bytes that are not UTF-8).
#include "serve/stats.hpp"

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

using namespace pyimport;

namespace {

unsigned hex(std::string_view s, size_t at) {
    unsigned value = 0;
    for (size_t i = at; i < at + 4; ++i) {
        char c = s[i];
        value = value * 16 + (c >= '0' && c <= '9'   ? c - '0'
                              : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                     : 99);
        if (value > 0xffff) std::abort();
    }
    return value;
}

// Decodes `json`, aborting on anything a JSON parser would refuse or that
// json_string never writes.
std::string decode(std::string_view json) {
    if (json.size() < 2 || json.front() != '"' || json.back() != '"') std::abort();
    std::string out;
    for (size_t i = 1; i + 1 < json.size();) {
        auto c = static_cast<unsigned char>(json[i]);
        if (c < 0x20 || c == 0x7f) std::abort(); // control characters are escaped
        if (c == '"') std::abort();              // only the closing quote is bare
        if (c != '\\') {
            size_t length = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            if (c >= 0x80 && (c < 0xc2 || c > 0xf4)) std::abort();
            if (i + length > json.size() - 1) std::abort();
            unsigned code = length == 1 ? c : c & (0x7f >> length);
            for (size_t k = 1; k < length; ++k) {
                auto next = static_cast<unsigned char>(json[i + k]);
                if ((next & 0xc0) != 0x80) std::abort();
                code = code << 6 | (next & 0x3f);
            }
            // Strict UTF-8: shortest form, no surrogate, nothing past U+10FFFF.
            static const unsigned kLeast[] = {0, 0, 0x80, 0x800, 0x10000};
            if (code < kLeast[length] || (code >= 0xd800 && code <= 0xdfff) || code > 0x10ffff)
                std::abort();
            out.append(json.substr(i, length));
            i += length;
            continue;
        }
        if (i + 2 > json.size() - 1) std::abort();
        char e = json[i + 1];
        if (e == '"' || e == '\\') {
            out += e, i += 2;
        } else if (e == 'n') {
            out += '\n', i += 2;
        } else if (e == 't') {
            out += '\t', i += 2;
        } else if (e == 'u') {
            if (i + 6 > json.size() - 1) std::abort();
            unsigned code = hex(json, i + 2);
            if (code >= 0xdc80 && code <= 0xdcff)
                out += static_cast<char>(code - 0xdc00);
            else if (code < 0x20 || code == 0x7f)
                out += static_cast<char>(code);
            else
                std::abort(); // nothing else is escaped
            i += 6;
        } else {
            std::abort();
        }
    }
    return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    if (decode(json_string(input)) != input) std::abort();
    return 0;
}
