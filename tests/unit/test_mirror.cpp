// The node-local mirror: its layout (the way to a library, symlinks, one copy
// per file), the private directories, removal by the last process and of
// abandoned jobs, against libraries gcc builds for each test.
#include "library_fixture.hpp"
#include "loader/mirror.hpp"

#include <algorithm>
#include <dlfcn.h>
#include <sys/file.h>
#include <sys/stat.h>

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

    // Jobs left behind: one nobody holds (killed), one held, one being made.
    std::string user = w.node->user_dir();
    for (const char* name : {"job-1-dead", "job-2-alive", "new-3-young"})
        cr_assert_eq(mkdir((user + "/" + name).c_str(), 0700), 0);
    int held = open((user + "/job-2-alive").c_str(), O_RDONLY | O_DIRECTORY);
    cr_assert_eq(flock(held, LOCK_SH), 0);
    int user_fd = open(user.c_str(), O_RDONLY | O_DIRECTORY);
    cr_expect_eq(remove_abandoned_jobs(user_fd), 1);
    cr_expect_neq(stat((user + "/job-1-dead").c_str(), &st), 0);
    cr_expect_eq(stat((user + "/job-2-alive").c_str(), &st), 0);
    cr_expect_eq(stat((user + "/new-3-young").c_str(), &st), 0);
    close(held);
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
