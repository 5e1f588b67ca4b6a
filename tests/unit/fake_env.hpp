// A fake environment for code that reads variables through an EnvLookup.
#pragma once

#include <map>
#include <string>

namespace pyimport::testing {

inline std::map<std::string, std::string> g_env;
inline const char* fake_env(const char* name) {
    auto it = g_env.find(name);
    return it == g_env.end() ? nullptr : it->second.c_str();
}

} // namespace pyimport::testing
