// The core: answers the wrappers' questions from the snapshot, or says
// "forward". Plain C++; the wrappers (wrap_*.cpp) only translate libc calls
// into these and back.
#pragma once

#include "base/config.hpp"
#include "image/image.hpp"
#include "serve/stats.hpp"
#include "image/shared_image.hpp"
#include "serve/tree.hpp"

#include <atomic>
#include <dirent.h>
#include <memory>
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

// Descriptors the shim opened in place of a cached file or directory: each
// slot packs (entry + 1) and the low bits of the memfd's inode, so a slot
// left by a descriptor closed behind our back (a raw syscall) never matches
// a new, unrelated descriptor.
class FdTable {
  public:
    explicit FdTable(size_t capacity);
    size_t capacity() const { return capacity_; }
    void set(int fd, uint32_t entry, uint64_t ino);
    void clear(int fd);
    void clear_range(unsigned first, unsigned last);
    void copy(int from, int to); // dup
    // The entry behind `fd`, verified against the descriptor itself.
    uint32_t lookup(int fd) const;
    bool maybe_served(int fd) const {
        return fd >= 0 && static_cast<size_t>(fd) < capacity_ &&
               slots_[fd].load(std::memory_order_acquire) != 0;
    }

  private:
    size_t capacity_;
    std::unique_ptr<std::atomic<uint64_t>[]> slots_;
};

// A directory stream over a snapshot listing. Lives in a fixed arena so that
// the wrappers recognise it by address, in any process state (a fork child
// that inherited one still reads it correctly).
struct DirStream;
bool is_dir_stream(const void* dir);

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
    DIR* new_dir_stream(uint32_t entry, int fd);

    Config config_;
    SharedImage image_; // what snapshot_ reads
    Snapshot snapshot_;
    Tree tree_;
    FdTable fds_;
    Stats stats_;
};

// Directory stream operations on a synthetic DIR*.
struct dirent64* dir_read(DIR* dir);
void dir_rewind(DIR* dir);
long dir_tell(DIR* dir);
void dir_seek(DIR* dir, long pos);
int dir_close(DIR* dir);
int dir_fd(DIR* dir);

} // namespace pyimport
