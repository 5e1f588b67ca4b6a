#include "loader/mirror.hpp"

#include "base/real.hpp"
#include "base/text.hpp"
#include "loader/elf.hpp"
#include "loader/reaper.hpp"

#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <map>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <tuple>
#include <unistd.h>
#include <vector>

namespace pyimport {

namespace {

constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
// A directory named new-* is a job's directory being made; past this age
// its maker is taken to have died.
constexpr time_t kUnfinishedAge = 600;

std::string user_directory_name() {
    return "pyimport-" + std::to_string(static_cast<unsigned>(geteuid()));
}

// A directory that is the effective user's and closed to everyone else.
bool is_private_directory(int fd) {
    struct stat st {};
    return REAL(fstat)(fd, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid() &&
           (st.st_mode & 077) == 0;
}

bool write_all(int fd, const char* data, size_t size) {
    while (size > 0) {
        ssize_t n = ::write(fd, data, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        data += n;
        size -= static_cast<size_t>(n);
    }
    return true;
}

std::string_view parent_of(std::string_view canonical) {
    size_t slash = canonical.rfind('/');
    return slash == 0 ? std::string_view("/") : canonical.substr(0, slash);
}

std::string child_of(std::string_view dir, std::string_view name) {
    std::string out(dir);
    if (out.back() != '/') out += '/';
    out += name;
    return out;
}

// The names in an open directory but "." and "..", read through a
// descriptor of its own (`dirfd` stays open and unread).
std::vector<std::string> names_in(int dirfd) {
    std::vector<std::string> names;
    int fd = REAL(openat)(dirfd, ".", kDirFlags);
    DIR* dir = fd >= 0 ? fdopendir(fd) : nullptr;
    if (!dir) {
        if (fd >= 0) REAL(close)(fd);
        return names;
    }
    while (struct dirent64* d = REAL(readdir64)(dir))
        if (std::strcmp(d->d_name, ".") != 0 && std::strcmp(d->d_name, "..") != 0)
            names.emplace_back(d->d_name);
    REAL(closedir)(dir);
    return names;
}

bool make_directory(const std::string& path) {
    return REAL(mkdir)(path.c_str(), 0700) == 0 || errno == EEXIST;
}

} // namespace

int open_user_directory(const std::string& base, std::string& error) {
    int base_fd = REAL(open)(base.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (base_fd < 0) return error = base + ": " + std::strerror(errno), -1;
    std::string name = user_directory_name();
    if (REAL(mkdirat)(base_fd, name.c_str(), 0700) != 0 && errno != EEXIST) {
        error = base + "/" + name + ": " + std::strerror(errno);
        REAL(close)(base_fd);
        return -1;
    }
    int fd = REAL(openat)(base_fd, name.c_str(), kDirFlags);
    int saved = errno;
    REAL(close)(base_fd);
    if (fd < 0) {
        error = base + "/" + name + ": " +
                (saved == ELOOP || saved == ENOTDIR ? "not a directory" : std::strerror(saved));
        return -1;
    }
    if (!is_private_directory(fd)) {
        error = base + "/" + name + " is not a directory private to this user";
        REAL(close)(fd);
        return -1;
    }
    return fd;
}

bool NodeMirror::remove_tree(int dirfd, const char* name) {
    if (REAL(unlinkat)(dirfd, name, 0) == 0 || errno == ENOENT) return true;
    if (errno != EISDIR && errno != EPERM) return false;
    int fd = REAL(openat)(dirfd, name, kDirFlags);
    if (fd < 0) return false;
    bool ok = true;
    for (const std::string& n : names_in(fd))
        ok = remove_tree(fd, n.c_str()) && ok;
    REAL(close)(fd);
    return REAL(unlinkat)(dirfd, name, AT_REMOVEDIR) == 0 && ok;
}

int remove_abandoned_jobs(int user_fd) {
    int removed = 0;
    for (const std::string& name : names_in(user_fd)) {
        // job-: a job's mirror; ld-: the audit library's directory (audit/audit.cpp).
        if (!name.starts_with("job-") && !name.starts_with("new-") && !name.starts_with("ld-"))
            continue;
        int fd = REAL(openat)(user_fd, name.c_str(), kDirFlags);
        if (fd < 0) continue;
        bool abandoned = false;
        if (name[0] == 'j') {
            // Every process of a running job holds a shared lock on it.
            abandoned = flock(fd, LOCK_EX | LOCK_NB) == 0;
        } else if (name[0] == 'l') {
            // The audit library's: its processes hold no lock for moments at
            // start (electing the leader), so an old one only.
            struct stat st {};
            abandoned = REAL(fstat)(fd, &st) == 0 && st.st_mtime + kUnfinishedAge < time(nullptr) &&
                        flock(fd, LOCK_EX | LOCK_NB) == 0;
        } else {
            struct stat st {};
            abandoned = REAL(fstat)(fd, &st) == 0 && st.st_mtime + kUnfinishedAge < time(nullptr);
        }
        REAL(close)(fd);
        if (abandoned && NodeMirror::remove_tree(user_fd, name.c_str())) ++removed;
    }
    return removed;
}

bool NodeMirror::create(const std::string& base, const Snapshot& snapshot, std::string& error) {
    int user_fd = open_user_directory(base, error);
    if (user_fd < 0) return false;
    remove_abandoned_jobs(user_fd);

    uint64_t random = 0;
    if (getrandom(&random, sizeof random, GRND_NONBLOCK) != sizeof random)
        random = static_cast<uint64_t>(time(nullptr)) * 2654435761u;
    char suffix[64];
    std::snprintf(suffix, sizeof suffix, "%d-%016llx", static_cast<int>(getpid()),
                  static_cast<unsigned long long>(random));
    std::string made = std::string("new-") + suffix;
    std::string name = std::string("job-") + suffix;
    std::string user_path = base + "/" + user_directory_name();
    int fd = -1, files_fd = -1;
    auto fail = [&](const std::string& why) {
        error = why;
        if (files_fd >= 0) REAL(close)(files_fd);
        if (fd >= 0) REAL(close)(fd);
        remove_tree(user_fd, made.c_str());
        remove_tree(user_fd, name.c_str());
        REAL(close)(user_fd);
        return false;
    };
    if (REAL(mkdirat)(user_fd, made.c_str(), 0700) != 0)
        return fail(user_path + ": " + std::strerror(errno));
    fd = REAL(openat)(user_fd, made.c_str(), kDirFlags);
    if (fd < 0 || flock(fd, LOCK_SH) != 0) return fail(user_path + ": " + std::strerror(errno));
    struct statvfs vfs {};
    if (fstatvfs(fd, &vfs) == 0 && (vfs.f_flag & ST_NOEXEC))
        return fail(base + " is mounted noexec: libraries cannot be mapped from it");
    // Before any file is written: a job killed from here on leaves nothing.
    reaper_pid_ = start_reaper(user_path, made, name, fd);
    if (REAL(mkdirat)(fd, "files", 0700) != 0 || REAL(mkdirat)(fd, "root", 0700) != 0 ||
        (files_fd = REAL(openat)(fd, "files", kDirFlags)) < 0)
        return fail(user_path + ": " + std::strerror(errno));
    uint64_t bytes = 0;
    // One copy per file (hard links share it), so the loader sees one inode
    // wherever the filesystem has one.
    copies_ = library_copies(snapshot);
    for (const auto& [i, copy] : copies_) {
        if (i != copy) continue;
        const Entry& e = snapshot.entry(i);
        std::string file = std::to_string(i);
        int out = REAL(openat)(files_fd, file.c_str(),
                               O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0500);
        bool ok = out >= 0 && write_all(out, snapshot.content(i), e.content_len);
        int saved = errno;
        if (out >= 0) REAL(close)(out);
        if (!ok)
            return fail("writing " + std::to_string(bytes + e.content_len) +
                        " bytes of libraries to " + base + ": " + std::strerror(saved));
        bytes += e.content_len;
    }
    REAL(close)(files_fd);
    files_fd = -1;
    written_bytes_ = bytes;
    // Visible to other jobs' clean-up only now, locked.
    if (REAL(renameat)(user_fd, made.c_str(), user_fd, name.c_str()) != 0)
        return fail(user_path + ": " + std::strerror(errno));
    REAL(close)(user_fd);
    hold(fd, user_path + "/" + name);
    return true;
}

bool NodeMirror::join(const std::string& job_dir, std::string& error) {
    size_t slash = job_dir.rfind('/');
    size_t user_slash = slash == std::string::npos ? slash : job_dir.rfind('/', slash - 1);
    if (user_slash == std::string::npos || user_slash == 0)
        return error = job_dir + ": not a job directory", false;
    std::string base = job_dir.substr(0, user_slash);
    std::string user_name = job_dir.substr(user_slash + 1, slash - user_slash - 1);
    if (user_name != user_directory_name())
        return error = job_dir + ": made by another user", false;
    int user_fd = open_user_directory(base, error);
    if (user_fd < 0) return false;
    int fd = REAL(openat)(user_fd, job_dir.c_str() + slash + 1, kDirFlags);
    int saved = errno;
    REAL(close)(user_fd);
    if (fd < 0) return error = job_dir + ": " + std::strerror(saved), false;
    if (!is_private_directory(fd) || flock(fd, LOCK_SH) != 0) {
        REAL(close)(fd);
        return error = job_dir + " is not a directory private to this user", false;
    }
    hold(fd, job_dir);
    return true;
}

void NodeMirror::hold(int fd, std::string job_dir) {
    job_fd_ = fd;
    job_dir_ = std::move(job_dir);
    root_ = job_dir_ + "/root";
}

void NodeMirror::leave() {
    if (job_fd_ < 0) return;
    // The upgrade succeeds only when no other process holds the directory.
    // (A failed upgrade drops this process's shared lock: harmless, it leaves.)
    if (flock(job_fd_, LOCK_EX | LOCK_NB) == 0) {
        size_t slash = job_dir_.rfind('/');
        int user_fd = REAL(open)(job_dir_.substr(0, slash).c_str(), kDirFlags);
        if (user_fd >= 0) {
            remove_tree(user_fd, job_dir_.c_str() + slash + 1);
            REAL(close)(user_fd);
        }
    }
    REAL(close)(job_fd_);
    job_fd_ = -1;
}

NodeMirror::~NodeMirror() {
    leave();
}

uint32_t NodeMirror::materialise(const Tree& tree, std::string_view path) const {
    uint32_t library = kNoEntry;
    return job_fd_ >= 0 && follow_in_mirror(tree, path, &library) ? library : kNoEntry;
}

bool NodeMirror::contained(const Tree& tree, std::string_view path) const {
    return follow_in_mirror(tree, path, nullptr);
}

// The kernel's walk of root() + path, step by step through the snapshot. With
// `library`, each step is made in the mirror, and the walk must end on a
// cached library, whose entry it sets. Without, it answers whether the
// kernel's walk in the mirror stays inside root(): ".." at "/" would not (the
// mirror's "/" has a parent), and a step the snapshot cannot answer might not.
bool NodeMirror::follow_in_mirror(const Tree& tree, std::string_view path,
                                  uint32_t* library) const {
    bool create = library != nullptr;
    if (path.empty() || path[0] != '/') return false;
    const Snapshot& snapshot = tree.snapshot();
    // Components still to walk, last first; symlink targets are pushed on.
    std::vector<std::string> pending;
    auto push_components = [&pending](std::string_view p) {
        std::vector<std::string_view> parts = split(p, '/');
        for (auto part = parts.rbegin(); part != parts.rend(); ++part)
            if (!part->empty()) pending.emplace_back(*part);
    };
    push_components(path);
    std::string real = "/"; // canonical: where the walk stands
    int links = 0;
    while (!pending.empty()) {
        std::string name = std::move(pending.back());
        pending.pop_back();
        if (name == ".") continue;
        if (name == "..") {
            if (real == "/") return false; // out of the mirror
            real = std::string(parent_of(real));
            continue;
        }
        std::string next = child_of(real, name);
        Position above;
        if (tree.locate(next, above) && above.entry == kNoEntry) { // an ancestor of the roots
            if (create && !make_directory(root_ + next)) return false;
            real = std::move(next);
            continue;
        }
        Resolution r = tree.resolve(Position{}, next, false);
        // Absent here: the kernel stops, in the mirror too (it holds less).
        if (r.kind == Resolution::Failed) return !create;
        if (r.kind != Resolution::Found) return false;
        const Entry& e = snapshot.entry(r.entry);
        if (e.flags & kNoStat) return false;
        std::string local = root_ + next;
        if (S_ISDIR(e.st.mode)) {
            if (create && !make_directory(local)) return false;
            real = std::move(next);
        } else if (S_ISLNK(e.st.mode)) {
            if (++links > 40) return !create; // ELOOP
            std::string target(snapshot.link_target(r.entry));
            if (create) {
                std::string local_target = target[0] == '/' ? root_ + target : target;
                if (REAL(symlink)(local_target.c_str(), local.c_str()) != 0 && errno != EEXIST)
                    return false;
            }
            if (target[0] == '/') real.assign(1, '/'); // not = "/": GCC 12 PR 105329
            push_components(target);
        } else if (!create) {
            return true; // the end, or ENOTDIR
        } else if (S_ISREG(e.st.mode)) {
            if (!pending.empty() || !(e.flags & kHasContent) || !is_library_name(name))
                return false;
            std::string copy = job_dir_ + "/files/" + std::to_string(copy_of(snapshot, r.entry));
            if (REAL(link)(copy.c_str(), local.c_str()) != 0 && errno != EEXIST) return false;
            *library = r.entry;
            return true;
        } else {
            return false;
        }
    }
    return !create; // ended on a directory
}

uint32_t NodeMirror::copy_of(const Snapshot& snapshot, uint32_t entry) const {
    std::lock_guard lock(copies_mutex_);
    if (copies_.empty()) copies_ = library_copies(snapshot);
    auto it = copies_.find(entry);
    return it == copies_.end() ? entry : it->second;
}

std::unordered_map<uint32_t, uint32_t> library_copies(const Snapshot& snapshot) {
    std::map<std::tuple<uint32_t, uint32_t, uint64_t>, uint32_t> first;
    std::unordered_map<uint32_t, uint32_t> copies;
    for (uint32_t i = snapshot.root_count(); i < snapshot.entry_count(); ++i) {
        const Entry& e = snapshot.entry(i);
        if (!(e.flags & kHasContent) || !is_library_name(snapshot.name(i))) continue;
        auto key = std::make_tuple(e.st.dev_major, e.st.dev_minor, e.st.ino);
        copies[i] = first.emplace(key, i).first->second;
    }
    return copies;
}

} // namespace pyimport
