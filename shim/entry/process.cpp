// Process life: the end of the process or of its program, and children
// that ended.
#include "entry/wrap.hpp"
#include "startup/exec_check.hpp"

#include <cstdlib>

#include <sys/wait.h>
#include <unistd.h>

using namespace pyimport;

PYIMPORT_EXPORT [[noreturn]] void _exit(int status) {
    shutdown_at_exit();
    REAL(_exit)(status);
    __builtin_unreachable();
}

// Replacing the program ends the shim's MPI session first: Hydra stops the
// job when a rank that started MPI goes on without ending it. An exec that
// cannot start a program keeps the session (it could not be started again).
namespace {
void before_exec(const char* file, bool search) {
    if (shutdown_pending() && exec_would_start(file, search, getenv("PATH"))) shutdown_at_exit();
}
} // namespace

PYIMPORT_EXPORT int execve(const char* path, char* const argv[], char* const envp[]) {
    before_exec(path, false);
    return REAL(execve)(path, argv, envp);
}

PYIMPORT_EXPORT int execv(const char* path, char* const argv[]) {
    before_exec(path, false);
    return REAL(execv)(path, argv);
}

PYIMPORT_EXPORT int execvp(const char* file, char* const argv[]) {
    before_exec(file, true);
    return REAL(execvp)(file, argv);
}

PYIMPORT_EXPORT int execvpe(const char* file, char* const argv[], char* const envp[]) {
    before_exec(file, true); // glibc searches the caller's PATH, not envp's
    return REAL(execvpe)(file, argv, envp);
}

PYIMPORT_EXPORT int fexecve(int fd, char* const argv[], char* const envp[]) {
    if (shutdown_pending() && fexec_would_start(fd)) shutdown_at_exit();
    return REAL(fexecve)(fd, argv, envp);
}

// A child that ended may have written under the prefixes (pip, code
// generators): directories are checked against the filesystem again.
namespace {
void child_reaped(long result) {
    if (result <= 0) return;
    Guard guard;
    if (guard) guard->tree().others_may_have_changed();
}
} // namespace

PYIMPORT_EXPORT pid_t wait(int* status) {
    pid_t pid = REAL(wait)(status);
    child_reaped(pid);
    return pid;
}

PYIMPORT_EXPORT pid_t waitpid(pid_t pid, int* status, int options) {
    pid_t result = REAL(waitpid)(pid, status, options);
    child_reaped(result);
    return result;
}

PYIMPORT_EXPORT int waitid(idtype_t type, id_t id, siginfo_t* info, int options) {
    int result = REAL(waitid)(type, id, info, options);
    child_reaped(result == 0 && info && info->si_pid > 0 ? 1 : 0);
    return result;
}

PYIMPORT_EXPORT pid_t wait3(int* status, int options, struct rusage* usage) {
    pid_t result = REAL(wait3)(status, options, usage);
    child_reaped(result);
    return result;
}

PYIMPORT_EXPORT pid_t wait4(pid_t pid, int* status, int options, struct rusage* usage) {
    pid_t result = REAL(wait4)(pid, status, options, usage);
    child_reaped(result);
    return result;
}

PYIMPORT_EXPORT int system(const char* command) {
    int result = REAL(system)(command);
    child_reaped(1);
    return result;
}

PYIMPORT_EXPORT int pclose(FILE* stream) {
    int result = REAL(pclose)(stream);
    child_reaped(1);
    return result;
}
