// Every PYIMPORT_* variable, in one table. The README's configuration table is
// written from this list; tests/unit/test_config.cpp checks the parser.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pyimport {

// X(field, variable, type, default, meaning)
#define PYIMPORT_OPTIONS(X)                                                                        \
    X(disable, "PYIMPORT_DISABLE", Bool, "0", "1 forces the library inert in every process")       \
    X(prefixes, "PYIMPORT_PREFIX", PathList, "",                                                   \
      "colon-separated directories to snapshot; empty means the interpreter's own search path")    \
    X(max_bytes, "PYIMPORT_MAX_BYTES", Size, "1G",                                                 \
      "most bytes of file contents rank 0 caches (suffix K, M, G), small files first; stats and "  \
      "listings are always cached; files past it are read from the filesystem")                    \
    X(content_suffixes, "PYIMPORT_CONTENT", SuffixList, ".py,.pyc,.pth",                           \
      "file name endings, comma-separated, whose bytes are cached (a .py is skipped when its "     \
      "__pycache__ bytecode exists; other files: metadata only)")                                  \
    X(stat_suffixes, "PYIMPORT_STAT", SuffixList, ".so",                                           \
      "file name endings whose stat (not bytes) is cached besides PYIMPORT_CONTENT's; other "      \
      "regular files are listed by name and type only and their calls go to the filesystem, "      \
      "which saves rank 0 a request per data file; * caches every stat")                           \
    X(exclude, "PYIMPORT_EXCLUDE", SuffixList, "tests,test",                                       \
      "directory names, comma-separated, not walked: calls under them go to the filesystem "       \
      "(test suites: a third of numpy's and scipy's files, and of a full stdlib)")                 \
    X(profile, "PYIMPORT_PROFILE", Text, "auto",                                                   \
      "directory where rank 0 keeps, per program, the paths its jobs used, so that the next job "  \
      "reads only those (the rest is forwarded and learned); auto: $XDG_CACHE_HOME/pyimport or "   \
      "~/.cache/pyimport; off: walk every prefix whole each time")                                 \
    X(libraries, "PYIMPORT_LIBRARIES", Bool, "1",                                                  \
      "1: shared libraries under the prefixes (*.so, *.so.N) are cached too, within "              \
      "PYIMPORT_MAX_BYTES, and dlopen loads them from node-local copies in PYIMPORT_NODE_DIR; "    \
      "0: the loader reads them from the filesystem")                                              \
    X(node_dir, "PYIMPORT_NODE_DIR", Path, "/dev/shm",                                             \
      "node-local directory (tmpfs) for those copies, in a private pyimport-<uid> directory, "     \
      "removed when the job ends")                                                                 \
    X(log, "PYIMPORT_LOG", Level, "0",                                                             \
      "diagnostics on stderr of active ranks: 0 silent, 1 start-up steps, 2 the prefixes and "     \
      "why each, the script's directory, 3 every forwarded call")                                  \
    X(stats, "PYIMPORT_STATS", Bool, "0",                                                          \
      "1 prints one summary per job at exit on rank 0's stderr")                                   \
    X(stats_file, "PYIMPORT_STATS_FILE", FilePattern, "",                                          \
      "file rank 0 writes the job's statistics to at exit, one JSON document "                     \
      "(docs/statistics.md; "                                                                      \
      "read with pyimport report): %j expands to the job id, %h to rank 0's host name, %p to its " \
      "process id, %% to %; an existing file is replaced")                                         \
    X(serve_local, "PYIMPORT_SERVE_LOCAL", Bool, "0",                                              \
      "0: a job whose trees (the prefixes, the script's directory) are all on node-local "         \
      "filesystems (ext4, XFS, Btrfs, ZFS, tmpfs, overlay, squashfs...) passes through: the "      \
      "node's page cache already answers every rank, and serving could only cost; 1 serves it "    \
      "from the snapshot too")                                                                     \
    X(timeout, "PYIMPORT_TIMEOUT", Seconds, "300",                                                 \
      "seconds a rank waits for the start-up broadcast; then it runs uncached (ranks of one "      \
      "job that do not all activate never complete it)")                                           \
    X(recheck, "PYIMPORT_RECHECK", Bool, "1",                                                      \
      "1: after a child process of a rank ends, each cached directory is compared once with "      \
      "the filesystem (one statx) before it is trusted again, so files the child created are "     \
      "seen; 0: never")                                                                            \
    X(any_program, "PYIMPORT_ANY_PROGRAM", Bool, "0",                                              \
      "1 activates in any MPI-launched program, not only Python interpreters")                     \
    X(exit_timeout, "PYIMPORT_EXIT_TIMEOUT", Seconds, "5",                                         \
      "under srun, which lets a job go on when a rank dies: seconds a rank waits at exit for "     \
      "the others (the PYIMPORT_STATS summary, the end of MPI), then leaves without them; under "  \
      "Hydra and mpirun, which end such a job themselves, the exit waits as MPI_Finalize does")    \
    X(mpi_sessions, "PYIMPORT_MPI_SESSIONS", Bool, "1",                                            \
      "1: an MPI library with MPI-4 sessions (MPICH 4) is used through a session of the "          \
      "shim's own; 0, and MPIs without them: the shim initialises MPI itself and answers the "     \
      "application's MPI_Init and MPI_Finalize (Open MPI always)")                                 \
    X(mpi_library, "PYIMPORT_MPI_LIBRARY", Text, "",                                               \
      "MPI library the active shim loads (a soname or path, of the MPICH ABI or Open MPI); "       \
      "empty: Open MPI's libmpi.so.40 under its mpirun and, if installed, under a PMIx launcher "  \
      "(srun --mpi=pmix), else libmpi.so.12 or libmpich.so.12")

// The settings. A default-constructed Config holds the table's defaults
// (parsed from the table's text, so they cannot disagree with it).
struct Config {
    Config();
    bool disable;
    std::vector<std::string> prefixes;
    uint64_t max_bytes;
    std::vector<std::string> content_suffixes;
    std::vector<std::string> stat_suffixes;
    std::vector<std::string> exclude;
    std::string profile;
    bool libraries;
    std::string node_dir;
    int log;
    bool stats;
    std::string stats_file;
    bool serve_local;
    int timeout;
    bool recheck;
    bool any_program;
    int exit_timeout;
    bool mpi_sessions;
    std::string mpi_library;
};

// Reads the variables through `lookup` (getenv in production). On a bad value
// returns false and sets `error` to one line naming the first bad variable
// (also in `bad_variable`, if given) and what it accepts; a bad variable
// holds its default.
using EnvLookup = const char* (*)(const char* name);
bool parse_config(EnvLookup lookup, Config& config, std::string& error,
                  std::string* bad_variable = nullptr);

// Typed parsers, exposed for the unit tests.
bool parse_bool(const char* text, bool& out);
bool parse_size(const char* text, uint64_t& out);
bool parse_level(const char* text, int& out);
bool parse_seconds(const char* text, int& out);
bool parse_path_list(const char* text, std::vector<std::string>& out);
bool parse_suffix_list(const char* text, std::vector<std::string>& out);
// A file name in which '%' is followed only by j, h, p or %.
bool parse_file_pattern(const char* text, std::string& out);

} // namespace pyimport
