#include "startup/node_layout.hpp"

#include "base/real.hpp"

#include <unordered_set>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

namespace pyimport {
namespace {

void add_file(XXH64_state_t* state, const char* path) {
    char bytes[64] = {};
    int fd = REAL(open)(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t got = ::read(fd, bytes, sizeof bytes); // (not a served descriptor)
    REAL(close)(fd);
    if (got > 0) XXH64_update(state, bytes, static_cast<size_t>(got));
}

void add_file_id(XXH64_state_t* state, const char* path) {
    struct stat st = {};
    if (REAL(stat)(path, &st) != 0) return;
    uint64_t id[2] = {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
    XXH64_update(state, id, sizeof id);
}

} // namespace

uint64_t node_identity(const std::string& node_dir) {
    XXH64_state_t* state = XXH64_createState();
    if (!state) return 0;
    XXH64_reset(state, 0);
    add_file(state, "/proc/sys/kernel/random/boot_id");
    add_file_id(state, "/proc/self/ns/pid");
    add_file_id(state, node_dir.c_str());
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) == 0) XXH64_update(state, host, sizeof host);
    uint64_t identity = XXH64_digest(state);
    XXH64_freeState(state);
    return identity;
}

NodeLayout node_layout(const std::vector<uint64_t>& identities, int rank) {
    NodeLayout layout;
    const int size = static_cast<int>(identities.size());
    std::unordered_set<uint64_t> seen;
    seen.reserve(identities.size());
    for (int r = 0; r < size; ++r) {
        if (seen.insert(identities[r]).second) layout.leaders.push_back(r);
        if (rank >= 0 && rank < size && identities[r] == identities[rank]) {
            if (r == rank) layout.node_rank = static_cast<int>(layout.node_ranks.size());
            layout.node_ranks.push_back(r);
        }
    }
    return layout;
}

} // namespace pyimport
