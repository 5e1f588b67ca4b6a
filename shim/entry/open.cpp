// open/openat/creat/fopen and their 64-bit and fortify forms.
#include "entry/wrap.hpp"

#include <cstring>
#include <unistd.h>

using namespace pyimport;

namespace {

// Serves a plain read-only open of a cached file, or returns false.
bool try_serve_open(int dirfd, const char* path, int flags, int& result) {
    path = opaque(path);
    Guard guard;
    if (!guard) return false;
    if (open_changes(flags)) {
        guard->changed(dirfd, path, !(flags & O_NOFOLLOW));
        return false;
    }
    Answer answer = guard->open_at(dirfd, path, flags);
    if (!answer.served) return false;
    result = guard.finish<int>(answer);
    return true;
}

mode_t mode_argument(int flags, va_list args) {
    return open_takes_mode(flags) ? static_cast<mode_t>(va_arg(args, int)) : 0;
}

} // namespace

#define PYIMPORT_OPEN_WRAPPER(name)                                                                \
    PYIMPORT_EXPORT int name(const char* path, int flags, ...) {                                   \
        va_list args;                                                                              \
        va_start(args, flags);                                                                     \
        mode_t mode = mode_argument(flags, args);                                                  \
        va_end(args);                                                                              \
        int fd;                                                                                    \
        if (try_serve_open(AT_FDCWD, path, flags, fd)) return fd;                                  \
        return REAL(name)(path, flags, mode);                                                      \
    }
PYIMPORT_OPEN_WRAPPER(open)
PYIMPORT_OPEN_WRAPPER(open64)

#define PYIMPORT_OPENAT_WRAPPER(name)                                                              \
    PYIMPORT_EXPORT int name(int dirfd, const char* path, int flags, ...) {                        \
        va_list args;                                                                              \
        va_start(args, flags);                                                                     \
        mode_t mode = mode_argument(flags, args);                                                  \
        va_end(args);                                                                              \
        int fd;                                                                                    \
        if (try_serve_open(dirfd, path, flags, fd)) return fd;                                     \
        return REAL(name)(dirfd, path, flags, mode);                                               \
    }
PYIMPORT_OPENAT_WRAPPER(openat)
PYIMPORT_OPENAT_WRAPPER(openat64)

// Fortify forms (_FORTIFY_SOURCE): called when flags are not a constant.
#define PYIMPORT_OPEN2_WRAPPER(name)                                                               \
    PYIMPORT_EXPORT int name(const char* path, int flags) {                                        \
        int fd;                                                                                    \
        if (try_serve_open(AT_FDCWD, path, flags, fd)) return fd;                                  \
        return REAL(name)(path, flags);                                                            \
    }
PYIMPORT_OPEN2_WRAPPER(__open_2)
PYIMPORT_OPEN2_WRAPPER(__open64_2)

#define PYIMPORT_OPENAT2_WRAPPER(name)                                                             \
    PYIMPORT_EXPORT int name(int dirfd, const char* path, int flags) {                             \
        int fd;                                                                                    \
        if (try_serve_open(dirfd, path, flags, fd)) return fd;                                     \
        return REAL(name)(dirfd, path, flags);                                                     \
    }
PYIMPORT_OPENAT2_WRAPPER(__openat_2)
PYIMPORT_OPENAT2_WRAPPER(__openat64_2)

PYIMPORT_EXPORT int creat(const char* path, mode_t mode) {
    note_change(AT_FDCWD, path, true);
    return REAL(creat)(path, mode);
}

PYIMPORT_EXPORT int creat64(const char* path, mode_t mode) {
    note_change(AT_FDCWD, path, true);
    return REAL(creat64)(path, mode);
}

namespace {

// fopen's own open is internal to libc, so fopen is served whole: the
// descriptor comes from the snapshot and fdopen builds the stream on it.
FILE* serve_fopen(const char* path, const char* mode, bool& served) {
    served = false;
    path = opaque(path);
    mode = opaque(mode);
    if (!path || !mode) return nullptr;
    bool read_only = mode[0] == 'r' && !std::strchr(mode, '+');
    int flags = O_RDONLY | (std::strchr(mode, 'e') ? O_CLOEXEC : 0);
    if (!read_only) {
        note_change(AT_FDCWD, path, true);
        return nullptr;
    }
    int fd;
    if (!try_serve_open(AT_FDCWD, path, flags, fd)) return nullptr;
    served = true;
    if (fd < 0) return nullptr;
    FILE* stream = fdopen(fd, mode);
    if (!stream) {
        int e = errno;
        REAL(close)(fd);
        errno = e;
    }
    return stream;
}

} // namespace

PYIMPORT_EXPORT FILE* fopen(const char* path, const char* mode) {
    bool served;
    FILE* stream = serve_fopen(path, mode, served);
    return served ? stream : REAL(fopen)(path, mode);
}

PYIMPORT_EXPORT FILE* fopen64(const char* path, const char* mode) {
    bool served;
    FILE* stream = serve_fopen(path, mode, served);
    return served ? stream : REAL(fopen64)(path, mode);
}
