// The node-local mirror: a private directory per job and node holding a copy
// of each shared library in the snapshot, laid out under root() as the files
// lie under "/", so that the dynamic loader (whose own opens no preload can
// catch) reads libraries, and finds what they need through $ORIGIN, on the
// node instead of the shared filesystem.
//
//   <base>/pyimport-<uid>/            0700, the user's own; never followed if a symlink
//       job-<pid>-<random>/           one per job and node; flock'ed shared by its ranks
//           files/<entry>             the bytes, written once by the node's first rank
//           root/<path>               directories, symlinks and hard links to files/
//
// The node's last rank removes the job's directory in leave(); if every rank
// was killed, a reaper process started by create() removes it once the
// kernel has dropped their locks (loader/reaper.hpp).
#pragma once

#include "serve/tree.hpp"

#include <mutex>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <unordered_map>

namespace pyimport {

class NodeMirror {
  public:
    NodeMirror() = default;
    NodeMirror(const NodeMirror&) = delete;
    NodeMirror& operator=(const NodeMirror&) = delete;
    ~NodeMirror(); // leave()s

    // The node's first rank, at start: makes <base>/pyimport-<uid>, removes
    // what jobs no process holds any more left there (killed ones), makes
    // this job's directory, writes every library the snapshot holds, and
    // holds it as join() does. On failure nothing of this job is left. Also
    // starts the job's reaper, which removes the directory once no process
    // holds it any more, should every rank be killed.
    bool create(const std::string& base, const Snapshot& snapshot, std::string& error);

    // Every rank of the node (its first too): opens the job's directory,
    // checking that every step is the user's own and private, and holds it
    // (a shared flock) until leave() or the process ends.
    bool join(const std::string& job_dir, std::string& error);

    // At exit: the node's last rank to leave removes the job's directory.
    void leave();

    bool joined() const { return job_fd_ >= 0; }
    // The library bytes create() wrote (0 on the node's other ranks).
    uint64_t written_bytes() const { return written_bytes_; }
    const std::string& job_dir() const { return job_dir_; } // what the node's other ranks join
    // The mirror of "/": the loader is given root() + path.
    const std::string& root() const { return root_; }
    // The reaper create() started, -1 if none (exposed for the tests).
    pid_t reaper_pid() const { return reaper_pid_; }

    // Makes root() + `path` lead where `path` leads in the snapshot,
    // component by component: directories, symlinks (same targets; absolute
    // ones into the mirror), and the library file at the end (a hard link to
    // its copy). Returns the library's entry; kNoEntry if anything on the
    // way is not in the snapshot (or stale, or known by name only), or the
    // end is not a cached library.
    uint32_t materialise(const Tree& tree, std::string_view path) const;

    // Whether the kernel's walk of root() + `path` stays inside root() (a
    // ".." at "/" would climb out into the node directory, which others can
    // write to), as far as the snapshot tells.
    bool contained(const Tree& tree, std::string_view path) const;

    // Removes `name` under `dirfd` and everything below it, following no
    // symlink. Exposed for the tests.
    static bool remove_tree(int dirfd, const char* name);

  private:
    bool follow_in_mirror(const Tree& tree, std::string_view path, uint32_t* library) const;
    void hold(int fd, std::string job_dir);
    // The entry whose copy in files/ holds `entry`'s bytes (hard links share one).
    uint32_t copy_of(const Snapshot& snapshot, uint32_t entry) const;

    int job_fd_ = -1;
    pid_t reaper_pid_ = -1;
    uint64_t written_bytes_ = 0;
    std::string job_dir_;
    std::string root_; // job_dir_ + "/root"
    mutable std::mutex copies_mutex_;
    mutable std::unordered_map<uint32_t, uint32_t> copies_;
};

// For every library the snapshot holds bytes of: the first entry of the same
// file (device and inode).
std::unordered_map<uint32_t, uint32_t> library_copies(const Snapshot& snapshot);

// The user's directory under `base` (created if missing), open, after
// checking it is a directory owned by the effective user with no access for
// others. -1 with a reason otherwise.
int open_user_directory(const std::string& base, std::string& error);

// Removes the job directories in the user's directory that no process holds.
// Returns how many.
int remove_abandoned_jobs(int user_fd);

} // namespace pyimport
