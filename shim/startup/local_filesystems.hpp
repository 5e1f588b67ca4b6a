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
// Stops at the first that is not: on a shared filesystem that is one request.
bool on_local_filesystems(const std::vector<std::string>& paths, std::string& names);

// Where an interpreter's trees are, as every rank can tell without a request
// to a shared filesystem: the prefix of `executable` (the running binary),
// the directory of argv[0] when it names one (a venv's bin/), PYTHONHOME,
// VIRTUAL_ENV, PYTHONPATH, PYIMPORT_PREFIX, HOME (the user's site
// directory), the script's directory and `cwd` (sys.path[0] of -c and -m).
// A rank whose trees are all node-local by this measure passes through
// without loading MPI; otherwise rank 0 looks at the full search plan.
std::vector<std::string> likely_trees(const char* (*lookup)(const char*),
                                      const std::vector<std::string>& command_line,
                                      const std::string& executable, const std::string& cwd);

} // namespace pyimport
