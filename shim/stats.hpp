// Counters of served and forwarded calls, and, when PYIMPORT_STATS=1, which
// paths were forwarded most and which code asked for them.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace pyimport {

#define PYIMPORT_CALL_KINDS(X)                                                                     \
    X(stat)                                                                                        \
    X(open)                                                                                        \
    X(access)                                                                                      \
    X(readlink)                                                                                    \
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
    mutable std::mutex mutex_;
    struct Tally {
        uint64_t count = 0;
        std::string caller;
    };
    std::unordered_map<std::string, Tally> paths_;
};

// Names the code that made the current libc call: "library:function+offset",
// found by unwinding past this library and libc.
std::string describe_caller();

} // namespace pyimport
