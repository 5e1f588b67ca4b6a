// Counters of served and forwarded calls, and, when PYIMPORT_STATS=1, which
// paths were forwarded most and which code asked for them.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pyimport {

#define PYIMPORT_CALL_KINDS(X)                                                                     \
    X(stat)                                                                                        \
    X(open)                                                                                        \
    X(access)                                                                                      \
    X(readlink)                                                                                    \
    X(realpath)                                                                                    \
    X(opendir)                                                                                     \
    X(fstat)                                                                                       \
    X(dlopen)                                                                                      \
    X(change)

enum class CallKind {
#define PYIMPORT_KIND(name) name,
    PYIMPORT_CALL_KINDS(PYIMPORT_KIND)
#undef PYIMPORT_KIND
        count
};

const char* call_kind_name(CallKind kind);

// Counts per kind; an array of plain integers so it can be summed across ranks.
struct CallCounts {
    uint64_t served[static_cast<int>(CallKind::count)];
    uint64_t forwarded[static_cast<int>(CallKind::count)];
};

class Stats {
  public:
    void enable_paths(bool on) { record_paths_ = on; }
    // Callers in libraries under `root` (the node-local mirror's "/") are
    // named by their filesystem path. Set once, before serving.
    void name_mirrored_callers(std::string root) { mirror_root_ = std::move(root); }
    void served(CallKind kind) {
        served_[static_cast<int>(kind)].fetch_add(1, std::memory_order_relaxed);
    }
    // Counts a forwarded call; with paths recorded, also which code asked.
    void forwarded(CallKind kind, const char* path);
    CallCounts counts() const;

    struct PathRecord {
        std::string path;
        uint64_t count;
        std::string caller;
    };
    std::vector<PathRecord> top_forwarded(size_t n) const;

  private:
    std::atomic<uint64_t> served_[static_cast<int>(CallKind::count)] = {};
    std::atomic<uint64_t> forwarded_[static_cast<int>(CallKind::count)] = {};
    bool record_paths_ = false;
    std::string mirror_root_;
    mutable std::mutex mutex_;
    struct Tally {
        uint64_t count = 0;
        std::string caller;
    };
    std::unordered_map<std::string, Tally> paths_;
};

// What a rank measured and holds after the start-up step, for the job's
// statistics.
struct StartFacts {
    double started_at = 0;         // wall clock (Unix seconds) when the rank activated
    double mpi_load_seconds = 0;   // loading the MPI library (dlopen)
    double mpi_init_seconds = 0;   // its initialisation (a session, or MPI_Init_thread)
    double walk_seconds = 0;       // rank 0: building the image
    double status_seconds = 0;     // rank 0's status reaching this rank (the ranks' wait for it)
    double broadcast_seconds = 0;  // sharing the image
    double node_seconds = 0;       // the node's library copies, up to the node barrier
    double copy_seconds = 0;       // of which the node's first rank writing the copies
    double hand_over_seconds = 0;  // from the start-up thread's end to serving
    bool node_leader = false;      // the node's first rank
    uint64_t image_bytes_held = 0; // the copy of the image this rank holds for its node (0:
                                   // it maps its leader's)
    uint64_t library_bytes = 0;    // library bytes this rank wrote to the node directory
};

// One job's statistics (PYIMPORT_STATS=1, PYIMPORT_STATS_FILE), from every
// rank's counts and most forwarded paths as gathered at exit.
struct JobSummary {
    uint32_t prefixes = 0;
    uint32_t entries = 0;
    size_t image_bytes = 0;
    int ranks = 0;
    double start_seconds = 0;
    // Files whose bytes did not fit in PYIMPORT_MAX_BYTES (read from the
    // filesystem), and their bytes.
    uint32_t not_cached_files = 0;
    uint64_t not_cached_bytes = 0;
    std::vector<uint64_t> counts;  // served[kinds], then forwarded[kinds], summed
    std::vector<std::string> tops; // every rank's top_forwarded_text()

    // For the JSON document only.
    std::string job_id, host, executable;
    std::vector<std::string> roots; // the snapshot's root directories (prefixes first)
    StartFacts start;               // rank 0's
    // Summed over the ranks (exit_values()).
    uint64_t nodes = 0, served_ranks = 0, image_bytes_on_nodes = 0, library_bytes_on_nodes = 0;
    // Each rank's calls served and forwarded, in rank order.
    std::vector<std::pair<uint64_t, uint64_t>> rank_calls;
};
// A rank's part of the summary: its counts as a flat array, and its most
// forwarded paths as "count\tpath\tcaller" lines.
std::vector<uint64_t> count_values(const Stats& stats);
std::string top_forwarded_text(const Stats& stats);
// The lines rank 0 prints (without the "pyimport: " prefix).
std::vector<std::string> summary_lines(const JobSummary& summary);

// What each rank sends to rank 0 at exit: count_values() (zeros for a rank
// that does not serve, `stats` null) and its StartFacts as numbers, summed
// over the ranks; and a text of its totals and top_forwarded_text(). Rank 0
// takes them apart into `summary` (counts, nodes, memory, tops, rank_calls).
std::vector<uint64_t> exit_values(const Stats* stats, const StartFacts& facts);
std::string exit_text(const Stats* stats);
void add_exit_values(JobSummary& summary, const std::vector<uint64_t>& sums,
                     const std::vector<std::string>& texts);

// The job's statistics as one JSON document (schema: docs/statistics.md).
// Bytes of paths that are not UTF-8 are written as U+DC80 + byte (Python's
// surrogateescape), so that os.fsencode() gives the path back.
std::string summary_json(const JobSummary& summary);
// "abc" -> "\"abc\"" with JSON escapes (as above for non-UTF-8 bytes).
std::string json_string(std::string_view text);

// The job's id for %j: the batch system's (Slurm job.step, PBS, LSF,
// Flux), else Open MPI's or PMIx's, else "" (then %j is rank 0's pid).
std::string job_id_from(const char* (*lookup)(const char*));
// PYIMPORT_STATS_FILE's value with %j, %h, %p and %% expanded. False, with
// a reason, for another % sequence or an empty result.
bool expand_stats_path(std::string_view pattern, const std::string& job_id, const std::string& host,
                       int pid, std::string& path, std::string& error);
// Writes `text` to `path` through a temporary file in its directory renamed
// over it: readers never see half a document. False with a reason.
bool write_file_atomically(const std::string& path, std::string_view text, std::string& error);

// Names the code that made the current libc call: "library:function+offset",
// found by unwinding past this library and libc.
// `mirror_root`: see Stats::name_mirrored_callers.
std::string describe_caller(std::string_view mirror_root = {});

} // namespace pyimport
