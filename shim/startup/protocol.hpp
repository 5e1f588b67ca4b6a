// The start-up step and the exit of one rank over a Transport: what every
// rank does between connecting and serving, and at exit. No process state
// lives here (runtime.cpp keeps it), so the unit tests run N ranks as
// threads over a fake transport.
//
// Start-up, the only collectives until exit:
//   1. connect;
//   2. rank 0 walks the prefixes; a status (ok and the image's size, or
//      rank 0's reason) goes to every rank, so that all learn of a failure
//      from the same broadcast and nobody waits for data;
//   3. the image, one copy per node (image_sharing.hpp); every rank checks it;
//   4. the node's first rank writes the libraries to the node-local mirror
//      and the node's ranks join it; a node barrier, so that no rank can
//      leave (and remove it) before all have joined.
// Exit: the summary's gathering (PYIMPORT_STATS=1), rank 0's profile, the
// mirror, the end of the session.
#pragma once

#include "base/config.hpp"
#include "image/image.hpp"
#include "image/profile.hpp"
#include "image/shared_image.hpp"
#include "image/walk.hpp"
#include "loader/libraries.hpp"
#include "loader/mirror.hpp"
#include "serve/core.hpp"
#include "startup/transport.hpp"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace pyimport {

// What rank 0 needs beyond the settings to build the image. Found by rank 0
// only (finding them asks the filesystem).
struct WalkInputs {
    std::vector<std::string> default_prefixes; // when PYIMPORT_PREFIX is empty
    std::vector<std::string> prefix_reasons;   // why each default prefix
    std::vector<BuildOptions::Probe> probes;   // single paths (search_path.hpp)
    std::string script_directory;              // sys.path[0], a live root
    std::string cache_tag;                     // "cpython-311"
    std::string profile_dir;                   // "" for no profile
    std::string executable, program;           // which program's profile
    std::optional<std::string> library_path;   // LD_LIBRARY_PATH, if set
};
using FindWalkInputs = std::function<WalkInputs(const Config&)>;

// What rank 0's walk takes from the settings and the inputs: the prefixes,
// the suffixes, the budget, the probes and the script's directory (not the
// profile, nor the loader's directories, which build_image adds).
BuildOptions walk_options(const Config& config, const WalkInputs& inputs);

// The trees such a walk reads (its prefixes and live roots): where
// PYIMPORT_SERVE_LOCAL=0 looks for node-local filesystems.
std::vector<std::string> walked_trees(const BuildOptions& options);

// What earlier jobs looked at outside the prefixes (from the profile: a
// layout the search path did not foresee), added to `options`: import-related
// names as single paths, listed directories as live roots (at most
// kMaxLearnedDirectories; not one that holds a prefix or a probe). Returns
// how many were learned.
inline constexpr size_t kMaxLearnedDirectories = 64;
inline constexpr size_t kMaxLearnedProbes = 4096; // each costs rank 0 a few requests
size_t add_learned_paths(const PathSet& profile, BuildOptions& options);

// What one rank holds after the start-up step.
struct RankStart {
    bool connected = false; // takes part in the exit collectives
    bool shared = false;    // the image reached this rank
    bool attached = false;  // and passed its checks (snapshot is valid)
    SharedImage image;
    Snapshot snapshot;
    std::unique_ptr<NodeMirror> mirror;      // libraries in the node-local mirror, if any
    std::unique_ptr<ProgramProfile> profile; // rank 0's, when it keeps one
    NotCached not_cached;                    // rank 0's: files past PYIMPORT_MAX_BYTES
    StartFacts facts;                        // for the job's statistics
    bool gather_stats = false; // rank 0's PYIMPORT_STATS or PYIMPORT_STATS_FILE is set
};

// Rank 0's image, made ahead: the rank the launcher numbers 0 walks in a
// thread of its own while MPI initialises (which takes as long as the walk
// or longer), instead of after it while every other rank waits.
struct PreparedImage {
    // The trees are all node-local (and PYIMPORT_SERVE_LOCAL=0): no walk,
    // the job passes through; `local_kinds` names their filesystems.
    bool local = false;
    std::string local_kinds;
    bool built = false;
    std::vector<char> image;
    std::string error; // why not built
    RankStart walked;  // the profile, what did not fit, the walk's time
};

// One line on why a job whose trees are node-local passes through: on
// stderr from the rank that `speaks` if statistics were asked for, else at
// PYIMPORT_LOG=1.
void report_local_trees(const Config& config, bool speaks, const std::string& kinds);

// Makes rank 0's image (build_image, below) into `prepared`, or finds its
// trees node-local (PYIMPORT_SERVE_LOCAL=0) and makes none.
void prepare_image(const Config& config, const FindWalkInputs& inputs, PreparedImage& prepared);

// The start-up step of one rank, after connect(). Reports faults with one
// line each (log_error); whatever fails, every rank makes the same
// collective calls, so none waits for another without end. Rank 0 uses
// `prepared` if given, else walks now.
void start_rank(Transport& transport, const Config& config, const FindWalkInputs& inputs,
                RankStart& out, PreparedImage* prepared = nullptr);

// The start-up step in a thread of its own, so that a job in which some
// ranks never join (they did not activate) cannot hang a rank: past the
// timeout the caller runs uncached. Never freed: the thread may outlive the
// wait, and the state must then stay valid for it.
struct StartupRun {
    Config config;
    FindWalkInputs inputs;
    std::unique_ptr<Transport> transport;
    // What the launcher says: how many ranks it started (-1: not said) and
    // this one's number. Started as N but connected as a world of 1, the
    // ranks cannot find each other: each stays uncached (no N walks).
    int launcher_ranks = -1;
    int launcher_rank = -1;
    // Called in the start-up thread once its collective calls are done
    // (connected or not, waited for or not), before the waiter is woken:
    // the transport must then take part in the exit.
    void (*completed)(StartupRun& run, bool connected) = nullptr;

    std::mutex mutex;
    std::condition_variable finished;
    bool done = false;
    std::chrono::steady_clock::time_point done_at; // when the thread set `done`
    bool gave_up = false;                          // the waiter stopped waiting
    RankStart result;
};

// Starts the thread and waits up to `timeout_seconds`. True: the step is
// done and `run.result` holds what this rank got. False: the waiter gave up
// (one line printed); the thread goes on alone.
bool run_start_up(StartupRun& run, int timeout_seconds);

// What a rank brings to the exit.
struct RankExit {
    bool gather_stats = false; // the same on every rank (RankStart::gather_stats)
    Core* core = nullptr;      // null on a rank that received but did not serve
    Libraries* libraries = nullptr;
    const ProgramProfile* profile = nullptr; // rank 0's
    NotCached not_cached;                    // rank 0's (RankStart::not_cached)
    int ranks = 0;
    double start_seconds = 0;
    StartFacts facts;
    // Where rank 0 writes the job's statistics (PYIMPORT_STATS_FILE, expanded),
    // and whether it prints them (PYIMPORT_STATS).
    std::string stats_file;
    bool print_stats = false;
    std::string job_id, host, executable; // rank 0's, for the document
};

// The exit of a rank that completed the start-up step: every such rank
// takes part, served or not (one that rejected the image sends zeros), so
// the collectives always match. Returns the summary's lines on rank 0, and
// writes the statistics' file there.
std::vector<std::string> exit_rank(Transport& transport, const RankExit& rank);

} // namespace pyimport
