// The PYIMPORT_* variables' parsers on arbitrary values: the input, split at
// each '\0', gives the values of the variables of PYIMPORT_OPTIONS in order
// (missing ones are unset); each piece also goes through every typed parser.
#include "base/config.hpp"
#include "serve/stats.hpp"

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

using namespace pyimport;

namespace {

#define PYIMPORT_NAME(field, name, type, def, meaning) name,
const char* const kNames[] = {PYIMPORT_OPTIONS(PYIMPORT_NAME)};
#undef PYIMPORT_NAME
constexpr size_t kCount = sizeof kNames / sizeof kNames[0];

std::vector<std::string> g_values; // one per name; the lookup has no context argument

const char* lookup(const char* name) {
    for (size_t i = 0; i < kCount && i < g_values.size(); ++i)
        if (std::string_view(name) == kNames[i]) return g_values[i].c_str();
    return nullptr;
}

void check_list(const std::vector<std::string>& items, bool paths) {
    for (const std::string& item : items) {
        if (item.empty()) std::abort();
        if (paths && item[0] != '/') std::abort();
        if (!paths && item.find('/') != std::string::npos) std::abort();
    }
}

void typed(const std::string& value) {
    const char* text = value.c_str();
    bool flag = false;
    uint64_t size = 0;
    int number = 0;
    std::vector<std::string> list;
    (void)parse_bool(text, flag);
    if (parse_size(text, size) && value.find_first_not_of("0123456789") == std::string::npos &&
        std::to_string(size) !=
            value.substr(std::min(value.find_first_not_of('0'), value.size() - 1)))
        std::abort(); // plain digits: the number they spell
    if (parse_level(text, number) && (number < 0 || number > 3)) std::abort();
    if (parse_seconds(text, number) && (number < 1 || number > 86400)) std::abort();
    if (parse_path_list(text, list)) check_list(list, true);
    if (parse_suffix_list(text, list)) check_list(list, false);
    std::string pattern, path, error;
    // A pattern the parser accepts always expands (and to something).
    if (parse_file_pattern(text, pattern) &&
        (pattern != value || !expand_stats_path(pattern, "1.0", "node", 7, path, error) ||
         path.empty()))
        std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    g_values.clear();
    for (size_t pos = 0; pos <= input.size() && g_values.size() < kCount;) {
        size_t end = std::min(input.find('\0', pos), input.size());
        g_values.emplace_back(input.substr(pos, end - pos));
        pos = end + 1;
    }
    Config config;
    std::string error, bad;
    bool ok = parse_config(lookup, config, error, &bad);
    if (!ok) {
        bool named = false;
        for (const char* name : kNames)
            named |= bad == name;
        if (!named || error.find(bad) == std::string::npos) std::abort(); // names the variable
    }
    check_list(config.prefixes, true);
    check_list(config.content_suffixes, false);
    check_list(config.stat_suffixes, false);
    check_list(config.exclude, false);
    if (config.node_dir.empty() || config.node_dir[0] != '/') std::abort();
    if (config.log < 0 || config.log > 3 || config.timeout < 1) std::abort();
    for (const std::string& value : g_values)
        typed(value);
    return 0;
}
