// The one table of every libc entry point the shim interposes, and the real
// function each wrapper forwards to. Real functions are found with
// dlsym(RTLD_NEXT, name) so that other preloaded tools (Darshan, profilers)
// stack with this one; they are resolved once, eagerly from the constructor
// and lazily if a wrapper runs before it (pitfall: other constructors call in
// early).
#pragma once

#include <cerrno>
#include <cstdarg>
#include <cstddef>
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <type_traits>
#include <utime.h>

struct statx;
struct rusage;
struct timeval;
struct timespec;

// X(name, return type, (parameter list))
#define PYIMPORT_REAL_FUNCTIONS(X)                                                                 \
    /* open family (wrap_open.cpp) */                                                              \
    X(open, int, (const char*, int, ...))                                                          \
    X(open64, int, (const char*, int, ...))                                                        \
    X(__open_2, int, (const char*, int))                                                           \
    X(__open64_2, int, (const char*, int))                                                         \
    X(openat, int, (int, const char*, int, ...))                                                   \
    X(openat64, int, (int, const char*, int, ...))                                                 \
    X(__openat_2, int, (int, const char*, int))                                                    \
    X(__openat64_2, int, (int, const char*, int))                                                  \
    X(creat, int, (const char*, mode_t))                                                           \
    X(creat64, int, (const char*, mode_t))                                                         \
    X(fopen, FILE*, (const char*, const char*))                                                    \
    X(fopen64, FILE*, (const char*, const char*))                                                  \
    /* stat family (wrap_stat.cpp) */                                                              \
    X(stat, int, (const char*, struct stat*))                                                      \
    X(stat64, int, (const char*, struct stat64*))                                                  \
    X(lstat, int, (const char*, struct stat*))                                                     \
    X(lstat64, int, (const char*, struct stat64*))                                                 \
    X(fstat, int, (int, struct stat*))                                                             \
    X(fstat64, int, (int, struct stat64*))                                                         \
    X(fstatat, int, (int, const char*, struct stat*, int))                                         \
    X(fstatat64, int, (int, const char*, struct stat64*, int))                                     \
    X(__xstat, int, (int, const char*, struct stat*))                                              \
    X(__xstat64, int, (int, const char*, struct stat64*))                                          \
    X(__lxstat, int, (int, const char*, struct stat*))                                             \
    X(__lxstat64, int, (int, const char*, struct stat64*))                                         \
    X(__fxstat, int, (int, int, struct stat*))                                                     \
    X(__fxstat64, int, (int, int, struct stat64*))                                                 \
    X(__fxstatat, int, (int, int, const char*, struct stat*, int))                                 \
    X(__fxstatat64, int, (int, int, const char*, struct stat64*, int))                             \
    X(statx, int, (int, const char*, int, unsigned int, struct statx*))                            \
    X(access, int, (const char*, int))                                                             \
    X(faccessat, int, (int, const char*, int, int))                                                \
    X(eaccess, int, (const char*, int))                                                            \
    X(euidaccess, int, (const char*, int))                                                         \
    X(readlink, ssize_t, (const char*, char*, size_t))                                             \
    X(readlinkat, ssize_t, (int, const char*, char*, size_t))                                      \
    X(realpath, char*, (const char*, char*))                                                       \
    X(__realpath_chk, char*, (const char*, char*, size_t))                                         \
    X(canonicalize_file_name, char*, (const char*))                                                \
    /* directory streams (wrap_dir.cpp) */                                                         \
    X(opendir, DIR*, (const char*))                                                                \
    X(readdir, struct dirent*, (DIR*))                                                             \
    X(readdir64, struct dirent64*, (DIR*))                                                         \
    X(readdir_r, int, (DIR*, struct dirent*, struct dirent**))                                     \
    X(readdir64_r, int, (DIR*, struct dirent64*, struct dirent64**))                               \
    X(rewinddir, void, (DIR*))                                                                     \
    X(telldir, long, (DIR*))                                                                       \
    X(seekdir, void, (DIR*, long))                                                                 \
    X(closedir, int, (DIR*))                                                                       \
    X(dirfd, int, (DIR*))                                                                          \
    /* descriptors (wrap_fd.cpp) */                                                                \
    X(close, int, (int))                                                                           \
    X(close_range, int, (unsigned int, unsigned int, int))                                         \
    X(dup, int, (int))                                                                             \
    X(dup2, int, (int, int))                                                                       \
    X(dup3, int, (int, int, int))                                                                  \
    X(fcntl, int, (int, int, ...))                                                                 \
    X(fcntl64, int, (int, int, ...))                                                               \
    /* dynamic loading (entry/dl.cpp; dlopen and dlsym are assembly trampolines; the real dlsym */ \
    /* is found with dlvsym, as dlsym itself is interposed) */                                     \
    X(dlopen, void*, (const char*, int))                                                           \
    X(dlsym, void*, (void*, const char*))                                                          \
    X(dlerror, char*, (void))                                                                      \
    X(dladdr, int, (const void*, Dl_info*))                                                        \
    X(dladdr1, int, (const void*, Dl_info*, void**, int))                                          \
    X(dlinfo, int, (void*, int, void*))                                                            \
    /* changes under a prefix (wrap_change.cpp) */                                                 \
    X(mkdir, int, (const char*, mode_t))                                                           \
    X(mkdirat, int, (int, const char*, mode_t))                                                    \
    X(rmdir, int, (const char*))                                                                   \
    X(unlink, int, (const char*))                                                                  \
    X(unlinkat, int, (int, const char*, int))                                                      \
    X(rename, int, (const char*, const char*))                                                     \
    X(renameat, int, (int, const char*, int, const char*))                                         \
    X(renameat2, int, (int, const char*, int, const char*, unsigned int))                          \
    X(link, int, (const char*, const char*))                                                       \
    X(linkat, int, (int, const char*, int, const char*, int))                                      \
    X(symlink, int, (const char*, const char*))                                                    \
    X(symlinkat, int, (const char*, int, const char*))                                             \
    X(chmod, int, (const char*, mode_t))                                                           \
    X(fchmodat, int, (int, const char*, mode_t, int))                                              \
    X(chown, int, (const char*, uid_t, gid_t))                                                     \
    X(lchown, int, (const char*, uid_t, gid_t))                                                    \
    X(fchownat, int, (int, const char*, uid_t, gid_t, int))                                        \
    X(utime, int, (const char*, const struct utimbuf*))                                            \
    X(utimes, int, (const char*, const struct timeval*))                                           \
    X(lutimes, int, (const char*, const struct timeval*))                                          \
    X(utimensat, int, (int, const char*, const struct timespec*, int))                             \
    X(fchmod, int, (int, mode_t))                                                                  \
    X(fchown, int, (int, uid_t, gid_t))                                                            \
    X(futimens, int, (int, const struct timespec*))                                                \
    X(truncate, int, (const char*, off_t))                                                         \
    X(truncate64, int, (const char*, off64_t))                                                     \
    X(mknod, int, (const char*, mode_t, dev_t))                                                    \
    X(mknodat, int, (int, const char*, mode_t, dev_t))                                             \
    /* process life (wrap_process.cpp) */                                                          \
    X(_exit, void, (int))                                                                          \
    X(execve, int, (const char*, char* const*, char* const*))                                      \
    X(execv, int, (const char*, char* const*))                                                     \
    X(execvp, int, (const char*, char* const*))                                                    \
    X(execvpe, int, (const char*, char* const*, char* const*))                                     \
    X(fexecve, int, (int, char* const*, char* const*))                                             \
    X(wait, pid_t, (int*))                                                                         \
    X(waitpid, pid_t, (pid_t, int*, int))                                                          \
    X(waitid, int, (idtype_t, id_t, siginfo_t*, int))                                              \
    X(wait3, pid_t, (int*, int, struct rusage*))                                                   \
    X(wait4, pid_t, (pid_t, int*, int, struct rusage*))                                            \
    X(system, int, (const char*))                                                                  \
    X(pclose, int, (FILE*))

// The application's MPI life cycle (entry/mpi.cpp), answered by the shim only
// when it initialised MPI itself and the caller's MPI library is that one
// (startup/world_model.hpp); the profiling interface's names too (PMPI_*:
// tools such as Darshan, and Open MPI's Fortran bindings, call them). Their
// real functions are the ones the caller would have reached: its own MPI
// library (its dependencies' definition), else the next definition
// (RTLD_NEXT), else the first one among the loaded objects.
// X(name, return type, (parameter list))
#define PYIMPORT_MPI_FUNCTIONS(X)                                                                  \
    X(MPI_Init, int, (int*, char***))                                                              \
    X(MPI_Init_thread, int, (int*, char***, int, int*))                                            \
    X(MPI_Initialized, int, (int*))                                                                \
    X(MPI_Finalized, int, (int*))                                                                  \
    X(MPI_Finalize, int, (void))                                                                   \
    X(PMPI_Init, int, (int*, char***))                                                             \
    X(PMPI_Init_thread, int, (int*, char***, int, int*))                                           \
    X(PMPI_Initialized, int, (int*))                                                               \
    X(PMPI_Finalized, int, (int*))                                                                 \
    X(PMPI_Finalize, int, (void))

namespace pyimport::real {

#define PYIMPORT_DECLARE_REAL(name, ret, params)                                                   \
    using name##_fn = ret(*) params;                                                               \
    name##_fn name();
PYIMPORT_REAL_FUNCTIONS(PYIMPORT_DECLARE_REAL)
#undef PYIMPORT_DECLARE_REAL

// The definition of the MPI function `name` that code at `caller` would
// reach without this library (see PYIMPORT_MPI_FUNCTIONS), never this
// library's own; nullptr if no MPI library defines it.
void* mpi_definition(const char* name, const void* caller);

// Resolves the whole table; called once from the constructor.
void resolve_all();

// The next definition of `name` after this library's (RTLD_NEXT, else the
// global scope), never this library's own: a wrapper must not become its own
// real function. nullptr if there is none.
void* find_next(const char* name);

// What a real function that libc lacks (close_range before glibc 2.34 ...)
// is replaced with: fails with ENOSYS, as the kernel would.
template <typename R> R missing_result() {
    if constexpr (std::is_void_v<R>)
        return;
    else if constexpr (std::is_pointer_v<R>)
        return nullptr;
    else
        return static_cast<R>(-1);
}
template <typename F> struct Missing;
template <typename R, typename... A> struct Missing<R (*)(A...)> {
    static R call(A...) {
        errno = ENOSYS;
        return missing_result<R>();
    }
};
template <typename R, typename... A> struct Missing<R (*)(A..., ...)> {
    static R call(A..., ...) {
        errno = ENOSYS;
        return missing_result<R>();
    }
};

// For unit tests (fault injection): REAL(name) calls `fn` from now on;
// nullptr restores the real function. False for a name not in the table.
bool substitute(const char* name, void* fn);

} // namespace pyimport::real

// Calls the real function: REAL(open)(path, flags).
#define REAL(name) (::pyimport::real::name())
