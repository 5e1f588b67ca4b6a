// The reaper of a job's node-local directory. A job whose ranks are all
// killed (SIGKILL: srun -K, scancel, Hydra's abort) runs no leave(), so its
// directory (hundreds of files in tmpfs) would stay until a later job's
// remove_abandoned_jobs. So the node's first rank starts one small detached
// process per job that waits for an exclusive flock on the directory, which
// the kernel grants once every rank's shared lock is gone (closed, or its
// process dead), removes the directory and exits.
//
// Invisible to the job: made with raw system calls (no fork handlers of MPI
// libraries, no malloc or lock in the child of a multi-threaded rank), in a
// session of its own (the launcher's kills of the ranks' process group miss
// it), holding no descriptor but its own of the directory (a launcher waits
// for EOF on the ranks' stdout and stderr), never exec'ing or printing.
#pragma once

#include <string>
#include <sys/types.h>

namespace pyimport {

// Starts the reaper of the job directory open as `job_fd` (this process
// holds its shared lock), named `name` in `user_dir` or, once renamed,
// `final_name`. It removes only that directory (same device and inode),
// following no symlink. Returns its pid, or -1 if it could not be started
// (silently: leave() and remove_abandoned_jobs still remove the directory).
pid_t start_reaper(const std::string& user_dir, const std::string& name,
                   const std::string& final_name, int job_fd);

} // namespace pyimport
