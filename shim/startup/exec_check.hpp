// Whether an exec would start a program. Ending the shim's MPI session
// before an exec cannot be undone (MPICH cannot start a session again), so
// it is ended only for an exec that will replace the program: one that
// fails (no such file, not executable) leaves the process as it was.
#pragma once

namespace pyimport {

// `file` names an executable regular file in a format the kernel runs (ELF,
// "#!", or any when binfmt_misc has formats registered); with `search`
// (execvp, execvpe) a name without '/' is looked up in `path` (PATH;
// nullptr: glibc's default "/bin:/usr/bin") the way execvp does, which also
// hands other files to /bin/sh. Asks the filesystem (the real libc).
bool exec_would_start(const char* file, bool search, const char* path);

// The same for fexecve: `fd` is open on an executable regular file.
bool fexec_would_start(int fd);

} // namespace pyimport
