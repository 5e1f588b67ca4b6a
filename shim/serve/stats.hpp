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

// One job's summary (PYIMPORT_STATS=1), from every rank's counts and most
// forwarded paths as gathered at exit.
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
};
// A rank's part of the summary: its counts as a flat array, and its most
// forwarded paths as "count\tpath\tcaller" lines.
std::vector<uint64_t> count_values(const Stats& stats);
std::string top_forwarded_text(const Stats& stats);
// The lines rank 0 prints (without the "pyimport: " prefix).
std::vector<std::string> summary_lines(const JobSummary& summary);

// Names the code that made the current libc call: "library:function+offset",
// found by unwinding past this library and libc.
// `mirror_root`: see Stats::name_mirrored_callers.
std::string describe_caller(std::string_view mirror_root = {});

} // namespace pyimport
