// The node-local mirror: its layout (the way to a library, symlinks, one copy
// per file), the private directories, removal by the last process, of
// abandoned jobs and by the reaper of a job killed whole, against libraries
// gcc builds for each test.
#include "library_fixture.hpp"
#include "loader/mirror.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <dirent.h>
#include <dlfcn.h>
#include <fstream>
#include <functional>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>

using namespace pyimport;

Test(libraries, the_mirror_reproduces_the_way_to_a_library) {
    Wheel w;
    const Fixture& fx = w.fx;
    const std::string& root = w.root;
    cr_assert_neq(w.mirror().materialise(w.tree(), fx.path("pkg/../pkg.libs/libx.so.1")), kNoEntry);
    std::string copy = root + fx.path("pkg.libs/libx.so.1.2.3");
    cr_expect_eq(slurp(copy), slurp(fx.path("pkg.libs/libx.so.1.2.3")));
    char target[64] = {};
    cr_expect_gt(readlink((root + fx.path("pkg.libs/libx.so.1")).c_str(), target, sizeof target),
                 0);
    cr_expect_str_eq(target, "libx.so.1.2.3");
    struct stat st {};
    cr_expect_eq(stat((root + fx.path("pkg")).c_str(), &st), 0, "the way there is mirrored");
    cr_expect(S_ISDIR(st.st_mode));
    // Through an absolute symlink to a directory: the link points into the mirror.
    cr_assert_neq(w.mirror().materialise(w.tree(), fx.path("abs_pkg/ext.so")), kNoEntry);
    cr_expect_eq(slurp(root + fx.path("abs_pkg/ext.so")), slurp(fx.path("pkg/ext.so")));
    // Not libraries, or not there: nothing to load from the mirror.
    for (std::string path : {fx.path("pkg/mod.py"), fx.path("pkg/none.so"), fx.path("pkg"),
                             std::string("/etc/passwd")})
        cr_expect_eq(w.mirror().materialise(w.tree(), path), kNoEntry, "%s", path.c_str());
}

Test(mirror, private_directories_only) {
    char tmpl[] = "/tmp/pyimport-node-XXXXXX";
    std::string base = mkdtemp(tmpl);
    std::string user = base + "/pyimport-" + std::to_string(geteuid());
    cr_assert_eq(mkdir(user.c_str(), 0755), 0);
    std::string error;
    cr_expect_eq(open_user_directory(base, error), -1);
    cr_expect(error.find("not a directory private to this user") != std::string::npos, "%s",
              error.c_str());
    cr_assert_eq(chmod(user.c_str(), 0700), 0);
    cr_assert_eq(chown(user.c_str(), 65534, 65534), 0); // another user's, private to them
    cr_expect_eq(open_user_directory(base, error), -1, "another user's directory");
    rmdir(user.c_str());
    cr_assert_eq(symlink("/tmp", user.c_str()), 0);
    cr_expect_eq(open_user_directory(base, error), -1, "a symlink is never followed");
    unlink(user.c_str());
    int fd = open_user_directory(base, error);
    cr_expect_geq(fd, 0, "%s", error.c_str());
    struct stat st {};
    cr_expect_eq(stat(user.c_str(), &st), 0);
    cr_expect_eq(st.st_mode & 07777, 0700u);
    close(fd);
    rmdir(user.c_str());
    rmdir(base.c_str());
}

Test(mirror, the_last_process_removes_it_and_abandoned_ones_are_removed) {
    Wheel w;
    std::string job = w.mirror().job_dir();
    NodeMirror second;
    std::string error;
    cr_assert(second.join(job, error), "%s", error.c_str());
    w.mirror().leave();
    struct stat st {};
    cr_expect_eq(stat(job.c_str(), &st), 0, "another process still holds it");
    second.leave();
    cr_expect_neq(stat(job.c_str(), &st), 0, "the last one removed it");

    // Jobs left behind: one nobody holds (killed), one held, one being made;
    // the audit library's directories of a killed job and of a running one.
    std::string user = w.node->user_dir();
    for (const char* name : {"job-1-dead", "job-2-alive", "new-3-young", "ld-4-dead", "ld-5-alive"})
        cr_assert_eq(mkdir((user + "/" + name).c_str(), 0700), 0);
    int held = open((user + "/job-2-alive").c_str(), O_RDONLY | O_DIRECTORY);
    cr_assert_eq(flock(held, LOCK_SH), 0);
    cr_assert_eq(mkdir((user + "/ld-6-young").c_str(), 0700), 0); // unlocked a moment at start
    struct timespec old_times[2] = {{time(nullptr) - 3600, 0}, {time(nullptr) - 3600, 0}};
    for (const char* name : {"ld-4-dead", "ld-5-alive"})
        cr_assert_eq(utimensat(AT_FDCWD, (user + "/" + name).c_str(), old_times, 0), 0);
    int held_ld = open((user + "/ld-5-alive").c_str(), O_RDONLY | O_DIRECTORY);
    cr_assert_eq(flock(held_ld, LOCK_SH), 0);
    int user_fd = open(user.c_str(), O_RDONLY | O_DIRECTORY);
    cr_expect_eq(remove_abandoned_jobs(user_fd), 2);
    cr_expect_neq(stat((user + "/job-1-dead").c_str(), &st), 0);
    cr_expect_neq(stat((user + "/ld-4-dead").c_str(), &st), 0);
    cr_expect_eq(stat((user + "/job-2-alive").c_str(), &st), 0);
    cr_expect_eq(stat((user + "/ld-5-alive").c_str(), &st), 0);
    cr_expect_eq(stat((user + "/ld-6-young").c_str(), &st), 0);
    cr_expect_eq(stat((user + "/new-3-young").c_str(), &st), 0);
    close(held);
    close(held_ld);
    close(user_fd);
}

Test(libraries, the_mirror_never_leads_out_of_itself) {
    // One more ".." than the path has: "/.." is "/" on the filesystem, but in
    // the mirror it is the job directory's parent, which others can write to.
    auto too_far = [](const Fixture& fx) {
        std::string up;
        for (size_t i = 0, n = std::count(fx.root.begin(), fx.root.end(), '/'); i <= n + 1; ++i)
            up += "../";
        return up;
    };
    Wheel w([&](const Fixture& fx) {
        std::string up = too_far(fx);
        build(fx, "pkg/esc.so", "int q(void) { return 1; }",
              "-Wl,-rpath,'$ORIGIN/" + up + "pkg.libs'");
        fx.link(up + fx.root.substr(1) + "/pkg.libs/libx.so.1.2.3", "pkg/libout.so");
    });
    const Fixture& fx = w.fx;
    cr_expect_eq(w.mirror().materialise(w.tree(), fx.path("pkg/libout.so")), kNoEntry);
    cr_expect_eq(w.mirror().materialise(w.tree(), "/.." + fx.path("pkg/ext.so")), kNoEntry);
    cr_expect_not(w.mirror().contained(w.tree(), fx.path("pkg/" + too_far(fx))));
    cr_expect(w.mirror().contained(w.tree(), fx.path("pkg/../pkg.libs")));
    auto libraries = w.libraries();
    cr_expect_not(libraries->prepare(fx.path("pkg/esc.so")));
    libraries->close();
}

Test(libraries, one_copy_per_file_and_none_of_what_the_filesystem_gave) {
    Wheel w([](const Fixture& fx) {
        cr_assert_eq(
            ::link(fx.path("pkg.libs/liby.so").c_str(), fx.path("pkg.libs/liby2.so").c_str()), 0);
    });
    const Fixture& fx = w.fx;
    const std::string& root = w.root;
    cr_assert_neq(w.mirror().materialise(w.tree(), fx.path("pkg.libs/liby.so")), kNoEntry);
    cr_assert_neq(w.mirror().materialise(w.tree(), fx.path("pkg.libs/liby2.so")), kNoEntry);
    struct stat a {
    }, b{};
    cr_assert_eq(stat((root + fx.path("pkg.libs/liby.so")).c_str(), &a), 0);
    cr_assert_eq(stat((root + fx.path("pkg.libs/liby2.so")).c_str(), &b), 0);
    cr_expect_eq(a.st_ino, b.st_ino, "hard links share one copy");

    // libx loaded from the filesystem, through a path outside the prefixes:
    // neither it nor what needs it may come from the mirror.
    char tmpl[] = "/tmp/pyimport-alias-XXXXXX";
    std::string alias = std::string(mkdtemp(tmpl)) + "/libs";
    cr_assert_eq(symlink(fx.path("pkg.libs").c_str(), alias.c_str()), 0);
    auto libraries = w.libraries();
    void* handle = dlopen((alias + "/libx.so.1.2.3").c_str(), RTLD_NOW);
    cr_assert(handle, "%s", dlerror());
    std::string local;
    cr_expect_not(libraries->redirect(fx.path("pkg.libs/libx.so.1").c_str(), RTLD_NOW, local));
    cr_expect_not(libraries->prepare(fx.path("pkg/ext.so")));
    dlclose(handle);
    libraries->close();
    unlink(alias.c_str());
    rmdir(alias.substr(0, alias.size() - 5).c_str());
}

// A wheel's snapshot and a fresh node directory, for ranks run as processes.
struct NodeOfProcesses {
    Fixture fx;
    std::unique_ptr<Built> built;
    std::string base;
    NodeOfProcesses() {
        make_wheel(fx);
        built = std::make_unique<Built>(library_options(fx));
        char tmpl[] = "/tmp/pyimport-node-XXXXXX";
        base = mkdtemp(tmpl);
    }
    ~NodeOfProcesses() {
        std::string cmd = "rm -rf '" + base + "'";
        int ignored = std::system(cmd.c_str());
        (void)ignored;
    }
    // The job directories (job-*, new-*) in the user's directory.
    int jobs_left() const {
        int count = 0;
        DIR* dir = opendir((base + "/pyimport-" + std::to_string(geteuid())).c_str());
        while (dir && readdir(dir))
            ++count;
        if (dir) closedir(dir);
        return dir ? count - 2 : 0;
    }
};

// A process standing for one rank of the node: it creates the job's
// directory (`job_dir` empty, and mirrors two of the wheel's libraries) or
// joins `job_dir`, reports it, then leaves when told, exits without leaving
// when its channel closes, or is killed.
struct RankProcess {
    pid_t pid = -1;
    int channel = -1;
    std::string job_dir;
    pid_t reaper = -1; // its mirror's

    RankProcess(const NodeOfProcesses& node, const std::string& join_dir = "") {
        int ends[2];
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends), 0);
        pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            close(ends[0]);
            NodeMirror mirror;
            std::string error, report = "\n";
            if (join_dir.empty() ? mirror.create(node.base, node.built->snapshot, error)
                                 : mirror.join(join_dir, error)) {
                if (join_dir.empty())
                    for (const char* library : {"pkg/ext.so", "pkg.libs/libx.so.1"})
                        mirror.materialise(*node.built->tree, node.fx.path(library));
                report = std::to_string(mirror.reaper_pid()) + " " + mirror.job_dir() + "\n";
            }
            ssize_t ignored = write(ends[1], report.data(), report.size());
            (void)ignored;
            char order = 0;
            if (read(ends[1], &order, 1) == 1 && order == 'l') mirror.leave();
            _exit(0);
        }
        close(ends[1]);
        channel = ends[0];
        std::string report;
        char c = 0;
        while (read(channel, &c, 1) == 1 && c != '\n')
            report += c;
        size_t space = report.find(' ');
        cr_assert_neq(space, std::string::npos, "the rank could not make or join the mirror");
        reaper = std::stoi(report.substr(0, space));
        job_dir = report.substr(space + 1);
    }
    RankProcess(const RankProcess&) = delete;
    ~RankProcess() { kill(); }

    void leave() {
        cr_assert_eq(write(channel, "l", 1), 1);
        wait();
    }
    void exit_without_leaving() {
        close(channel);
        channel = -1;
        wait();
    }
    void kill() {
        if (pid > 0) ::kill(pid, SIGKILL);
        wait();
    }

  private:
    void wait() {
        if (pid > 0) waitpid(pid, nullptr, 0);
        pid = -1;
        if (channel >= 0) close(channel);
        channel = -1;
    }
};

bool exists(const std::string& path) {
    struct stat st {};
    return lstat(path.c_str(), &st) == 0;
}

// Ended: no such process, or a zombie (this container's init may not reap).
bool process_gone(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return true;
    size_t paren = line.rfind(')');
    return paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] == 'Z' ||
           line[paren + 2] == 'X';
}

// Whether `done` becomes true within `seconds` (polled).
bool within(double seconds, const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
}

constexpr double kDeadline = 10; // seconds; well under is expected

Test(mirror, a_job_killed_whole_leaves_nothing) {
    NodeOfProcesses node;
    RankProcess first(node);
    std::string job = first.job_dir;
    cr_assert_gt(first.reaper, 0, "a reaper was started");
    cr_assert(exists(job + "/root" + node.fx.path("pkg.libs/libx.so.1")), "the mirror was made");
    first.kill();
    cr_expect(within(kDeadline, [&] { return !exists(job); }), "the reaper removed %s",
              job.c_str());
    cr_expect(within(kDeadline, [&] { return process_gone(first.reaper); }), "and ended");
    cr_expect_eq(node.jobs_left(), 0);
}

Test(mirror, the_reaper_waits_for_every_rank) {
    NodeOfProcesses node;
    RankProcess first(node);
    RankProcess second(node, first.job_dir);
    std::string job = first.job_dir;
    first.kill();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    cr_expect(exists(job + "/root" + node.fx.path("pkg/ext.so")), "the second rank holds it");
    cr_expect_not(process_gone(first.reaper), "the reaper waits");
    second.kill();
    cr_expect(within(kDeadline, [&] { return !exists(job); }), "gone with the last rank");
    cr_expect(within(kDeadline, [&] { return process_gone(first.reaper); }));
    cr_expect_eq(node.jobs_left(), 0);
}

Test(mirror, the_reaper_holds_no_inherited_descriptor) {
    NodeOfProcesses node;
    // Like a launcher's pipe on the ranks' stdout: it waits for EOF on it.
    int probe[2];
    cr_assert_eq(pipe(probe), 0);
    RankProcess first(node);
    close(probe[1]);
    NodeMirror held; // keeps the reaper waiting
    std::string error;
    cr_assert(held.join(first.job_dir, error), "%s", error.c_str());
    first.exit_without_leaving();
    struct pollfd p = {probe[0], POLLIN, 0};
    cr_expect_eq(poll(&p, 1, static_cast<int>(kDeadline * 1000)), 1);
    char c = 0;
    cr_expect_eq(read(probe[0], &c, 1), 0, "EOF: the reaper does not hold the write end");
    close(probe[0]);
    cr_expect_not(process_gone(first.reaper), "while the reaper still waits");
    // Its one descriptor: its own of the job directory; its own session.
    std::string fds = "/proc/" + std::to_string(first.reaper) + "/fd";
    auto only_the_job = [&] {
        std::vector<std::string> targets;
        DIR* dir = opendir(fds.c_str());
        while (struct dirent* d = dir ? readdir(dir) : nullptr) {
            if (d->d_name[0] == '.') continue;
            char target[4096] = {};
            if (readlink((fds + "/" + d->d_name).c_str(), target, sizeof target - 1) > 0)
                targets.emplace_back(target);
        }
        if (dir) closedir(dir);
        return targets.size() == 1 && targets[0] == first.job_dir;
    };
    cr_expect(within(kDeadline, only_the_job), "%s holds only the job directory", fds.c_str());
    cr_expect_eq(getsid(first.reaper), first.reaper);
    held.leave();
    cr_expect(within(kDeadline, [&] { return !exists(first.job_dir); }));
    cr_expect(within(kDeadline, [&] { return process_gone(first.reaper); }));
}

Test(mirror, after_every_rank_left_nothing_stays) {
    for (bool first_leaves_first : {true, false}) {
        NodeOfProcesses node;
        RankProcess first(node);
        RankProcess second(node, first.job_dir);
        std::string job = first.job_dir;
        RankProcess& earlier = first_leaves_first ? first : second;
        RankProcess& later = first_leaves_first ? second : first;
        earlier.leave();
        cr_expect(exists(job), "the other rank holds it");
        later.leave();
        cr_expect(within(kDeadline, [&] { return !exists(job); }));
        cr_expect(within(kDeadline, [&] { return process_gone(first.reaper); }),
                  "the reaper ended too");
        cr_expect_eq(node.jobs_left(), 0);
    }
}
