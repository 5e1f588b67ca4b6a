// Deciding whether a process activates, and what it caches by default.
#pragma once

#include "base/config.hpp"
#include "startup/search_path.hpp"

#include <pyimport/pyimport.h>
#include <string>
#include <vector>

namespace pyimport {

inline constexpr const char* kActiveMarker = PYIMPORT_ENV_ACTIVE_PID;

// Who started this process as a rank, from the variables it sets.
enum class Launcher {
    hydra,    // MPICH's mpiexec (also inside a Slurm allocation)
    open_mpi, // Open MPI's mpirun / prterun
    slurm,    // srun (--mpi=pmi2, pmix or none)
    other,    // PMI_RANK or PMIX_RANK from another launcher
};
struct Launch {
    Launcher launcher = Launcher::other;
    int rank = -1;         // this rank's number, as the launcher counts (-1: not said)
    int ranks = -1;        // how many ranks it started (-1: not said)
    bool one_node = false; // the launcher says every rank is on this node
    bool pmix = false;     // the ranks' process manager interface is PMIx
    // The environment of an MPICH-ABI library (Intel MPI's, Cray MPICH's,
    // MVAPICH's, an MPICH module's variables): under PMIx that one first.
    bool mpich_environment = false;
};

// A rank started by an MPI launcher that is not a descendant (child, or a
// later exec) of a process in which the shim already activated, nor a
// process of a Slurm batch script outside srun (which sees SLURM_PROCID=0),
// nor a subprocess that lost Hydra's PMI socket (`fd_open` tells).
bool launched_as_rank(EnvLookup lookup, bool (*fd_open)(int), Launch& launch, std::string& why_not);

// The MPI libraries to try, in order: PYIMPORT_MPI_LIBRARY if set; Open
// MPI's under its mpirun; under a PMIx launcher (srun --mpi=pmix) Open MPI's
// first, as Debian's MPICH has no PMIx client, unless the environment is an
// MPICH-ABI library's; else the MPICH ABI's. Each family's sonames are
// followed by the build's own library of that family, if it was given one
// (PYIMPORT_MPICH_LIBRARY, PYIMPORT_OPEN_MPI_LIBRARY: an MPI found by RPATH).
struct BuiltMpiLibraries {
    const char* mpich_abi = PYIMPORT_BUILT_MPICH_LIBRARY;
    const char* open_mpi = PYIMPORT_BUILT_OPEN_MPI_LIBRARY;
};
std::vector<std::string> mpi_library_candidates(const Config& config, const Launch& launch,
                                                const BuiltMpiLibraries& built = {});

// Whether the launcher lets a job go on when one of its ranks dies (srun
// without -K): then no rank may wait for the others at exit without bound.
// Hydra and mpirun end such a job themselves, and end it too when a rank
// leaves without ending MPI: there the exit waits as MPI_Finalize does.
bool launcher_keeps_going(const Launch& launch);

// Whether a rank may decide alone, before MPI, that the job's trees are
// node-local: only when every rank is on its node (the launcher says so),
// where every rank sees the same mounts. Elsewhere rank 0 decides for all.
bool may_decide_alone(const Launch& launch);
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
