// Changes made through the real filesystem (core.hpp): by this process
// (Core::changed, changed_fd: stop answering the path), and by its children
// (Core::directory_unchanged: the recheck of a directory after one ended).
#include "serve/core.hpp"

#include "base/real.hpp"

#include <climits>
#include <cstdio>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace pyimport {

// One real stat of the directory: unchanged if inode, times and size agree.
bool Core::directory_unchanged(const Snapshot& snapshot, uint32_t entry) {
    std::string path = snapshot.path(entry);
    struct statx now {};
    if (REAL(statx)(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &now) != 0)
        return false;
    const StatRecord& then = snapshot.entry(entry).st;
    return now.stx_ino == then.ino && now.stx_size == then.size &&
           now.stx_mtime.tv_sec == then.mtime.sec && now.stx_mtime.tv_nsec == then.mtime.nsec &&
           now.stx_ctime.tv_sec == then.ctime.sec && now.stx_ctime.tv_nsec == then.ctime.nsec &&
           now.stx_nlink == then.nlink;
}

namespace {
// The absolute path the kernel has for a descriptor (procfs, no filesystem traffic).
bool descriptor_path(int fd, std::string& out) {
    char proc[64];
    std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    char buf[PATH_MAX];
    ssize_t n = REAL(readlink)(proc, buf, sizeof buf - 1);
    if (n <= 0 || buf[0] != '/') return false;
    out.assign(buf, static_cast<size_t>(n));
    return true;
}
} // namespace

void Core::changed(int dirfd, const char* path, bool follow_last) {
    stats_.served(CallKind::change);
    if (!path || path[0] == '\0') return changed_fd(dirfd); // futimens-like forms
    Position base;
    std::string cwd;
    if (base_for(dirfd, path, base, cwd) && tree_.invalidate(base, path, follow_last)) return;
    tree_.outside_changed();
    // The snapshot cannot place the path's directory (a symlink or a working
    // directory outside the roots, /lib for /usr/lib ...): ask the kernel
    // which directory it is, and invalidate by its canonical path.
    auto [dir_part, name] = Tree::split_last(path);
    std::string dir(dir_part);
    int fd = REAL(openat)(dirfd, dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    std::string canonical;
    bool known = descriptor_path(fd, canonical);
    REAL(close)(fd);
    if (!known) return;
    Position where;
    if (!tree_.locate(canonical, where)) return; // outside the roots: nothing cached
    tree_.invalidate(Position{}, canonical + "/" + std::string(name), follow_last);
}

void Core::changed_fd(int fd) {
    uint32_t entry = fds_.lookup(fd);
    std::string path;
    if (entry != kNoEntry)
        path = snapshot_.path(entry);
    else if (!descriptor_path(fd, path))
        return;
    tree_.invalidate(Position{}, path, false);
}

} // namespace pyimport
