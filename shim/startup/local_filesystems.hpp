// Whether a job's trees are on node-local filesystems. There every rank's
// calls are answered by the node's own kernel and page cache: the snapshot
// has nothing to save and its start-up step would only cost, so such jobs
// pass through (unless PYIMPORT_SERVE_LOCAL=1). Filesystems are told apart
// by statfs's f_type; any type not known to be local (NFS, Lustre, GPFS,
// BeeGFS, CephFS, FUSE, ...) counts as shared.
#pragma once

#include <string>
#include <vector>

namespace pyimport {

// The name of a node-local filesystem type ("ext4", "xfs", "tmpfs", ...), or
// nullptr if `f_type` is not one.
const char* local_filesystem_name(long f_type);

// True if every path in `paths` that exists is on a node-local filesystem
// (and at least one does); `names` then lists their types ("ext4, tmpfs").
bool on_local_filesystems(const std::vector<std::string>& paths, std::string& names);

} // namespace pyimport
