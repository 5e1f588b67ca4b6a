// The process's state, shared by the entry points: whether this process is
// active, and the guard every entry point enters before asking the core.
// runtime.cpp is the orchestration: the constructor decides (activation),
// runs the start-up step (protocol), and serves; exit and exec end it.
#pragma once

#include "loader/libraries.hpp"
#include "serve/core.hpp"

#include <cerrno>

namespace pyimport {

// The active core, or nullptr: inert, not yet initialised, or a fork/vfork
// child of the active process (whose wrappers must change nothing).
Core* current_core();
// dlopen from the node-local mirror (nullptr: off or not available). Also
// set in a fork child of the active process, where current_core() is
// nullptr: there only for reading what the parent left, such as the names of
// libraries it loaded from the mirror (entry/dl.cpp).
Libraries* inherited_libraries();

// Once per thread: set while the shim itself is running, so that libc calls
// the shim makes (and libunwind's, dlsym's ...) go straight to libc.
extern thread_local int t_inside_shim __attribute__((tls_model("initial-exec")));

class Guard {
  public:
    Guard() : saved_errno_(errno) {
        if (t_inside_shim) return;
        core_ = current_core();
        if (core_) t_inside_shim = 1;
    }
    ~Guard() { leave(); }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

    explicit operator bool() const { return core_ != nullptr; }
    Core* operator->() const { return core_; }
    Libraries* libraries() const { return core_ ? inherited_libraries() : nullptr; }

    // Returns a served answer, setting errno as the real call would.
    template <typename T> T finish(const Answer& answer) {
        leave();
        errno = answer.value < 0 ? answer.error : saved_errno_;
        return static_cast<T>(answer.value);
    }

  private:
    void leave() {
        if (core_) {
            core_ = nullptr;
            t_inside_shim = 0;
            errno = saved_errno_;
        }
    }
    int saved_errno_;
    Core* core_ = nullptr;
};

// Where the process ends the shim's MPI use from.
enum class ExitPath {
    process_exit,         // exit, _exit, exec: bounded where the launcher lets a job go on
    application_finalize, // the application's MPI_Finalize (world model): never bounded
};
// Ends the shim's MPI use and prints the summary; called at exit, _exit and
// exec, or from the application's MPI_Finalize (once).
void shutdown_at_exit(ExitPath path = ExitPath::process_exit);
// Whether shutdown_at_exit() has something to end in this process.
bool shutdown_pending();

} // namespace pyimport
