// Process state shared by the wrappers: whether this process is active, and
// the guard every wrapper enters before asking the core.
#pragma once

#include "core.hpp"

#include <cerrno>

namespace pyimport {

// The active core, or nullptr: inert, not yet initialised, or a fork/vfork
// child of the active process (whose wrappers must change nothing).
Core* current_core();

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

// The core even in a fork child of the active process (current_core() is
// nullptr there): only for reading what the parent left, such as the names
// of libraries it loaded from the mirror (wrap_dl.cpp).
Core* inherited_core();

// Ends the shim's MPI use and prints the summary; called at exit and _exit.
void shutdown_at_exit();

} // namespace pyimport
