// Deciding whether a process activates, and what it caches by default.
#pragma once

#include <pyimport/pyimport.h>
#include <string>
#include <vector>

namespace pyimport {

inline constexpr const char* kActiveMarker = PYIMPORT_ENV_ACTIVE_PID;

// A rank started by an MPI launcher that is not a descendant (child, or a
// later exec) of a process in which the shim already activated.
bool launched_as_rank(std::string& why_not);
// The process is a Python interpreter (not a program that embeds libpython).
bool is_python();
// The running executable (/proc/self/exe), or "" if unknown.
std::string executable_path();
// "cpython-311" for CPython 3.11; empty if not a Python interpreter.
std::string python_cache_tag();
// The directories this interpreter will import from.
std::vector<std::string> default_prefixes();

} // namespace pyimport
