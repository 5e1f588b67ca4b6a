// Directory streams. A DIR* from the snapshot is recognised by its address,
// so every stream call must be wrapped (libc would dereference it).
#include "entry/wrap.hpp"

#include <cstddef>
#include <cstring>

using namespace pyimport;

// On LP64 Linux struct dirent and struct dirent64 are the same layout.
static_assert(sizeof(struct dirent) == sizeof(struct dirent64));
static_assert(offsetof(struct dirent, d_name) == offsetof(struct dirent64, d_name));

PYIMPORT_EXPORT DIR* opendir(const char* path) {
    {
        path = opaque(path);
        Guard guard;
        if (guard && path) {
            int error = 0;
            bool served = false;
            DIR* dir = guard->open_dir(path, error, served);
            if (served) {
                guard.finish<long>(dir ? Answer::ok(0) : Answer::fail(error));
                return dir;
            }
        }
    }
    return REAL(opendir)(path);
}

PYIMPORT_EXPORT struct dirent64* readdir64(DIR* dir) {
    if (is_dir_stream(dir)) return dir_read(dir);
    return REAL(readdir64)(dir);
}

PYIMPORT_EXPORT struct dirent* readdir(DIR* dir) {
    if (is_dir_stream(dir)) return reinterpret_cast<struct dirent*>(dir_read(dir));
    return REAL(readdir)(dir);
}

PYIMPORT_EXPORT int readdir64_r(DIR* dir, struct dirent64* entry, struct dirent64** result) {
    if (!is_dir_stream(dir)) return REAL(readdir64_r)(dir, entry, result);
    struct dirent64* next = dir_read(dir);
    if (next) {
        std::memcpy(entry, next, next->d_reclen);
        *result = entry;
    } else {
        *result = nullptr;
    }
    return 0;
}

PYIMPORT_EXPORT int readdir_r(DIR* dir, struct dirent* entry, struct dirent** result) {
    if (!is_dir_stream(dir)) return REAL(readdir_r)(dir, entry, result);
    struct dirent64* next = dir_read(dir);
    if (next) std::memcpy(entry, next, next->d_reclen);
    *result = next ? entry : nullptr;
    return 0;
}

PYIMPORT_EXPORT void rewinddir(DIR* dir) {
    if (is_dir_stream(dir)) return dir_rewind(dir);
    REAL(rewinddir)(dir);
}

PYIMPORT_EXPORT long telldir(DIR* dir) {
    if (is_dir_stream(dir)) return dir_tell(dir);
    return REAL(telldir)(dir);
}

PYIMPORT_EXPORT void seekdir(DIR* dir, long position) {
    if (is_dir_stream(dir)) return dir_seek(dir, position);
    REAL(seekdir)(dir, position);
}

PYIMPORT_EXPORT int closedir(DIR* dir) {
    if (is_dir_stream(dir)) return dir_close(dir);
    return REAL(closedir)(dir);
}

PYIMPORT_EXPORT int dirfd(DIR* dir) {
    if (is_dir_stream(dir)) return dir_fd(dir);
    return REAL(dirfd)(dir);
}
