#include "loader/reaper.hpp"

#include "base/real.hpp"

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace pyimport {

namespace {

// Everything below but start_reaper runs in the clones: system calls only
// (syscall() only sets errno), on what was prepared before cloning.

constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
// Levels of directories removed below the job's; each takes a getdents buffer
// of the stack (the copy of the cloning thread's). Deeper ones are left to
// remove_abandoned_jobs.
constexpr int kMaxDepth = 64;

struct Identity {
    uint32_t dev_major = 0, dev_minor = 0;
    uint64_t ino = 0;
    bool operator==(const Identity&) const = default;
};

// What the reaper needs, made before cloning.
struct ReaperPlan {
    const char* user_dir;
    const char* names[2]; // the job directory's, before and after its rename
    Identity job;
};

bool identify(int dirfd, const char* name, Identity& out) {
    struct statx stx {};
    if (syscall(SYS_statx, dirfd, name, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH, STATX_INO, &stx) != 0)
        return false;
    out = {stx.stx_dev_major, stx.stx_dev_minor, stx.stx_ino};
    return true;
}

bool is_job(int dirfd, const char* name, const ReaperPlan& plan) {
    Identity id;
    return identify(dirfd, name, id) && id == plan.job;
}

int open_directory(int dirfd, const char* name) {
    return static_cast<int>(syscall(SYS_openat, dirfd, name, kDirFlags));
}

[[noreturn]] void exit_now() {
    for (;;)
        syscall(SYS_exit_group, 0);
}

bool remove_entry(int dirfd, const char* name, int depth);

// Removes what the open directory `fd` holds, as far as it can.
void remove_entries(int fd, int depth) {
    alignas(struct dirent64) char buffer[2048];
    for (;;) {
        long got = syscall(SYS_getdents64, fd, buffer, sizeof buffer);
        if (got <= 0) return;
        for (long at = 0; at < got;) {
            const auto* d = reinterpret_cast<const struct dirent64*>(buffer + at);
            at += d->d_reclen;
            const char* n = d->d_name;
            if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0))) continue;
            remove_entry(fd, n, depth);
        }
    }
}

// NodeMirror::remove_tree without the heap: `name` under `dirfd` and all below.
bool remove_entry(int dirfd, const char* name, int depth) {
    if (syscall(SYS_unlinkat, dirfd, name, 0) == 0 || errno == ENOENT) return true;
    if ((errno != EISDIR && errno != EPERM) || depth >= kMaxDepth) return false;
    int fd = open_directory(dirfd, name); // O_NOFOLLOW: a symlink is unlinked above
    if (fd < 0) return false;
    bool removed = false;
    // Entries removed while reading can make getdents skip some: read again.
    for (int pass = 0; pass < 3 && !removed; ++pass) {
        syscall(SYS_lseek, fd, 0, SEEK_SET);
        remove_entries(fd, depth + 1);
        removed = syscall(SYS_unlinkat, dirfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT;
    }
    syscall(SYS_close, fd);
    return removed;
}

// The kernel's struct sigaction (x86_64, aarch64).
struct KernelSigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)();
    uint64_t mask;
};

// No handler of the rank's runs in the reaper. The polite kills that Slurm
// sends a whole step (SIGTERM, then SIGKILL after KillWait) must not end it
// before the ranks they end: it ignores SIGTERM, SIGINT and SIGHUP.
void reset_signals() {
    for (int sig = 1; sig <= 64; ++sig) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        bool ignored = sig == SIGTERM || sig == SIGINT || sig == SIGHUP;
        KernelSigaction action{ignored ? SIG_IGN : SIG_DFL, 0, nullptr, 0};
        syscall(SYS_rt_sigaction, sig, &action, nullptr, sizeof action.mask);
    }
    uint64_t none = 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, nullptr, sizeof none);
}

// Holding a copy of the launcher's stdout or stderr pipe would keep it
// waiting for EOF; holding the rank's descriptor of the job directory would
// hold the rank's shared lock.
void close_all_descriptors() {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 0u, ~0u, 0) == 0) return;
#endif
    uint64_t limit[2] = {1024, 1024}; // RLIMIT_NOFILE's soft and hard
    syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, nullptr, limit);
    for (uint64_t fd = 0; fd < limit[0] && fd < (1u << 20); ++fd)
        syscall(SYS_close, static_cast<int>(fd));
}

[[noreturn]] void reap(const ReaperPlan& plan) {
    reset_signals();
    syscall(SYS_setsid); // its own session and process group, no terminal
    syscall(SYS_chdir, "/");
    close_all_descriptors();
    syscall(SYS_prctl, PR_SET_NAME, "pyimport-reaper", 0, 0, 0);

    // A descriptor of its own: flock locks belong to the open file description.
    int user_fd = open_directory(AT_FDCWD, plan.user_dir);
    int job_fd = -1;
    for (const char* name : plan.names)
        if (job_fd < 0 && user_fd >= 0) job_fd = open_directory(user_fd, name);
    syscall(SYS_close, user_fd);
    if (job_fd < 0 || !is_job(job_fd, "", plan)) exit_now(); // gone already
    // Granted once no rank holds its shared lock. New shared locks are still
    // granted while this waits, so ranks joining late are not held up.
    long locked;
    while ((locked = syscall(SYS_flock, job_fd, LOCK_EX)) != 0 && errno == EINTR) {
    }
    if (locked != 0) exit_now();
    // If the last rank's leave() removed it first, neither name is the job's.
    user_fd = open_directory(AT_FDCWD, plan.user_dir);
    if (user_fd >= 0)
        for (const char* name : plan.names)
            if (is_job(user_fd, name, plan)) remove_entry(user_fd, name, 0);
    exit_now();
}

} // namespace

pid_t start_reaper(const std::string& user_dir, const std::string& name,
                   const std::string& final_name, int job_fd) {
    ReaperPlan plan{user_dir.c_str(), {name.c_str(), final_name.c_str()}, {}};
    if (!identify(job_fd, "", plan.job)) return -1;
    // Where the intermediate child tells the reaper's pid.
    void* shared =
        mmap(nullptr, sizeof(pid_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) return -1;
    auto* reaper_pid = static_cast<volatile pid_t*>(shared);
    *reaper_pid = -1;
    int saved_errno = errno;
    // No signal reaches a clone before reap() has reset the handlers.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    // Without an exit signal: the rank gets no SIGCHLD; waited for with __WALL.
    long child = syscall(SYS_clone, 0, 0, 0, 0, 0);
    if (child == 0) {
        // The intermediate child: the reaper it makes is reparented at once.
        long reaper = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
        if (reaper == 0) reap(plan);
        *reaper_pid = reaper > 0 ? static_cast<pid_t>(reaper) : -1;
        exit_now();
    }
    if (child > 0) {
        int status = 0;
        while (REAL(waitpid)(static_cast<pid_t>(child), &status, __WALL) < 0 && errno == EINTR) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    pid_t pid = *reaper_pid;
    munmap(shared, sizeof(pid_t));
    errno = saved_errno;
    return pid;
}

} // namespace pyimport
