// Shared by the wrapper files: the export macro and small helpers.
#pragma once

#include "base/real.hpp"
#include "startup/runtime.hpp"

#include <cstdarg>
#include <fcntl.h>

// Interposed symbols are the only ones the library exports.
#define PYIMPORT_EXPORT extern "C" __attribute__((visibility("default")))

namespace pyimport {

// Opens that create, write or truncate change the tree under a prefix.
inline bool open_changes(int flags) {
    // O_TMPFILE includes O_DIRECTORY's bit: compare the whole mask.
    return (flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC)) != 0 ||
           (flags & O_TMPFILE) == O_TMPFILE;
}

inline bool open_takes_mode(int flags) {
    return (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE;
}

// glibc declares path arguments nonnull and GCC then drops NULL checks on
// them (even with -fno-delete-null-pointer-checks); programs do pass NULL and
// expect EFAULT. This hides the pointer's origin from the optimiser.
template <typename T> inline T* opaque(T* pointer) {
    asm volatile("" : "+r"(pointer));
    return pointer;
}

// Records that `path` (relative to `dirfd`) is about to change, then lets the
// real call make the change.
inline void note_change(int dirfd, const char* path, bool follow_last) {
    path = opaque(path);
    Guard guard;
    if (guard) guard->changed(dirfd, path, follow_last);
}

// The shim's entry point for an MPI life-cycle function (entry/mpi.cpp), or
// nullptr for any other name.
void* mpi_entry_point(const char* name);

} // namespace pyimport
