// Which trees the interpreter being started will import from, found as
// CPython's getpath and site find them (the parts that choose the trees):
// a virtual environment by its pyvenv.cfg beside or above the executable as
// invoked (`venv/bin/python` run by path, no `activate` needed), its `home`
// and `include-system-site-packages`; otherwise the prefix above the real
// executable; PYTHONHOME, PYTHONPATH, the user site directory, .pth files;
// the interpreter's -I, -E, -s and -S.
#pragma once

#include "base/config.hpp"
#include "image/walk.hpp"

#include <string>
#include <vector>

namespace pyimport {

struct Interpreter {
    std::string version;  // "3.11"
    std::string invoked;  // the executable as invoked, absolute, symlinks not resolved
    std::string resolved; // the executable's real path (/proc/self/exe)
    EnvLookup env = nullptr;
    std::vector<std::string> arguments; // argv without argv[0]: -I, -E, -s, -S count
    std::string cwd;                    // the working directory ("" if unknown)
};

struct VirtualEnv {
    std::string root; // the directory holding pyvenv.cfg
    std::string home; // its `home` (the base interpreter's directory), or ""
    bool system_site = false;
};

// The virtual environment `invoked` belongs to: pyvenv.cfg in its directory
// or that directory's parent. False if there is none.
bool find_virtual_env(const std::string& invoked, VirtualEnv& out);

// What rank 0 snapshots for this interpreter, and why.
struct SearchPlan {
    // The directories to cache, those that exist, in search order: also the
    // directories that .pth files in the site directories add (editable
    // installs), as site.py adds them.
    std::vector<std::string> prefixes;
    std::vector<std::string> reasons; // one per prefix, for PYIMPORT_LOG=2
    // Single paths the interpreter asks about before and while importing
    // site (its executable's links, pyvenv.cfg, ._pth, pybuilddir.txt,
    // landmarks, pythonXY.zip, site directories that do not exist), the
    // script, and zip archives on PYTHONPATH.
    std::vector<BuildOptions::Probe> probes;
    // sys.path[0]: the script's directory, or the working directory for -c,
    // -m and stdin; none with -I, -P or PYTHONSAFEPATH.
    std::string script_directory;
};
SearchPlan search_plan(const Interpreter& interpreter);
inline std::vector<std::string> search_prefixes(const Interpreter& interpreter) {
    return search_plan(interpreter).prefixes;
}

// The executable as CPython computes sys.executable: argv[0] made absolute
// against `cwd` if it has a '/', else found in `path` (PATH); "" if neither.
std::string invoked_executable(const std::string& argv0, const std::string& cwd, const char* path);

} // namespace pyimport
