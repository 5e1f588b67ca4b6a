#include "startup/image_sharing.hpp"

#include "base/real.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

namespace pyimport {
namespace {

constexpr int kFailed = -2; // in place of the leader's descriptor: its broadcast failed

// A descriptor closed on every way out.
struct OwnedFd {
    int fd = -1;
    ~OwnedFd() { reset(); }
    void reset() {
        if (fd >= 0) REAL(close)(fd);
        fd = -1;
    }
};

// The leader's memory file of `length` bytes, mapped writable; false if
// memory files or mappings are unavailable (the leader then keeps a copy).
bool make_memory_file(uint64_t length, OwnedFd& memfd, char*& writable) {
    if (length == 0) return false;
    memfd.fd = memfd_create("pyimport-snapshot", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (memfd.fd < 0) return false;
    void* map = MAP_FAILED;
    if (ftruncate(memfd.fd, static_cast<off_t>(length)) == 0)
        map = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.fd, 0);
    if (map == MAP_FAILED) {
        memfd.reset();
        return false;
    }
    writable = static_cast<char*>(map);
    return true;
}

// Read-only from now on, for the leader too: mapped again without write
// access, and sealed (which needs the writable mapping gone). False, with
// nothing changed, if the second mapping fails.
bool seal(OwnedFd& memfd, char* writable, uint64_t length, const char*& read_only) {
    void* map = mmap(nullptr, length, PROT_READ, MAP_SHARED, memfd.fd, 0);
    if (map == MAP_FAILED) return false;
    munmap(writable, length);
    // Unsealed, the file is still only writable through this descriptor.
    REAL(fcntl)(memfd.fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    read_only = static_cast<const char*>(map);
    return true;
}

// A non-leader's mapping of the leader's memory file, or nullptr.
const char* map_leaders_file(int pid, int fd, uint64_t length) {
    char proc[64];
    std::snprintf(proc, sizeof proc, "/proc/%d/fd/%d", pid, fd);
    int local = REAL(open)(proc, O_RDONLY | O_CLOEXEC);
    if (local < 0) return nullptr;
    void* map = mmap(nullptr, length, PROT_READ, MAP_SHARED, local, 0);
    REAL(close)(local);
    return map == MAP_FAILED ? nullptr : static_cast<const char*>(map);
}

} // namespace

bool share_image(Transport& transport, uint64_t node_identity, std::vector<char>& image,
                 uint64_t length, ImageCheck check, SharedImage& out, std::string& error) {
    out.release();
    if (!transport.split_by_node(node_identity, error)) return false;
    bool leader = transport.node_rank() == 0;

    // Node leaders: a memory file (or a private copy), filled by the
    // broadcast among leaders.
    OwnedFd memfd;
    bool leader_failed = false;
    if (leader) {
        char* writable = nullptr;
        bool in_file = make_memory_file(length, memfd, writable);
        if (!in_file) writable = out.make_private(length);
        if (transport.rank() == 0) {
            if (length) std::memcpy(writable, image.data(), length);
            std::vector<char>().swap(image);
        }
        bool received = transport.leaders_broadcast(writable, length, error) &&
                        (transport.rank() == 0 || check(writable, length, error));
        if (!received) {
            leader_failed = true;
            if (in_file) munmap(writable, length);
            memfd.reset();
            out.release();
        } else if (in_file) {
            const char* read_only = nullptr;
            if (seal(memfd, writable, length, read_only)) {
                out.adopt_mapping(read_only, length, false);
            } else {
                // Not shareable: keep a copy and let the node's ranks copy too.
                std::memcpy(out.make_private(length), writable, length);
                munmap(writable, length);
                memfd.reset();
            }
        }
    }

    // The other ranks of the node map the leader's memory file; a leader
    // whose broadcast failed tells them so (they would wait for it forever).
    int where[2] = {static_cast<int>(getpid()), leader_failed ? kFailed : memfd.fd};
    std::string node_error;
    if (!transport.node_broadcast(where, sizeof where, node_error) || where[1] == kFailed) {
        if (error.empty())
            error =
                node_error.empty() ? "the node leader has no sound copy of the image" : node_error;
        out.release();
        return false;
    }
    bool mapped = leader;
    if (!leader && where[1] >= 0) {
        if (const char* map = map_leaders_file(where[0], where[1], length)) {
            out.adopt_mapping(map, length, true);
            mapped = true;
        }
    }
    bool all_mapped = false;
    if (!transport.node_all(mapped, all_mapped, error)) {
        out.release();
        return false;
    }
    if (!all_mapped || where[1] < 0) {
        // Some rank cannot map it: every rank of the node keeps its own copy.
        if (!leader) out.make_private(length);
        if (!transport.node_broadcast(const_cast<char*>(out.data), length, error)) {
            out.release();
            return false;
        }
    } else {
        out.node_shared = true;
    }
    // Checked by the leader, and sealed (or the leader's own copy).
    out.checked = out.node_shared || leader;
    return true; // memfd closes: the mappings hold the memory
}

} // namespace pyimport
