// Calls that change the tree: they always go to the filesystem, and what
// they touch is answered by the filesystem from then on in this process.
#include "entry/wrap.hpp"

#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>
#include <utime.h>

using namespace pyimport;

#define PYIMPORT_CHANGE1(name, follow, params, args, path)                                         \
    PYIMPORT_EXPORT int name params {                                                              \
        note_change(AT_FDCWD, path, follow);                                                       \
        return REAL(name) args;                                                                    \
    }

PYIMPORT_CHANGE1(mkdir, false, (const char* p, mode_t m), (p, m), p)
PYIMPORT_CHANGE1(rmdir, false, (const char* p), (p), p)
PYIMPORT_CHANGE1(unlink, false, (const char* p), (p), p)
PYIMPORT_CHANGE1(chmod, true, (const char* p, mode_t m), (p, m), p)
PYIMPORT_CHANGE1(chown, true, (const char* p, uid_t u, gid_t g), (p, u, g), p)
PYIMPORT_CHANGE1(lchown, false, (const char* p, uid_t u, gid_t g), (p, u, g), p)
PYIMPORT_CHANGE1(utime, true, (const char* p, const struct utimbuf* t), (p, t), p)
PYIMPORT_CHANGE1(utimes, true, (const char* p, const struct timeval* t), (p, t), p)
PYIMPORT_CHANGE1(lutimes, false, (const char* p, const struct timeval* t), (p, t), p)
PYIMPORT_CHANGE1(truncate, true, (const char* p, off_t n), (p, n), p)
PYIMPORT_CHANGE1(truncate64, true, (const char* p, off64_t n), (p, n), p)
PYIMPORT_CHANGE1(mknod, false, (const char* p, mode_t m, dev_t d), (p, m, d), p)

PYIMPORT_EXPORT int mkdirat(int dirfd, const char* path, mode_t mode) {
    note_change(dirfd, path, false);
    return REAL(mkdirat)(dirfd, path, mode);
}

PYIMPORT_EXPORT int mknodat(int dirfd, const char* path, mode_t mode, dev_t dev) {
    note_change(dirfd, path, false);
    return REAL(mknodat)(dirfd, path, mode, dev);
}

PYIMPORT_EXPORT int unlinkat(int dirfd, const char* path, int flags) {
    note_change(dirfd, path, false);
    return REAL(unlinkat)(dirfd, path, flags);
}

PYIMPORT_EXPORT int rename(const char* from, const char* to) {
    note_change(AT_FDCWD, from, false);
    note_change(AT_FDCWD, to, false);
    return REAL(rename)(from, to);
}

PYIMPORT_EXPORT int renameat(int from_dir, const char* from, int to_dir, const char* to) {
    note_change(from_dir, from, false);
    note_change(to_dir, to, false);
    return REAL(renameat)(from_dir, from, to_dir, to);
}

PYIMPORT_EXPORT int renameat2(int from_dir, const char* from, int to_dir, const char* to,
                              unsigned int flags) {
    note_change(from_dir, from, false);
    note_change(to_dir, to, false);
    return REAL(renameat2)(from_dir, from, to_dir, to, flags);
}

PYIMPORT_EXPORT int link(const char* from, const char* to) {
    note_change(AT_FDCWD, from, false); // its link count changes
    note_change(AT_FDCWD, to, false);
    return REAL(link)(from, to);
}

PYIMPORT_EXPORT int linkat(int from_dir, const char* from, int to_dir, const char* to, int flags) {
    note_change(from_dir, from, (flags & AT_SYMLINK_FOLLOW) != 0);
    note_change(to_dir, to, false);
    return REAL(linkat)(from_dir, from, to_dir, to, flags);
}

PYIMPORT_EXPORT int symlink(const char* target, const char* path) {
    note_change(AT_FDCWD, path, false);
    return REAL(symlink)(target, path);
}

PYIMPORT_EXPORT int symlinkat(const char* target, int dirfd, const char* path) {
    note_change(dirfd, path, false);
    return REAL(symlinkat)(target, dirfd, path);
}

PYIMPORT_EXPORT int fchmodat(int dirfd, const char* path, mode_t mode, int flags) {
    note_change(dirfd, path, !(flags & AT_SYMLINK_NOFOLLOW));
    return REAL(fchmodat)(dirfd, path, mode, flags);
}

PYIMPORT_EXPORT int fchownat(int dirfd, const char* path, uid_t uid, gid_t gid, int flags) {
    note_change(dirfd, path, !(flags & AT_SYMLINK_NOFOLLOW));
    return REAL(fchownat)(dirfd, path, uid, gid, flags);
}

PYIMPORT_EXPORT int utimensat(int dirfd, const char* path, const struct timespec* times,
                              int flags) {
    note_change(dirfd, path, !(flags & AT_SYMLINK_NOFOLLOW));
    return REAL(utimensat)(dirfd, path, times, flags);
}

// Changes through a descriptor: what it refers to is answered by the
// filesystem from now on.
namespace {
void note_fd_change(int fd) {
    Guard guard;
    if (guard) guard->changed_fd(fd);
}
} // namespace

PYIMPORT_EXPORT int fchmod(int fd, mode_t mode) {
    note_fd_change(fd);
    return REAL(fchmod)(fd, mode);
}

PYIMPORT_EXPORT int fchown(int fd, uid_t uid, gid_t gid) {
    note_fd_change(fd);
    return REAL(fchown)(fd, uid, gid);
}

PYIMPORT_EXPORT int futimens(int fd, const struct timespec* times) {
    note_fd_change(fd);
    return REAL(futimens)(fd, times);
}
