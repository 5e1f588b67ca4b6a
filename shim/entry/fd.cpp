// Descriptor bookkeeping: the shim must know when a descriptor it opened is
// closed or duplicated. Reads, seeks and mmap need no wrapper: a served
// descriptor is a real (memory) file.
#include "entry/wrap.hpp"

#include <unistd.h>

using namespace pyimport;

PYIMPORT_EXPORT int close(int fd) {
    {
        Guard guard;
        if (guard) guard->fds().clear(fd);
    }
    return REAL(close)(fd);
}

PYIMPORT_EXPORT int close_range(unsigned int first, unsigned int last, int flags) {
    {
        Guard guard;
        if (guard && !(flags & CLOSE_RANGE_CLOEXEC)) guard->fds().clear_range(first, last);
    }
    return REAL(close_range)(first, last, flags);
}

PYIMPORT_EXPORT int dup(int fd) {
    int copy = REAL(dup)(fd);
    Guard guard;
    if (guard && copy >= 0) guard->fds().copy(fd, copy);
    return copy;
}

PYIMPORT_EXPORT int dup2(int fd, int target) {
    int copy = REAL(dup2)(fd, target);
    Guard guard;
    if (guard && copy >= 0 && copy != fd) guard->fds().copy(fd, copy);
    return copy;
}

PYIMPORT_EXPORT int dup3(int fd, int target, int flags) {
    int copy = REAL(dup3)(fd, target, flags);
    Guard guard;
    if (guard && copy >= 0) guard->fds().copy(fd, copy);
    return copy;
}

namespace {
template <typename Real> int fcntl_common(Real real, int fd, int command, va_list args) {
    void* argument = va_arg(args, void*); // int or pointer: passed on as is
    int result = real(fd, command, argument);
    if ((command == F_DUPFD || command == F_DUPFD_CLOEXEC) && result >= 0) {
        Guard guard;
        if (guard) guard->fds().copy(fd, result);
    }
    return result;
}
} // namespace

PYIMPORT_EXPORT int fcntl(int fd, int command, ...) {
    va_list args;
    va_start(args, command);
    int result = fcntl_common(REAL(fcntl), fd, command, args);
    va_end(args);
    return result;
}

PYIMPORT_EXPORT int fcntl64(int fd, int command, ...) {
    va_list args;
    va_start(args, command);
    int result = fcntl_common(REAL(fcntl64), fd, command, args);
    va_end(args);
    return result;
}
