/*
 * Fortified open entry points for the differential probe.
 *
 * This translation unit alone is built with -O2 -D_FORTIFY_SOURCE=2.  Because
 * the flags arrive as a parameter (not a compile-time constant) and no mode is
 * passed, glibc's fcntl2.h turns each call into __open_2, __open64_2,
 * __openat_2 or __openat64_2 -- the symbols a fortified Python or extension
 * module calls, which the shim must interpose like the plain ones.
 * run_diff.sh checks with `nm -u` that the probe really references them.
 *
 * Callers must never pass O_CREAT or O_TMPFILE: __open_2 aborts without a mode.
 */
#include <fcntl.h>

#include "probe_fortify.h"

#if !defined(__OPTIMIZE__) || !defined(_FORTIFY_SOURCE) || _FORTIFY_SOURCE < 1
#error "probe_fortify.c must be compiled with optimisation and _FORTIFY_SOURCE"
#endif

int fortified_open(const char* path, int flags) {
    return open(path, flags);
}

int fortified_open64(const char* path, int flags) {
    return open64(path, flags);
}

int fortified_openat(int dirfd, const char* path, int flags) {
    return openat(dirfd, path, flags);
}

int fortified_openat64(int dirfd, const char* path, int flags) {
    return openat64(dirfd, path, flags);
}
