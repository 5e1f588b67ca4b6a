// stat, lstat, fstat, fstatat (and 64-bit, legacy __xstat forms), statx,
// access, faccessat, readlink, readlinkat, realpath.
#include "entry/wrap.hpp"

#include <climits>
#include <cstdlib>
#include <cstring>
#include <sys/stat.h>
#include <unistd.h>

using namespace pyimport;

// On LP64 Linux struct stat and struct stat64 are the same layout.
static_assert(sizeof(struct stat) == sizeof(struct stat64));

namespace {

#if defined(__x86_64__)
constexpr int kStatVersion = 1; // _STAT_VER_LINUX
#else
constexpr int kStatVersion = 0;
#endif

bool serve_stat(int dirfd, const char* path, int flags, void* out, int& result) {
    path = opaque(path);
    out = opaque(out);
    Guard guard;
    if (!out) return false;
    if (!guard) return false;
    // fstat of a descriptor the shim did not open: nothing to count.
    if (path && path[0] == '\0' && (flags & AT_EMPTY_PATH) && !guard->fds().maybe_served(dirfd))
        return false;
    Answer answer = guard->stat_at(dirfd, path, flags, static_cast<struct stat*>(out));
    if (!answer.served) return false;
    result = guard.finish<int>(answer);
    return true;
}

} // namespace

#define PYIMPORT_STAT_WRAPPER(name, type, at_flags)                                                \
    PYIMPORT_EXPORT int name(const char* path, struct type* out) {                                 \
        int result;                                                                                \
        if (serve_stat(AT_FDCWD, path, at_flags, out, result)) return result;                      \
        return REAL(name)(path, out);                                                              \
    }
PYIMPORT_STAT_WRAPPER(stat, stat, 0)
PYIMPORT_STAT_WRAPPER(stat64, stat64, 0)
PYIMPORT_STAT_WRAPPER(lstat, stat, AT_SYMLINK_NOFOLLOW)
PYIMPORT_STAT_WRAPPER(lstat64, stat64, AT_SYMLINK_NOFOLLOW)

#define PYIMPORT_FSTAT_WRAPPER(name, type)                                                         \
    PYIMPORT_EXPORT int name(int fd, struct type* out) {                                           \
        int result;                                                                                \
        if (serve_stat(fd, "", AT_EMPTY_PATH, out, result)) return result;                         \
        return REAL(name)(fd, out);                                                                \
    }
PYIMPORT_FSTAT_WRAPPER(fstat, stat)
PYIMPORT_FSTAT_WRAPPER(fstat64, stat64)

#define PYIMPORT_FSTATAT_WRAPPER(name, type)                                                       \
    PYIMPORT_EXPORT int name(int dirfd, const char* path, struct type* out, int flags) {           \
        int result;                                                                                \
        if (serve_stat(dirfd, path, flags, out, result)) return result;                            \
        return REAL(name)(dirfd, path, out, flags);                                                \
    }
PYIMPORT_FSTATAT_WRAPPER(fstatat, stat)
PYIMPORT_FSTATAT_WRAPPER(fstatat64, stat64)

// Binaries built against glibc before 2.33 call these.
#define PYIMPORT_XSTAT_WRAPPER(name, type, at_flags)                                               \
    PYIMPORT_EXPORT int name(int version, const char* path, struct type* out) {                    \
        int result;                                                                                \
        if (version == kStatVersion && serve_stat(AT_FDCWD, path, at_flags, out, result))          \
            return result;                                                                         \
        return REAL(name)(version, path, out);                                                     \
    }
PYIMPORT_XSTAT_WRAPPER(__xstat, stat, 0)
PYIMPORT_XSTAT_WRAPPER(__xstat64, stat64, 0)
PYIMPORT_XSTAT_WRAPPER(__lxstat, stat, AT_SYMLINK_NOFOLLOW)
PYIMPORT_XSTAT_WRAPPER(__lxstat64, stat64, AT_SYMLINK_NOFOLLOW)

#define PYIMPORT_FXSTAT_WRAPPER(name, type)                                                        \
    PYIMPORT_EXPORT int name(int version, int fd, struct type* out) {                              \
        int result;                                                                                \
        if (version == kStatVersion && serve_stat(fd, "", AT_EMPTY_PATH, out, result))             \
            return result;                                                                         \
        return REAL(name)(version, fd, out);                                                       \
    }
PYIMPORT_FXSTAT_WRAPPER(__fxstat, stat)
PYIMPORT_FXSTAT_WRAPPER(__fxstat64, stat64)

#define PYIMPORT_FXSTATAT_WRAPPER(name, type)                                                      \
    PYIMPORT_EXPORT int name(int version, int dirfd, const char* path, struct type* out,           \
                             int flags) {                                                          \
        int result;                                                                                \
        if (version == kStatVersion && serve_stat(dirfd, path, flags, out, result)) return result; \
        return REAL(name)(version, dirfd, path, out, flags);                                       \
    }
PYIMPORT_FXSTATAT_WRAPPER(__fxstatat, stat)
PYIMPORT_FXSTATAT_WRAPPER(__fxstatat64, stat64)

PYIMPORT_EXPORT int statx(int dirfd, const char* path, int flags, unsigned int mask,
                          struct statx* out) {
    {
        path = opaque(path);
        out = opaque(out);
        Guard guard;
        bool by_fd = path && path[0] == '\0' && (flags & AT_EMPTY_PATH);
        if (guard && out && (!by_fd || guard->fds().maybe_served(dirfd))) {
            Answer answer = guard->statx_at(dirfd, path, flags, mask, out);
            if (answer.served) return guard.finish<int>(answer);
        }
    }
    return REAL(statx)(dirfd, path, flags, mask, out);
}

namespace {
bool serve_access(int dirfd, const char* path, int mode, int flags, int& result) {
    path = opaque(path);
    Guard guard;
    if (!guard) return false;
    Answer answer = guard->access_at(dirfd, path, mode, flags);
    if (!answer.served) return false;
    result = guard.finish<int>(answer);
    return true;
}
} // namespace

PYIMPORT_EXPORT int access(const char* path, int mode) {
    int result;
    if (serve_access(AT_FDCWD, path, mode, 0, result)) return result;
    return REAL(access)(path, mode);
}

PYIMPORT_EXPORT int faccessat(int dirfd, const char* path, int mode, int flags) {
    int result;
    if (serve_access(dirfd, path, mode, flags, result)) return result;
    return REAL(faccessat)(dirfd, path, mode, flags);
}

PYIMPORT_EXPORT int eaccess(const char* path, int mode) {
    int result;
    if (serve_access(AT_FDCWD, path, mode, AT_EACCESS, result)) return result;
    return REAL(eaccess)(path, mode);
}

PYIMPORT_EXPORT int euidaccess(const char* path, int mode) {
    int result;
    if (serve_access(AT_FDCWD, path, mode, AT_EACCESS, result)) return result;
    return REAL(euidaccess)(path, mode);
}

namespace {
bool serve_readlink(int dirfd, const char* path, char* buf, size_t size, ssize_t& result) {
    path = opaque(path);
    buf = opaque(buf);
    Guard guard;
    if (!guard || !buf) return false;
    Answer answer = guard->readlink_at(dirfd, path, buf, size);
    if (!answer.served) return false;
    result = guard.finish<ssize_t>(answer);
    return true;
}
} // namespace

PYIMPORT_EXPORT ssize_t readlink(const char* path, char* buf, size_t size) {
    ssize_t result;
    if (serve_readlink(AT_FDCWD, path, buf, size, result)) return result;
    return REAL(readlink)(path, buf, size);
}

namespace {
// The canonical path into `resolved` (PATH_MAX bytes) or a new buffer.
char* serve_realpath(const char* path, char* resolved, bool& served) {
    served = false;
    path = opaque(path);
    Guard guard;
    if (!guard) return nullptr;
    std::string canonical;
    if (!guard->real_path(path, canonical)) return nullptr;
    char* out = resolved ? resolved : static_cast<char*>(std::malloc(canonical.size() + 1));
    if (!out) return nullptr; // the real realpath reports ENOMEM
    std::memcpy(out, canonical.c_str(), canonical.size() + 1);
    served = true;
    return out;
}
} // namespace

PYIMPORT_EXPORT char* realpath(const char* path, char* resolved) {
    bool served;
    char* out = serve_realpath(path, resolved, served);
    return served ? out : REAL(realpath)(path, resolved);
}

PYIMPORT_EXPORT char* __realpath_chk(const char* path, char* resolved, size_t resolved_size) {
    if (resolved && resolved_size < PATH_MAX)
        return REAL(__realpath_chk)(path, resolved, resolved_size);
    bool served;
    char* out = serve_realpath(path, resolved, served);
    return served ? out : REAL(__realpath_chk)(path, resolved, resolved_size);
}

PYIMPORT_EXPORT char* canonicalize_file_name(const char* path) {
    bool served;
    char* out = serve_realpath(path, nullptr, served);
    return served ? out : REAL(canonicalize_file_name)(path);
}

PYIMPORT_EXPORT ssize_t readlinkat(int dirfd, const char* path, char* buf, size_t size) {
    ssize_t result;
    if (serve_readlink(dirfd, path, buf, size, result)) return result;
    return REAL(readlinkat)(dirfd, path, buf, size);
}
