#include "startup/activation.hpp"

#include "base/config.hpp"
#include "base/real.hpp"
#include "image/profile.hpp"
#include "startup/search_path.hpp"

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace pyimport {

namespace {

// A whole non-negative decimal number, or -1.
int number(const char* text) {
    if (!text || !*text) return -1;
    char* end = nullptr;
    long value = strtol(text, &end, 10);
    return *end == '\0' && value >= 0 && value <= INT_MAX ? static_cast<int>(value) : -1;
}

} // namespace

bool launched_as_rank(EnvLookup lookup, bool (*fd_open)(int), Launch& launch,
                      std::string& why_not) {
    if (lookup(kActiveMarker)) {
        why_not = "a descendant of an active process";
        return false;
    }
    launch = Launch{};
    launch.pmix = lookup("PMIX_RANK") != nullptr;
    for (const char* name : {"I_MPI_ROOT", "CRAY_MPICH_DIR", "CRAY_MPICH_BASEDIR", "MPICH_DIR",
                             "MPICH_HOME", "MVAPICH2_HOME", "MV2_COMM_WORLD_RANK"})
        launch.mpich_environment = launch.mpich_environment || lookup(name) != nullptr;
    if (const char* rank = lookup("OMPI_COMM_WORLD_RANK")) {
        launch.launcher = Launcher::open_mpi;
        launch.rank = number(rank);
        launch.ranks = number(lookup("OMPI_COMM_WORLD_SIZE"));
        launch.one_node =
            launch.ranks > 0 && number(lookup("OMPI_COMM_WORLD_LOCAL_SIZE")) == launch.ranks;
    } else if (lookup("PMI_RANK") && lookup("MPI_LOCALRANKID")) {
        launch.launcher = Launcher::hydra;
        launch.rank = number(lookup("PMI_RANK"));
        launch.ranks = number(lookup("PMI_SIZE"));
        launch.one_node = launch.ranks > 0 && number(lookup("MPI_LOCALNRANKS")) == launch.ranks;
    } else if (lookup("SLURM_PROCID")) {
        // A batch script has SLURM_PROCID=0 too, but no step of its own.
        if (!lookup("SLURM_STEP_ID") && !lookup("SLURM_STEPID")) {
            why_not = "a process of a Slurm batch script, not a task of srun";
            return false;
        }
        launch.launcher = Launcher::slurm;
        launch.rank = number(lookup("SLURM_PROCID"));
        const char* tasks = lookup("SLURM_STEP_NUM_TASKS");
        launch.ranks = number(tasks ? tasks : lookup("SLURM_NTASKS"));
        const char* nodes = lookup("SLURM_STEP_NUM_NODES");
        launch.one_node = number(nodes ? nodes : lookup("SLURM_NNODES")) == 1;
        if (const char* type = lookup("SLURM_MPI_TYPE"))
            launch.pmix = launch.pmix || std::strncmp(type, "pmix", 4) == 0;
    } else if (const char* rank = lookup("PMI_RANK")) {
        launch.rank = number(rank);
        launch.ranks = number(lookup("PMI_SIZE"));
    } else if (const char* rank = lookup("PMIX_RANK")) {
        launch.rank = number(rank);
    } else {
        why_not = "not started by an MPI launcher";
        return false;
    }
    // Hydra and srun's PMI-2 hand each rank a PMI socket; a subprocess whose
    // descriptors were closed (Python's subprocess does that) inherits the
    // number only, and MPI would abort it.
    if (const char* pmi_fd = lookup("PMI_FD")) {
        int fd = number(pmi_fd);
        if (fd < 0 || !fd_open(fd)) {
            why_not = "PMI_FD is not open (a subprocess of a rank)";
            return false;
        }
    }
    return true;
}

std::vector<std::string> mpi_library_candidates(const Config& config, const Launch& launch,
                                                const BuiltMpiLibraries& built) {
    if (!config.mpi_library.empty()) return {config.mpi_library};
    std::vector<std::string> mpich_abi = {"libmpi.so.12", "libmpich.so.12"};
    if (*built.mpich_abi) mpich_abi.emplace_back(built.mpich_abi);
    std::vector<std::string> open_mpi = {"libmpi.so.40"};
    if (*built.open_mpi) open_mpi.emplace_back(built.open_mpi);
    if (launch.launcher == Launcher::open_mpi) return open_mpi;
    if (launch.pmix && launch.launcher != Launcher::hydra && !launch.mpich_environment) {
        open_mpi.insert(open_mpi.end(), mpich_abi.begin(), mpich_abi.end());
        return open_mpi;
    }
    return mpich_abi;
}

bool launcher_keeps_going(const Launch& launch) {
    return launch.launcher == Launcher::slurm;
}

bool may_decide_alone(const Launch& launch) {
    return launch.one_node;
}

Activation decide_activation(EnvLookup lookup, bool (*is_python)(), Config& config,
                             std::string& error) {
    std::string bad;
    bool parsed = parse_config(lookup, config, error, &bad);
    if (config.disable) return Activation::Inert;
    // A bad PYIMPORT_ANY_PROGRAM asked for something: say so in any program.
    if (!config.any_program && bad != "PYIMPORT_ANY_PROGRAM" && !is_python())
        return Activation::Inert;
    return parsed ? Activation::Active : Activation::Misconfigured;
}

// The program is a Python interpreter: Py_BytesMain is defined, in the
// program itself (a static libpython, as Debian builds it) or in a libpython
// that a program named python* uses (--enable-shared builds: conda, pyenv).
// Programs that embed libpython (gdb, vim, a simulation code) are not.
std::string executable_path() {
    char exe[PATH_MAX];
    ssize_t n = REAL(readlink)("/proc/self/exe", exe, sizeof exe);
    return n > 0 && n < static_cast<ssize_t>(sizeof exe) ? std::string(exe, static_cast<size_t>(n))
                                                         : std::string();
}

bool is_python() {
    void* entry = REAL(dlsym)(RTLD_DEFAULT, "Py_BytesMain");
    if (!entry) return false;
    std::string exe = executable_path();
    if (exe.empty()) return false;
    if (exe.substr(exe.find_last_of('/') + 1).starts_with("python")) return true;
    Dl_info info{};
    if (!REAL(dladdr)(entry, &info) || !info.dli_fname) return false;
    if (info.dli_fname[0] == '\0') return true; // the main program's own map
    char where[PATH_MAX];
    return REAL(realpath)(info.dli_fname, where) && exe == where;
}

namespace {

std::string python_version() {
    using GetVersion = const char* (*)();
    auto fn = reinterpret_cast<GetVersion>(REAL(dlsym)(RTLD_DEFAULT, "Py_GetVersion"));
    if (!fn) return {};
    const char* v = fn(); // "3.11.2 (main, ...": safe before the interpreter starts
    int major = 0, minor = 0;
    if (std::sscanf(v, "%d.%d", &major, &minor) != 2) return {};
    return std::to_string(major) + "." + std::to_string(minor);
}

} // namespace

std::string python_cache_tag() {
    std::string version = python_version();
    if (version.empty()) return {};
    version.erase(version.find('.'), 1);
    return "cpython-" + version;
}

SearchPlan default_search_plan(const std::vector<std::string>& command_line) {
    Interpreter interpreter;
    interpreter.version = python_version();
    interpreter.resolved = executable_path();
    interpreter.env = [](const char* name) -> const char* { return getenv(name); };
    char cwd[PATH_MAX];
    long got = syscall(SYS_getcwd, cwd, sizeof cwd);
    if (got > 0) interpreter.cwd = cwd;
    if (!command_line.empty())
        interpreter.invoked = invoked_executable(
            command_line[0], got > 0 ? std::string(cwd) : std::string(), getenv("PATH"));
    if (interpreter.invoked.empty()) interpreter.invoked = interpreter.resolved;
    if (!command_line.empty())
        interpreter.arguments.assign(command_line.begin() + 1, command_line.end());
    return search_plan(interpreter);
}

} // namespace pyimport
