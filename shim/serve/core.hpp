// The core: answers the entry points' questions from the snapshot, or says
// "forward". Plain C++; the entry points (entry/*.cpp) only translate libc
// calls into these and back. The answers are in core.cpp, the tracking of
// changes in changes.cpp; this header also brings the descriptor table
// (fd_table.hpp) and the directory streams (dir_stream.hpp) the entry points
// use.
#pragma once

#include "base/config.hpp"
#include "image/image.hpp"
#include "image/shared_image.hpp"
#include "serve/dir_stream.hpp"
#include "serve/fd_table.hpp"
#include "serve/stats.hpp"
#include "serve/tree.hpp"

#include <atomic>
#include <dirent.h>
#include <memory>
#include <string>
#include <sys/types.h>
#include <vector>

struct statx;

namespace pyimport {

// A served answer: the value the call returns and the errno it sets when that
// value is negative. `served == false` means: call the real function.
struct Answer {
    bool served = false;
    long value = 0;
    int error = 0;

    static Answer forward() { return {}; }
    static Answer ok(long v) { return {true, v, 0}; }
    static Answer fail(int e) { return {true, -1, e}; }
};

class Core {
  public:
    Core(const Config& config, SharedImage image, Snapshot snapshot);

    const Config& config() const { return config_; }
    Tree& tree() { return tree_; }
    Stats& stats() { return stats_; }
    FdTable& fds() { return fds_; }

    Answer stat_at(int dirfd, const char* path, int flags, struct stat* out);
    Answer statx_at(int dirfd, const char* path, int flags, unsigned mask, struct statx* out);
    Answer access_at(int dirfd, const char* path, int mode, int flags);
    Answer readlink_at(int dirfd, const char* path, char* buf, size_t size);
    // realpath(3) of a path the snapshot resolves whole, into `out`; failures
    // are forwarded (glibc leaves the part it resolved in the caller's buffer).
    bool real_path(const char* path, std::string& out);
    Answer open_at(int dirfd, const char* path, int flags);
    // Returns a synthetic DIR* for a cached directory, or nullptr to forward.
    DIR* open_dir(const char* path, int& error, bool& served);
    // A path was changed through the real filesystem: stop answering it.
    void changed(int dirfd, const char* path, bool follow_last);
    void changed_fd(int fd); // a change through a descriptor (fchmod, futimens ...)

  private:
    // Where a path given relative to `dirfd` starts. False: forward.
    bool base_for(int dirfd, const char* path, Position& base, std::string& cwd_storage);
    Resolution lookup(int dirfd, const char* path, int at_flags, bool follow_last);
    Answer open_file(uint32_t entry, int flags);
    const StatRecord& record_of(const Resolution& r) const;
    Answer settle(const Resolution& r, CallKind kind, const char* path);
    // The tree's check of a directory after a child process ended
    // (changes.cpp): one real statx, unchanged if it agrees with the entry.
    static bool directory_unchanged(const Snapshot& snapshot, uint32_t entry);

    Config config_;
    SharedImage image_; // what snapshot_ reads
    Snapshot snapshot_;
    Tree tree_;
    FdTable fds_;
    Stats stats_;
};

} // namespace pyimport
