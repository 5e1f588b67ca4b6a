// Deciding whether a process activates, and what it caches by default.
#pragma once

#include "base/config.hpp"
#include "startup/search_path.hpp"

#include <pyimport/pyimport.h>
#include <string>
#include <vector>

namespace pyimport {

inline constexpr const char* kActiveMarker = PYIMPORT_ENV_ACTIVE_PID;

// A rank started by an MPI launcher that is not a descendant (child, or a
// later exec) of a process in which the shim already activated.
bool launched_as_rank(std::string& why_not);
enum class Activation {
    Inert,         // stays a pass-through, silently
    Active,        // takes part in the start-up step
    Misconfigured, // would activate, but a setting is bad: print `error`, stay uncached
};
// For a rank launched by MPI: parses every PYIMPORT_* variable through
// `lookup` into `config` and decides. Only a Python interpreter (`is_python`,
// asked only when needed) or, with PYIMPORT_ANY_PROGRAM=1, any program
// activates; a bad PYIMPORT_ANY_PROGRAM counts as its default.
Activation decide_activation(EnvLookup lookup, bool (*is_python)(), Config& config,
                             std::string& error);

// The process is a Python interpreter (not a program that embeds libpython).
bool is_python();
// The running executable (/proc/self/exe), or "" if unknown.
std::string executable_path();
// "cpython-311" for CPython 3.11; empty if not a Python interpreter.
std::string python_cache_tag();
// What this interpreter will import from and ask about (search_path.hpp).
// `command_line`: this process's argv (own_command_line()).
SearchPlan default_search_plan(const std::vector<std::string>& command_line);

} // namespace pyimport
