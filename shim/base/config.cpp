#include "base/config.hpp"

#include <cctype>
#include <cstring>

namespace pyimport {

bool parse_bool(const char* text, bool& out) {
    static const char* const yes[] = {"1", "yes", "true", "on"};
    static const char* const no[] = {"0", "no", "false", "off", ""};
    for (const char* word : yes)
        if (strcasecmp(text, word) == 0) return out = true, true;
    for (const char* word : no)
        if (strcasecmp(text, word) == 0) return out = false, true;
    return false;
}

bool parse_size(const char* text, uint64_t& out) {
    const char* p = text;
    if (!std::isdigit(static_cast<unsigned char>(*p))) return false;
    uint64_t value = 0;
    for (; std::isdigit(static_cast<unsigned char>(*p)); ++p) {
        uint64_t digit = static_cast<uint64_t>(*p - '0');
        if (value > (UINT64_MAX - digit) / 10) return false;
        value = value * 10 + digit;
    }
    unsigned shift = 0;
    switch (std::toupper(static_cast<unsigned char>(*p))) {
    case '\0':
        break;
    case 'K':
        shift = 10;
        break;
    case 'M':
        shift = 20;
        break;
    case 'G':
        shift = 30;
        break;
    case 'T':
        shift = 40;
        break;
    default:
        return false;
    }
    if (*p != '\0') {
        ++p;
        if (*p == 'i' || *p == 'I') ++p; // KiB, MiB ...
        if (*p == 'b' || *p == 'B') ++p;
        if (*p != '\0') return false;
    }
    if (shift && value > (UINT64_MAX >> shift)) return false;
    out = value << shift;
    return true;
}

bool parse_level(const char* text, int& out) {
    if (text[0] >= '0' && text[0] <= '3' && text[1] == '\0') return out = text[0] - '0', true;
    return false;
}

bool parse_seconds(const char* text, int& out) {
    if (!std::isdigit(static_cast<unsigned char>(*text))) return false;
    long value = 0;
    for (const char* p = text; *p; ++p) {
        if (!std::isdigit(static_cast<unsigned char>(*p))) return false;
        value = value * 10 + (*p - '0');
        if (value > 86400) return false;
    }
    if (value < 1) return false;
    out = static_cast<int>(value);
    return true;
}

bool parse_path_list(const char* text, std::vector<std::string>& out) {
    out.clear();
    const char* start = text;
    for (const char* p = text;; ++p) {
        if (*p == ':' || *p == '\0') {
            std::string item(start, static_cast<size_t>(p - start));
            if (!item.empty()) {
                if (item[0] != '/') return false; // relative prefixes depend on cwd
                out.push_back(std::move(item));
            }
            if (*p == '\0') break;
            start = p + 1;
        }
    }
    return true;
}

bool parse_suffix_list(const char* text, std::vector<std::string>& out) {
    out.clear();
    const char* start = text;
    for (const char* p = text;; ++p) {
        if (*p == ',' || *p == '\0') {
            std::string item(start, static_cast<size_t>(p - start));
            if (item.find('/') != std::string::npos) return false;
            if (!item.empty()) out.push_back(std::move(item));
            if (*p == '\0') break;
            start = p + 1;
        }
    }
    return true;
}

bool parse_file_pattern(const char* text, std::string& out) {
    for (const char* p = text; *p; ++p)
        if (*p == '%' && (!p[1] || !std::strchr("jhp%", *++p))) return false;
    out = text;
    return text[0] != '\0';
}

namespace {
enum class Kind { Bool, Path, PathList, Size, SuffixList, Level, Seconds, Text, FilePattern };

const char* accepted(Kind kind) {
    switch (kind) {
    case Kind::Bool:
        return "0/1, yes/no, true/false, on/off";
    case Kind::Path:
        return "an absolute directory";
    case Kind::PathList:
        return "absolute directories separated by ':'";
    case Kind::Size:
        return "a byte count with optional K, M, G or T suffix, e.g. 512M";
    case Kind::SuffixList:
        return "file name endings separated by ',', e.g. .py,.pyc";
    case Kind::Level:
        return "one of 0, 1, 2, 3";
    case Kind::Seconds:
        return "whole seconds from 1 to 86400";
    case Kind::Text:
        return "any text";
    case Kind::FilePattern:
        return "a file name, in which %j (job id), %h (host), %p (pid) and %% expand";
    }
    return "";
}

bool parse_one(Kind kind, const char* text, void* field) {
    switch (kind) {
    case Kind::Bool:
        return parse_bool(text, *static_cast<bool*>(field));
    case Kind::Path:
        *static_cast<std::string*>(field) = text;
        return text[0] == '/';
    case Kind::PathList:
        return parse_path_list(text, *static_cast<std::vector<std::string>*>(field));
    case Kind::Size:
        return parse_size(text, *static_cast<uint64_t*>(field));
    case Kind::SuffixList:
        return parse_suffix_list(text, *static_cast<std::vector<std::string>*>(field));
    case Kind::Level:
        return parse_level(text, *static_cast<int*>(field));
    case Kind::Seconds:
        return parse_seconds(text, *static_cast<int*>(field));
    case Kind::Text:
        *static_cast<std::string*>(field) = text;
        return text[0] != '\0';
    case Kind::FilePattern:
        return parse_file_pattern(text, *static_cast<std::string*>(field));
    }
    return false;
}
} // namespace

Config::Config() {
#define PYIMPORT_DEFAULT(field, name, type, def, meaning) parse_one(Kind::type, def, &field);
    PYIMPORT_OPTIONS(PYIMPORT_DEFAULT)
#undef PYIMPORT_DEFAULT
}

bool parse_config(EnvLookup lookup, Config& config, std::string& error, std::string* bad_variable) {
    config = Config();
    bool ok = true;
#define PYIMPORT_PARSE(field, name, type, def, meaning)                                            \
    {                                                                                              \
        const char* value = lookup(name);                                                          \
        if (value && !parse_one(Kind::type, value, &config.field)) {                               \
            if (ok) {                                                                              \
                error = std::string("bad value for " name "=\"") + value + "\": expected " +       \
                        accepted(Kind::type) + "; running uncached";                               \
                if (bad_variable) *bad_variable = name;                                            \
            }                                                                                      \
            ok = false;                                                                            \
            parse_one(Kind::type, def, &config.field);                                             \
        }                                                                                          \
    }
    PYIMPORT_OPTIONS(PYIMPORT_PARSE)
#undef PYIMPORT_PARSE
    return ok;
}

} // namespace pyimport
