// Memory files (memory_file.hpp): memfd creation, sealing, the read-only
// reopen onto the lowest free descriptor, and the memfd device probe.
#include "serve/memory_file.hpp"

#include "base/real.hpp"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace pyimport {

namespace {
std::atomic<uint64_t> g_memfd_dev{~uint64_t{0}};
} // namespace

uint64_t memfd_dev() {
    uint64_t dev = g_memfd_dev.load(std::memory_order_acquire);
    if (dev != ~uint64_t{0}) return dev;
    int fd = memfd_create("pyimport-probe", MFD_CLOEXEC);
    struct stat st {};
    if (fd >= 0 && REAL(fstat)(fd, &st) == 0) dev = st.st_dev;
    if (fd >= 0) REAL(close)(fd);
    g_memfd_dev.store(dev, std::memory_order_release);
    return dev;
}

int make_memory_file(const char* bytes, size_t size, int flags, uint64_t& ino) {
    int rw = memfd_create("pyimport", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (rw < 0) return -1;
    size_t done = 0;
    while (done < size) {
        ssize_t n = ::write(rw, bytes + done, size - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = errno;
            REAL(close)(rw);
            errno = n < 0 ? e : EIO;
            return -1;
        }
        done += static_cast<size_t>(n);
    }
    REAL(fcntl)(rw, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    // Reopen read-only so that F_GETFL reports O_RDONLY like the real file,
    // then move it onto the memfd's (lowest free) number.
    char proc[64];
    std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", rw);
    int ro = REAL(open)(proc, O_RDONLY | O_CLOEXEC | (flags & O_NONBLOCK));
    int fd = rw;
    if (ro >= 0) {
        // dup3 also sets close-on-exec as the caller asked.
        fd = REAL(dup3)(ro, rw, flags & O_CLOEXEC);
        int e = errno;
        REAL(close)(ro);
        if (fd < 0) { // rw is still open: dup3 replaces it only when it succeeds
            REAL(close)(rw);
            errno = e;
            return -1;
        }
    } else if (!(flags & O_CLOEXEC)) {
        REAL(fcntl)(fd, F_SETFD, 0);
    }
    struct stat st {};
    if (REAL(fstat)(fd, &st) != 0) {
        REAL(close)(fd);
        return -1;
    }
    ino = st.st_ino;
    return fd;
}

} // namespace pyimport
