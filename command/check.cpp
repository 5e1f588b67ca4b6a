// pyimport-check: what rank 0 of a job would do for an interpreter, run
// outside any job (`pyimport check` calls it): the settings, the trees it
// would snapshot and why, the snapshot's size and what would not fit, the
// profile, whether the node directory and the MPI libraries are usable.
// It uses the library's own code (the core), so its answers are the job's.
//
//   pyimport-check --python PATH --version X.Y [--audit FILE] [-- ARGS...]
//
// Exits 0 when a job would be served, 1 when something would stop it (each
// such line starts with "problem:"), 2 on bad arguments.
#include "base/config.hpp"
#include "image/profile.hpp"
#include "image/walk.hpp"
#include "startup/activation.hpp"
#include "startup/local_filesystems.hpp"
#include "startup/protocol.hpp"
#include "startup/search_path.hpp"

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <string>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <vector>

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

using namespace pyimport;

namespace {

int g_problems = 0;
bool g_passes_through = false; // the trees are node-local and PYIMPORT_SERVE_LOCAL=0

void problem(const std::string& text) {
    std::printf("problem: %s\n", text.c_str());
    ++g_problems;
}

std::string mib(uint64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / 1048576.0);
    return buf;
}

const char* getenv_lookup(const char* name) {
    return std::getenv(name);
}

void report_settings(Config& config) {
    std::string error;
    bool ok = parse_config(getenv_lookup, config, error);
    std::printf("settings:");
    bool any = false;
#define PYIMPORT_SET(field, name, type, def, meaning)                                              \
    if (const char* value = std::getenv(name)) {                                                   \
        std::printf("%s %s=%s", any ? "," : "", name, value);                                      \
        any = true;                                                                                \
    }
    PYIMPORT_OPTIONS(PYIMPORT_SET)
#undef PYIMPORT_SET
    std::printf("%s\n", any ? "" : " the defaults (no PYIMPORT_* variable is set)");
    if (!ok) problem(error);
    if (config.disable) problem("PYIMPORT_DISABLE is set: every process stays inert");
}

// The interpreter as rank 0 would see it when started as `python ARGS`.
Interpreter interpreter_of(const std::string& python, const std::string& version,
                           const std::vector<std::string>& arguments) {
    Interpreter interpreter;
    interpreter.version = version;
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd)) interpreter.cwd = cwd;
    interpreter.invoked = invoked_executable(python, interpreter.cwd, std::getenv("PATH"));
    char resolved[PATH_MAX];
    if (realpath(interpreter.invoked.c_str(), resolved)) interpreter.resolved = resolved;
    interpreter.env = getenv_lookup;
    interpreter.arguments = arguments;
    return interpreter;
}

void report_snapshot(const Config& config, const Interpreter& interpreter) {
    std::printf("interpreter: %s (Python %s, %s)\n", interpreter.invoked.c_str(),
                interpreter.version.c_str(), interpreter.resolved.c_str());
    SearchPlan plan = search_plan(interpreter);
    WalkInputs inputs;
    inputs.default_prefixes = plan.prefixes;
    inputs.probes = plan.probes;
    inputs.script_directory = plan.script_directory;
    std::string version = interpreter.version;
    if (size_t dot = version.find('.'); dot != std::string::npos) version.erase(dot, 1);
    inputs.cache_tag = "cpython-" + version;
    BuildOptions options = walk_options(config, inputs); // as rank 0 builds them
    if (config.prefixes.empty()) {
        std::printf("prefixes (the interpreter's search path; PYIMPORT_PREFIX is not set):\n");
        for (size_t i = 0; i < plan.prefixes.size(); ++i)
            std::printf("  %s  (%s)\n", plan.prefixes[i].c_str(),
                        i < plan.reasons.size() ? plan.reasons[i].c_str() : "");
    } else {
        std::printf("prefixes (PYIMPORT_PREFIX):\n");
        for (const std::string& prefix : config.prefixes)
            std::printf("  %s\n", prefix.c_str());
    }
    if (!plan.script_directory.empty())
        std::printf("script directory: %s (sys.path[0]: its modules served, its other files "
                    "read from the filesystem)\n",
                    plan.script_directory.c_str());
    std::string kinds;
    if (!on_local_filesystems(walked_trees(options), kinds))
        std::printf("filesystems: not all node-local: a job is served\n");
    else if (config.serve_local)
        std::printf("filesystems: node-local (%s): a job is served anyway "
                    "(PYIMPORT_SERVE_LOCAL=1)\n",
                    kinds.c_str());
    else
        std::printf("filesystems: node-local (%s): a job passes through, there is nothing to "
                    "save (PYIMPORT_SERVE_LOCAL=1 serves it)\n",
                    kinds.c_str()),
            g_passes_through = true;
    std::printf("single paths: %zu that the interpreter asks about at start-up\n",
                plan.probes.size());
    NotCached not_cached;
    options.not_cached = &not_cached;

    // The profile the job would start from (it selects what is read).
    std::string dir = profile_directory(config.profile, getenv_lookup);
    PathSet profile;
    if (dir.empty()) {
        std::printf("profile: off (PYIMPORT_PROFILE=off): every prefix is walked whole\n");
    } else {
        std::vector<std::string> args = interpreter.arguments;
        std::string file =
            profile_file(dir, interpreter.resolved, program_identity(args), options.prefixes);
        std::string error;
        if (!read_profile(file, profile, error))
            problem(error + " (the next job ignores and rewrites it)");
        else if (profile.empty())
            std::printf("profile: none yet (%s): the first job walks every prefix whole, the "
                        "next reads only what it used\n",
                        file.c_str());
        else
            std::printf("profile: %s, %zu paths: a job reads only those\n", file.c_str(),
                        profile.size());
        if (!profile.empty()) {
            options.profile = &profile;
            // As rank 0 does: what earlier jobs used outside the prefixes.
            size_t learned = add_learned_paths(profile, options);
            if (learned > 0)
                std::printf("learned by earlier jobs: %zu paths outside the prefixes\n", learned);
        }
    }

    std::vector<char> image;
    std::string error;
    auto started = std::chrono::steady_clock::now();
    if (!build_snapshot(options, image, error)) {
        problem("rank 0 could not build the snapshot: " + error);
        return;
    }
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::printf("snapshot: %s, built here in %.3f s (rank 0 does this once per job)\n",
                mib(image.size()).c_str(), seconds);
    if (not_cached.files > 0)
        std::printf("not cached: %u files (%s, %u of them libraries) over PYIMPORT_MAX_BYTES: "
                    "read from the filesystem\n",
                    not_cached.files, mib(not_cached.bytes).c_str(), not_cached.libraries);
}

void report_node_directory(const Config& config) {
    if (!config.libraries) {
        std::printf("node directory: not used (PYIMPORT_LIBRARIES=0)\n");
        return;
    }
    const std::string& dir = config.node_dir;
    struct statvfs vfs {};
    struct statfs fs {};
    if (statvfs(dir.c_str(), &vfs) != 0 || statfs(dir.c_str(), &fs) != 0) {
        problem("node directory " + dir + " (PYIMPORT_NODE_DIR): " + std::strerror(errno) +
                "; libraries would be loaded from the filesystem");
        return;
    }
    if (access(dir.c_str(), W_OK | X_OK) != 0) {
        problem("node directory " + dir + " (PYIMPORT_NODE_DIR) is not writable: " +
                std::strerror(errno) + "; libraries would be loaded from the filesystem");
        return;
    }
    if (vfs.f_flag & ST_NOEXEC) {
        problem("node directory " + dir +
                " (PYIMPORT_NODE_DIR) is mounted noexec: libraries "
                "cannot be mapped from it");
        return;
    }
    std::printf("node directory: %s: usable (%s, %s free)\n", dir.c_str(),
                fs.f_type == TMPFS_MAGIC ? "tmpfs" : "not tmpfs: copies cost disk writes",
                mib(static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize).c_str());
}

// Each MPI family's candidates as the shim tries them (mpi_library_candidates).
void report_mpi(const Config& config) {
    Launch hydra, open_mpi;
    hydra.launcher = Launcher::hydra;
    open_mpi.launcher = Launcher::open_mpi;
    int usable = 0;
    for (auto [family, launch] : {std::pair{"MPICH ABI (Hydra, srun --mpi=pmi2)", hydra},
                                  std::pair{"Open MPI (its mpirun, srun --mpi=pmix)", open_mpi}}) {
        std::string found;
        for (const std::string& library : mpi_library_candidates(config, launch)) {
            void* handle = dlopen(library.c_str(), RTLD_LAZY | RTLD_LOCAL);
            if (!handle) continue;
            void* init = dlsym(handle, "MPI_Init_thread");
            bool sessions = dlsym(handle, "MPI_Session_init") != nullptr;
            Dl_info info{};
            if (init)
                found = library + " (" +
                        (dladdr(init, &info) && info.dli_fname ? info.dli_fname : library) +
                        (sessions ? ", MPI-4 sessions" : "") + ")";
            dlclose(handle);
            if (init) break;
        }
        if (found.empty())
            std::printf("MPI library, %s: none loads\n", family);
        else
            std::printf("MPI library, %s: %s\n", family, found.c_str()), ++usable;
    }
    if (usable == 0)
        problem("no MPI library loads (PYIMPORT_MPI_LIBRARY names one): ranks would run "
                "uncached");
}

int usage() {
    std::fprintf(stderr, "usage: pyimport-check --python PATH --version X.Y [-- ARGS...]\n");
    return 2;
}

} // namespace

int main(int argc, char** argv) {
    std::string python, version;
    std::vector<std::string> arguments;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "--python" && i + 1 < argc)
            python = argv[++i];
        else if (arg == "--version" && i + 1 < argc)
            version = argv[++i];
        else if (arg == "--") {
            arguments.assign(argv + i + 1, argv + argc);
            break;
        } else
            return usage();
    }
    if (python.empty() || version.empty()) return usage();
    Config config;
    report_settings(config);
    report_snapshot(config, interpreter_of(python, version, arguments));
    report_node_directory(config);
    report_mpi(config);
    std::printf("%s\n", g_problems ? "a job would not be served as it could: see the problems "
                                     "above"
                        : g_passes_through ? "a job started with this interpreter would pass "
                                             "through (its trees are node-local); served, as "
                                             "above"
                                           : "a job started with this interpreter would be served");
    return g_problems ? 1 : 0;
}
