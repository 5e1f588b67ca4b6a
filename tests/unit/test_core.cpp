// The core's answers (serve/): the descriptor table, directory streams,
// memory files and access(), each compared with what the real libc says on
// the same files. Permission checks run in forked children that drop root
// (root ignores file modes).
#include "base/config.hpp"
#include "base/real.hpp"
#include "core_fixture.hpp"
#include "fixture.hpp"
#include "image/image.hpp"
#include "image/shared_image.hpp"
#include "serve/core.hpp"

#include <cerrno>
#include <criterion/criterion.h>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <memory>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace pyimport;

namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
constexpr uid_t kOtherUser = 1000;
constexpr gid_t kGroup = 4242;               // a group the unprivileged child is in
constexpr gid_t kBigBase = 100000;           // 300 groups from here ...
constexpr gid_t kBigMember = kBigBase + 150; // ... including this one
constexpr int kBigCount = 300;

BuildOptions core_options(const Fixture& fx) {
    BuildOptions o = fixture_options(fx);
    o.content_suffixes = {".py", ".pyc"};
    o.stat_suffixes = {"*"}; // every file's stat, whatever its name
    return o;
}

uint32_t entry_of(Core& core, const std::string& path) {
    Resolution r = core.tree().resolve(Position{}, path, false);
    cr_assert_eq(r.kind, Resolution::Found, "%s not in the snapshot", path.c_str());
    return r.entry;
}

int open_descriptors() {
    DIR* d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    while (struct dirent* e = readdir(d))
        if (e->d_name[0] != '.') ++n;
    closedir(d);
    return n;
}

// The number the next open() would return.
int lowest_free_descriptor() {
    int fd = open("/", O_PATH | O_CLOEXEC);
    cr_assert_geq(fd, 0);
    close(fd);
    return fd;
}

bool descriptor_open(int fd) {
    return fcntl(fd, F_GETFD) >= 0;
}

// Runs `body` in a forked child; its exit status is the number of mismatches
// (each printed on stderr by the child). Criterion's asserts are not used in
// the child.
template <typename F> void in_child(const char* what, F body) {
    fflush(nullptr);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int mismatches = body();
        fflush(nullptr);
        _exit(mismatches > 100 ? 100 : mismatches);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "%s: child did not exit (status %d)", what, status);
    cr_expect_eq(WEXITSTATUS(status), 0, "%s: %d mismatches (see stderr)", what,
                 WEXITSTATUS(status));
}

// Becomes an unprivileged user: the supplementary groups, then the gid, then
// the uid (the order the kernel requires). False with a message on failure.
bool drop_to(const std::vector<gid_t>& groups, gid_t gid, uid_t uid) {
    if (setgroups(groups.size(), groups.data()) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
        std::fprintf(stderr, "cannot drop privileges: %s\n", std::strerror(errno));
        return false;
    }
    return true;
}

const char* flags_name(int flags) {
    switch (flags) {
    case 0:
        return "0";
    case AT_EACCESS:
        return "AT_EACCESS";
    case AT_SYMLINK_NOFOLLOW:
        return "AT_SYMLINK_NOFOLLOW";
    default:
        return "AT_EACCESS|AT_SYMLINK_NOFOLLOW";
    }
}

// access_at() against the real access()/faccessat() on the same path:
// 0 if they agree, else 1 with a message. Never uses Criterion (may run in
// a child).
int compare_access(Core& core, const std::string& path, int mode, int flags) {
    errno = 0;
    int rc =
        flags == 0 ? access(path.c_str(), mode) : faccessat(AT_FDCWD, path.c_str(), mode, flags);
    int real_errno = rc == 0 ? 0 : errno;
    Answer a = core.access_at(AT_FDCWD, path.c_str(), mode, flags);
    bool agree = a.served && (rc == 0 ? a.value == 0 : (a.value == -1 && a.error == real_errno));
    if (agree) return 0;
    std::fprintf(stderr,
                 "access(%s, mode %d, %s) as uid %d/%d gid %d/%d: real %d (%s), served %s %ld "
                 "(%s)\n",
                 path.c_str(), mode, flags_name(flags), getuid(), geteuid(), getgid(), getegid(),
                 rc, std::strerror(real_errno), a.served ? "yes" : "no (forwarded)", a.value,
                 std::strerror(a.error));
    return 1;
}

// Every mode and flag combination access_at serves, on every path.
int compare_access_all(Core& core, const std::vector<std::string>& paths) {
    int mismatches = 0;
    for (const std::string& path : paths)
        for (int mode : {F_OK, R_OK, X_OK, R_OK | X_OK})
            for (int flags : {0, AT_EACCESS, AT_SYMLINK_NOFOLLOW, AT_EACCESS | AT_SYMLINK_NOFOLLOW})
                mismatches += compare_access(core, path, mode, flags);
    return mismatches;
}

// Files and directories of every mode and owner under <root>/perm, and
// symlinks to some; returns their paths. The root is opened to others so that
// an unprivileged user can walk to them.
std::vector<std::string> make_permission_tree(const Fixture& fx) {
    cr_assert_eq(chmod(fx.root.c_str(), 0755), 0);
    fx.dir("perm");
    cr_assert_eq(chmod(fx.path("perm").c_str(), 0755), 0);
    std::vector<std::string> paths;
    const unsigned modes[] = {0600, 0640, 0644, 0700, 0755, 0604, 0060, 0000,
                              0711, 0750, 0705, 0070, 0007, 0444, 0111};
    const std::pair<uid_t, gid_t> owners[] = {
        {0, 0},       {kNobody, kNogroup},  {kOtherUser, kOtherUser}, {0, kGroup},
        {kNobody, 0}, {kOtherUser, kGroup}, {0, kBigMember},          {0, kBigMember + 1}};
    for (auto [uid, gid] : owners)
        for (unsigned mode : modes)
            for (bool directory : {false, true}) {
                char name[64];
                std::snprintf(name, sizeof name, "perm/%c%04o_%u_%u", directory ? 'd' : 'f', mode,
                              uid, gid);
                std::string path = fx.path(name);
                if (directory)
                    fx.dir(name);
                else
                    fx.file(name, "data\n");
                cr_assert_eq(chown(path.c_str(), uid, gid), 0);
                cr_assert_eq(chmod(path.c_str(), mode), 0);
                paths.push_back(path);
            }
    for (const char* target :
         {"f0600_0_0", "f0755_0_0", "f0640_0_4242", "d0700_0_0", "d0755_65534_65534", "missing"}) {
        std::string link = std::string("perm/l_") + target;
        fx.link(target, link);
        paths.push_back(fx.path(link));
    }
    for (const char* rel :
         {"pkg", "pkg/mod.py", "pkg/to_sub", "pkg/to_sub/deep.py", "pkg/sub/up", "pkg/dangling",
          "pkg/loop_a", "pkg/loop_a/x", "pkg/mod.py/x", "pkg/absent", "abs_pkg/mod.py"})
        paths.push_back(fx.path(rel));
    return paths;
}

int failing_dup3(int, int, int) {
    errno = EMFILE;
    return -1;
}

} // namespace

// ------------------------------------------------------------ descriptor table

Test(fd_table, set_lookup_clear) {
    Fixture fx;
    auto core = make_core(core_options(fx));
    FdTable& fds = core->fds();
    uint32_t mod = entry_of(*core, fx.path("pkg/mod.py"));

    Answer a = core->open_at(AT_FDCWD, fx.path("pkg/mod.py").c_str(), O_RDONLY | O_CLOEXEC);
    cr_assert(a.served);
    int fd = static_cast<int>(a.value);
    cr_expect(fds.maybe_served(fd));
    cr_expect_eq(fds.lookup(fd), mod);

    // Outside the table: never served, never a crash.
    for (int bad :
         {-1, AT_FDCWD, static_cast<int>(fds.capacity()), static_cast<int>(fds.capacity()) + 5}) {
        cr_expect_not(fds.maybe_served(bad));
        cr_expect_eq(fds.lookup(bad), kNoEntry);
        fds.set(bad, mod, 1);
        fds.clear(bad);
        fds.copy(fd, bad);
        cr_expect_eq(fds.lookup(bad), kNoEntry);
    }
    cr_expect_eq(fds.lookup(fd), mod);

    fds.clear(fd);
    cr_expect_not(fds.maybe_served(fd));
    cr_expect_eq(fds.lookup(fd), kNoEntry);

    // set() with the memory file's inode makes it served again.
    struct stat st {};
    cr_assert_eq(fstat(fd, &st), 0);
    fds.set(fd, mod, st.st_ino);
    cr_expect_eq(fds.lookup(fd), mod);
    // The wrong inode does not match.
    fds.set(fd, mod, st.st_ino + 1);
    cr_expect_eq(fds.lookup(fd), kNoEntry);
    close(fd);
}

Test(fd_table, only_memory_files_match) {
    Fixture fx;
    auto core = make_core(core_options(fx));
    FdTable& fds = core->fds();
    // A real file with the right inode in the slot: another device, no match.
    int fd = open(fx.path("pkg/mod.py").c_str(), O_RDONLY | O_CLOEXEC);
    cr_assert_geq(fd, 0);
    struct stat st {};
    cr_assert_eq(fstat(fd, &st), 0);
    fds.set(fd, entry_of(*core, fx.path("pkg/mod.py")), st.st_ino);
    cr_expect(fds.maybe_served(fd));
    cr_expect_eq(fds.lookup(fd), kNoEntry);
    close(fd);
    // A slot whose descriptor is closed: no match.
    cr_expect_eq(fds.lookup(fd), kNoEntry);
}

Test(fd_table, clear_range) {
    Fixture fx;
    auto core = make_core(core_options(fx));
    FdTable& fds = core->fds();
    uint32_t mod = entry_of(*core, fx.path("pkg/mod.py"));
    std::vector<int> fd;
    for (int i = 0; i < 4; ++i) {
        Answer a = core->open_at(AT_FDCWD, fx.path("pkg/mod.py").c_str(), O_RDONLY);
        cr_assert(a.served);
        fd.push_back(static_cast<int>(a.value));
    }
    for (int f : fd)
        cr_expect_eq(fds.lookup(f), mod);
    fds.clear_range(fd[1], fd[2]);
    cr_expect_eq(fds.lookup(fd[0]), mod);
    cr_expect_eq(fds.lookup(fd[1]), kNoEntry);
    cr_expect_eq(fds.lookup(fd[2]), kNoEntry);
    cr_expect_eq(fds.lookup(fd[3]), mod);
    // close_range(first, ~0U): a range past the table's end.
    fds.clear_range(fd[3], ~0u);
    cr_expect_eq(fds.lookup(fd[3]), kNoEntry);
    cr_expect_eq(fds.lookup(fd[0]), mod);
    for (int f : fd)
        close(f);
}

Test(fd_table, copy_follows_dup) {
    Fixture fx;
    auto core = make_core(core_options(fx));
    FdTable& fds = core->fds();
    uint32_t mod = entry_of(*core, fx.path("pkg/mod.py"));
    Answer a = core->open_at(AT_FDCWD, fx.path("pkg/mod.py").c_str(), O_RDONLY);
    cr_assert(a.served);
    int fd = static_cast<int>(a.value);
    int copy = dup(fd);
    cr_assert_geq(copy, 0);
    cr_expect_eq(fds.lookup(copy), kNoEntry); // not yet told
    fds.copy(fd, copy);
    cr_expect_eq(fds.lookup(copy), mod);
    // The copy survives the original's close, as the kernel's dup does.
    close(fd);
    fds.clear(fd);
    cr_expect_eq(fds.lookup(copy), mod);
    // Copying an unserved descriptor over a served slot clears it.
    int plain = open(fx.path("pkg/mod.py").c_str(), O_RDONLY);
    cr_assert_geq(plain, 0);
    cr_assert_eq(dup2(plain, copy), copy);
    fds.copy(plain, copy);
    cr_expect_not(fds.maybe_served(copy));
    cr_expect_eq(fds.lookup(copy), kNoEntry);
    close(plain);
    close(copy);
}

Test(fd_table, a_descriptor_closed_behind_its_back_and_reused_never_matches) {
    Fixture fx;
    auto core = make_core(core_options(fx));
    FdTable& fds = core->fds();
    uint32_t mod = entry_of(*core, fx.path("pkg/mod.py"));
    Answer a = core->open_at(AT_FDCWD, fx.path("pkg/mod.py").c_str(), O_RDONLY);
    cr_assert(a.served);
    int fd = static_cast<int>(a.value);
    cr_assert_eq(fds.lookup(fd), mod);

    // Closed without the table knowing (a raw close), the number reused by an
    // unrelated real file.
    close(fd);
    int real = open(fx.path("pkg/sub/deep.py").c_str(), O_RDONLY);
    cr_assert_eq(real, fd, "the number was not reused");
    cr_expect(fds.maybe_served(real));        // the stale slot is still there ...
    cr_expect_eq(fds.lookup(real), kNoEntry); // ... but does not match
    close(real);

    // Reused by another memory file (same device, another inode).
    int other = memfd_create("unrelated", MFD_CLOEXEC);
    cr_assert_eq(other, fd, "the number was not reused");
    cr_expect_eq(fds.lookup(other), kNoEntry);
    close(other);

    // Reused by a memory file the core serves for another entry: that one.
    Answer b = core->open_at(AT_FDCWD, fx.path("pkg/__init__.py").c_str(), O_RDONLY);
    cr_assert(b.served);
    cr_assert_eq(b.value, fd);
    cr_expect_eq(fds.lookup(fd), entry_of(*core, fx.path("pkg/__init__.py")));
    close(fd);
}

// ---------------------------------------------------------------- memory files

Test(memory_file, holds_the_bytes_read_only_on_the_lowest_descriptor) {
    Fixture fx;
    auto core = make_core(core_options(fx));
    for (const char* rel :
         {"pkg/mod.py", "pkg/empty.py", "pkg/__pycache__/__init__.cpython-311.pyc"}) {
        std::string path = fx.path(rel);
        for (int flags : {O_RDONLY, O_RDONLY | O_CLOEXEC, O_RDONLY | O_NONBLOCK}) {
            int real = open(path.c_str(), flags);
            cr_assert_geq(real, 0);
            int real_fd_flags = fcntl(real, F_GETFD), real_fl = fcntl(real, F_GETFL);
            char real_bytes[64]{};
            ssize_t real_n = read(real, real_bytes, sizeof real_bytes);
            close(real);

            Answer a = core->open_at(AT_FDCWD, path.c_str(), flags);
            cr_assert(a.served, "%s", rel);
            int fd = static_cast<int>(a.value);
            cr_expect_eq(fd, real, "%s: descriptor %d, real open gave %d", rel, fd, real);
            cr_expect_eq(fcntl(fd, F_GETFD), real_fd_flags, "%s: F_GETFD", rel);
            cr_expect_eq(fcntl(fd, F_GETFL) & (O_ACCMODE | O_NONBLOCK),
                         real_fl & (O_ACCMODE | O_NONBLOCK), "%s: F_GETFL", rel);
            char bytes[64]{};
            ssize_t n = read(fd, bytes, sizeof bytes);
            cr_expect_eq(n, real_n, "%s", rel);
            cr_expect_eq(std::memcmp(bytes, real_bytes, sizeof bytes), 0, "%s", rel);
            cr_expect_lt(write(fd, "x", 1), 0, "%s: writable", rel);
            int seals = fcntl(fd, F_GET_SEALS);
            cr_expect_eq(seals, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
            close(fd);
        }
    }
}

// Defect: a failing dup3 in make_memory_file left the read-write memfd open.
Test(memory_file, a_failing_dup3_leaves_no_descriptor_and_forwards) {
    Fixture fx;
    auto core = make_core(core_options(fx));
    std::string path = fx.path("pkg/mod.py");
    int before = open_descriptors();
    cr_assert(real::substitute("dup3", reinterpret_cast<void*>(&failing_dup3)));
    Answer a = core->open_at(AT_FDCWD, path.c_str(), O_RDONLY | O_CLOEXEC);
    real::substitute("dup3", nullptr);
    int after = open_descriptors();
    cr_expect_not(a.served, "the open was served (descriptor %ld)", a.value);
    cr_expect_eq(after, before, "%d descriptors before the open, %d after", before, after);
    // Served again once dup3 works.
    Answer b = core->open_at(AT_FDCWD, path.c_str(), O_RDONLY | O_CLOEXEC);
    cr_expect(b.served);
    if (b.served) close(static_cast<int>(b.value));
    cr_expect_eq(open_descriptors(), before);
}

// ----------------------------------------------------------- directory streams

namespace {
struct Read {
    ino64_t ino;
    unsigned char type;
    unsigned short reclen;
    std::string name;
};

std::vector<Read> read_real(const std::string& path) {
    std::vector<Read> out;
    DIR* d = opendir(path.c_str());
    cr_assert_not_null(d);
    while (struct dirent64* e = readdir64(d))
        out.push_back({e->d_ino, e->d_type, e->d_reclen, e->d_name});
    closedir(d);
    return out;
}

DIR* open_served(Core& core, const std::string& path) {
    int error = 0;
    bool served = false;
    DIR* dir = core.open_dir(path.c_str(), error, served);
    cr_assert(served && dir, "%s: opendir not served (error %d)", path.c_str(), error);
    cr_assert(is_dir_stream(dir));
    return dir;
}
} // namespace

Test(dir_stream, reads_like_the_real_readdir) {
    Fixture fx;
    auto core = make_core(core_options(fx));
    for (const char* rel : {"", "pkg", "pkg/sub", "pkg/__pycache__", "pkg/to_sub"}) {
        std::string path = fx.path(rel);
        std::vector<Read> real = read_real(path);
        DIR* dir = open_served(*core, path);
        for (size_t i = 0; i < real.size(); ++i) {
            struct dirent64* e = dir_read(dir);
            cr_assert_not_null(e, "%s: ended after %zu of %zu", path.c_str(), i, real.size());
            cr_expect_str_eq(e->d_name, real[i].name.c_str(), "%s [%zu]", path.c_str(), i);
            cr_expect_eq(e->d_ino, real[i].ino, "%s/%s: d_ino", path.c_str(), e->d_name);
            cr_expect_eq(e->d_type, real[i].type, "%s/%s: d_type", path.c_str(), e->d_name);
            cr_expect_eq(e->d_reclen, real[i].reclen, "%s/%s: d_reclen", path.c_str(), e->d_name);
        }
        // The end, like readdir's: nullptr with errno unchanged.
        errno = 1234;
        cr_expect_null(dir_read(dir));
        cr_expect_eq(errno, 1234);
        cr_expect_null(dir_read(dir));
        cr_expect_eq(dir_close(dir), 0);
    }
}

Test(dir_stream, not_served_or_failed_like_opendir) {
    Fixture fx;
    auto core = make_core(core_options(fx));
    for (const char* rel :
         {"pkg/mod.py", "pkg/absent", "pkg/mod.py/x", "pkg/loop_a", "pkg/dangling"}) {
        std::string path = fx.path(rel);
        errno = 0;
        DIR* real = opendir(path.c_str());
        int real_errno = errno;
        cr_assert_null(real, "%s", rel);
        int error = 0;
        bool served = false;
        DIR* dir = core->open_dir(path.c_str(), error, served);
        cr_expect_null(dir, "%s", rel);
        cr_expect(served, "%s forwarded", rel);
        cr_expect_eq(error, real_errno, "%s: %s, real %s", rel, std::strerror(error),
                     std::strerror(real_errno));
    }
    // A real DIR* is not a served stream.
    DIR* real = opendir(fx.root.c_str());
    cr_assert_not_null(real);
    cr_expect_not(is_dir_stream(real));
    closedir(real);
}

Test(dir_stream, rewind_tell_seek_like_the_real_stream) {
    Fixture fx;
    auto core = make_core(core_options(fx));
    std::string path = fx.path("pkg");
    DIR* real = opendir(path.c_str());
    cr_assert_not_null(real);
    DIR* dir = open_served(*core, path);
    auto next_real = [&]() -> std::string {
        struct dirent64* e = readdir64(real);
        return e ? e->d_name : "<end>";
    };
    auto next_served = [&]() -> std::string {
        struct dirent64* e = dir_read(dir);
        return e ? e->d_name : "<end>";
    };
    size_t count = read_real(path).size();
    cr_assert_gt(count, 4u);
    // A position taken at every point of the stream leads back to it.
    std::vector<long> real_at, served_at;
    std::vector<std::string> names;
    for (size_t i = 0; i <= count; ++i) {
        real_at.push_back(telldir(real));
        served_at.push_back(dir_tell(dir));
        std::string name = next_real();
        cr_expect_eq(next_served(), name, "entry %zu", i);
        names.push_back(name);
    }
    cr_expect_eq(names.back(), "<end>");
    for (size_t i : {3u, 0u, 5u, static_cast<unsigned>(count), 1u}) {
        seekdir(real, real_at[i]);
        dir_seek(dir, served_at[i]);
        std::string name = next_real();
        cr_expect_eq(name, names[i]);
        cr_expect_eq(next_served(), name, "after seek to %zu", i);
        cr_expect_eq(next_served(), next_real(), "the one after seek to %zu", i);
    }
    rewinddir(real);
    dir_rewind(dir);
    for (size_t i = 0; i <= count; ++i)
        cr_expect_eq(next_served(), next_real(), "entry %zu after rewind", i);
    closedir(real);
    dir_close(dir);
}

Test(dir_stream, dirfd_is_the_real_directory_on_the_reserved_descriptor) {
    Fixture fx;
    auto core = make_core(core_options(fx));
    std::string path = fx.path("pkg/sub");
    DIR* real = opendir(path.c_str());
    cr_assert_not_null(real);
    int real_fd = dirfd(real);
    int real_fd_flags = fcntl(real_fd, F_GETFD), real_fl = fcntl(real_fd, F_GETFL);
    struct stat real_st {};
    cr_assert_eq(fstat(real_fd, &real_st), 0);
    closedir(real);

    int expected = lowest_free_descriptor();
    cr_expect_eq(expected, real_fd);
    int before = open_descriptors();
    DIR* dir = open_served(*core, path);
    // opendir takes a descriptor, as the real one does.
    cr_expect_eq(open_descriptors(), before + 1);
    cr_expect(descriptor_open(expected));
    cr_expect_neq(lowest_free_descriptor(), expected);

    // Reading does not need it; dirfd() makes it the real directory.
    cr_assert_not_null(dir_read(dir));
    int fd = dir_fd(dir);
    cr_expect_eq(fd, expected);
    cr_expect_eq(open_descriptors(), before + 1);
    struct stat st {};
    cr_assert_eq(fstat(fd, &st), 0);
    cr_expect_eq(st.st_ino, real_st.st_ino);
    cr_expect_eq(st.st_dev, real_st.st_dev);
    cr_expect(S_ISDIR(st.st_mode));
    cr_expect_eq(fcntl(fd, F_GETFD), real_fd_flags);
    cr_expect_eq(fcntl(fd, F_GETFL), real_fl, "F_GETFL %o, real %o", fcntl(fd, F_GETFL), real_fl);
    // *at calls on it are the kernel's.
    struct stat deep {};
    cr_expect_eq(fstatat(fd, "deep.py", &deep, 0), 0);
    // Asked again: the same descriptor, nothing opened.
    cr_expect_eq(dir_fd(dir), fd);
    cr_expect_eq(open_descriptors(), before + 1);
    // The stream reads on from where it was.
    cr_assert_not_null(dir_read(dir));

    cr_expect_eq(dir_close(dir), 0);
    cr_expect_not(descriptor_open(fd));
    cr_expect_eq(open_descriptors(), before);
}

Test(dir_stream, close_releases_the_descriptor_and_the_stream) {
    Fixture fx;
    auto core = make_core(core_options(fx));
    int before = open_descriptors();
    int expected = lowest_free_descriptor();
    DIR* first = open_served(*core, fx.path("pkg"));
    cr_expect_eq(dir_close(first), 0);
    cr_expect_eq(open_descriptors(), before);
    cr_expect_not(descriptor_open(expected));
    // The stream's slot is taken again by the next one.
    DIR* again = open_served(*core, fx.path("pkg/sub"));
    cr_expect_eq(again, first);
    cr_expect_eq(dir_fd(again), expected);
    DIR* second = open_served(*core, fx.path("pkg"));
    cr_expect_neq(second, again);
    cr_expect_eq(dir_close(again), 0);
    cr_expect_eq(dir_close(second), 0);
    cr_expect_eq(open_descriptors(), before);
}

// --------------------------------------------------------------------- access

Test(access, as_root_like_the_real_access) {
    Fixture fx;
    std::vector<std::string> paths = make_permission_tree(fx);
    auto core = make_core(core_options(fx));
    cr_expect_eq(compare_access_all(*core, paths), 0);
    // Relative to the working directory too.
    char cwd[4096];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    cr_assert_eq(chdir(fx.path("perm").c_str()), 0);
    int mismatches = compare_access_all(
        *core, {"f0600_0_0", "d0700_0_0", "l_missing", "../pkg/to_sub/deep.py", "./f0755_0_0/"});
    cr_assert_eq(chdir(cwd), 0);
    cr_expect_eq(mismatches, 0);
}

Test(access, write_and_unknown_flags_are_forwarded) {
    Fixture fx;
    auto core = make_core(core_options(fx));
    std::string path = fx.path("pkg/mod.py");
    cr_expect_not(core->access_at(AT_FDCWD, path.c_str(), W_OK, 0).served);
    cr_expect_not(core->access_at(AT_FDCWD, path.c_str(), R_OK | W_OK, 0).served);
    cr_expect_not(core->access_at(AT_FDCWD, path.c_str(), R_OK, AT_EMPTY_PATH).served);
    cr_expect_not(core->access_at(AT_FDCWD, "/proc/self/status", R_OK, 0).served);
}

Test(access, as_nobody_like_the_real_access) {
    Fixture fx;
    std::vector<std::string> paths = make_permission_tree(fx);
    auto core = make_core(core_options(fx));
    in_child("nobody, no other groups", [&] {
        if (!drop_to({}, kNogroup, kNobody)) return 100;
        return compare_access_all(*core, paths);
    });
    in_child("nobody in group 4242", [&] {
        if (!drop_to({kGroup}, kNogroup, kNobody)) return 100;
        return compare_access_all(*core, paths);
    });
    in_child("uid 1000, gid 4242, in group nogroup", [&] {
        if (!drop_to({kNogroup}, kGroup, kOtherUser)) return 100;
        return compare_access_all(*core, paths);
    });
    // Real and effective ids differ: access() checks the real ones,
    // AT_EACCESS the effective ones (still root here).
    in_child("real nobody, effective root", [&] {
        if (setgroups(0, nullptr) != 0 || setresgid(kNogroup, 0, 0) != 0 ||
            setresuid(kNobody, 0, 0) != 0)
            return 100;
        return compare_access_all(*core, paths);
    });
}

// Defect: getgroups into a fixed 256-entry array failed for a user in more
// groups, and access_at then ignored every supplementary group.
Test(access, a_user_in_300_groups) {
    Fixture fx;
    std::vector<std::string> paths = make_permission_tree(fx);
    auto core = make_core(core_options(fx));
    std::vector<gid_t> groups;
    for (int i = 0; i < kBigCount; ++i)
        groups.push_back(kBigBase + static_cast<gid_t>(i));
    std::string member_file = fx.path("perm/f0640_0_" + std::to_string(kBigMember));
    in_child("nobody in 300 groups", [&] {
        if (!drop_to(groups, kNogroup, kNobody)) return 100;
        if (getgroups(0, nullptr) != kBigCount) {
            std::fprintf(stderr, "not in %d groups\n", kBigCount);
            return 100;
        }
        // The file is root:G 0640 and G is one of the groups: readable.
        if (access(member_file.c_str(), R_OK) != 0) {
            std::fprintf(stderr, "%s: the real access() refuses\n", member_file.c_str());
            return 100;
        }
        int mismatches = compare_access(*core, member_file, R_OK, 0);
        mismatches += compare_access(*core, member_file, R_OK, AT_EACCESS);
        return mismatches + compare_access_all(*core, paths);
    });
}

// --------------------------------------------------------------- credentials

// Defect: credentials_hash() hashed no groups at all for more than 256.
Test(credentials, hash_covers_every_group) {
    std::vector<gid_t> a, b;
    for (int i = 0; i < kBigCount; ++i)
        a.push_back(kBigBase + static_cast<gid_t>(i));
    b = a;
    b[kBigCount / 2] = kBigBase + kBigCount + 7; // one group differs
    in_child("300 groups", [&] {
        int mismatches = 0;
        if (setgroups(a.size(), a.data()) != 0) return 100;
        uint64_t ha = credentials_hash();
        std::vector<gid_t> reversed(a.rbegin(), a.rend());
        if (setgroups(reversed.size(), reversed.data()) != 0) return 100;
        if (credentials_hash() != ha) {
            std::fprintf(stderr, "the order of the groups changes the hash\n");
            ++mismatches;
        }
        if (setgroups(b.size(), b.data()) != 0) return 100;
        uint64_t hb = credentials_hash();
        if (ha == hb) {
            std::fprintf(stderr, "two sets of %d groups that differ in one hash equal (%016llx)\n",
                         kBigCount, static_cast<unsigned long long>(ha));
            ++mismatches;
        }
        if (setgroups(0, nullptr) != 0) return 100;
        if (credentials_hash() == ha) {
            std::fprintf(stderr, "%d groups hash like none\n", kBigCount);
            ++mismatches;
        }
        // A few groups (within any fixed array) still count.
        if (setgroups(3, a.data()) != 0) return 100;
        uint64_t h3 = credentials_hash();
        if (setgroups(3, b.data() + kBigCount / 2 - 1) != 0) return 100;
        if (credentials_hash() == h3) {
            std::fprintf(stderr, "small group sets hash equal\n");
            ++mismatches;
        }
        return mismatches;
    });
}
