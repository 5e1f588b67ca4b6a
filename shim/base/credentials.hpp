// The process's credentials as the kernel has them.
#pragma once

#include <sys/types.h>
#include <vector>

namespace pyimport {

// The process's supplementary groups, however many there are (up to
// NGROUPS_MAX, 65536): the kernel is asked for the count first. False if it
// would not say.
bool supplementary_groups(std::vector<gid_t>& out);

} // namespace pyimport
