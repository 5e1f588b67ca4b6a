#include "base/credentials.hpp"

#include <cerrno>
#include <unistd.h>

namespace pyimport {

bool supplementary_groups(std::vector<gid_t>& out) {
    for (int attempt = 0; attempt < 8; ++attempt) {
        int count = getgroups(0, nullptr);
        if (count < 0) return false;
        out.resize(static_cast<size_t>(count));
        if (count == 0) return true; // getgroups(0, ...) would not fill
        int n = getgroups(count, out.data());
        if (n >= 0) {
            out.resize(static_cast<size_t>(n));
            return true;
        }
        if (errno != EINVAL) return false; // EINVAL: another thread added groups meanwhile
    }
    return false;
}

} // namespace pyimport
