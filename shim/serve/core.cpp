// The answers (core.hpp): each call's resolution through the tree, then the
// stat, statx, access, readlink, open or opendir answer from the snapshot,
// or a forward; what was served and forwarded is counted in the stats.
#include "serve/core.hpp"

#include "base/credentials.hpp"

#include "base/real.hpp"
#include "serve/memory_file.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <vector>

namespace pyimport {

Core::Core(const Config& config, SharedImage image, Snapshot snapshot)
    : config_(config), image_(std::move(image)), snapshot_(snapshot), tree_(snapshot_),
      fds_(65536) {
    stats_.enable_paths(config.stats || !config.stats_file.empty());
    if (config.recheck) tree_.set_directory_check(directory_unchanged);
    memfd_dev();
}

// Forwarded and failed resolutions answer the same way for every call:
// counted, then forwarded, or failed with the resolution's errno.
Answer Core::settle(const Resolution& r, CallKind kind, const char* path) {
    if (r.kind == Resolution::Failed) {
        stats_.served(kind);
        return Answer::fail(r.error);
    }
    stats_.forwarded(kind, path);
    if (path && path[0] == '/') tree_.learn_outside(path, false);
    return Answer::forward();
}

const StatRecord& Core::record_of(const Resolution& r) const {
    return r.followed ? snapshot_.followed(r.entry) : snapshot_.entry(r.entry).st;
}

bool Core::base_for(int dirfd, const char* path, Position& base, std::string& cwd) {
    if (path[0] == '/') return true;
    if (dirfd == AT_FDCWD) {
        char buf[PATH_MAX];
        // The kernel's own answer (a system call, no filesystem traffic).
        long n = syscall(SYS_getcwd, buf, sizeof buf);
        if (n <= 0 || buf[0] != '/') return false; // unreachable or deleted cwd
        cwd.assign(buf);
        return tree_.locate(cwd, base);
    }
    uint32_t entry = fds_.lookup(dirfd);
    if (entry == kNoEntry) return false;
    base = Position{entry, {}};
    return true;
}

Resolution Core::lookup(int dirfd, const char* path, int at_flags, bool follow_last) {
    if (!path) return Resolution::forward();
    if (path[0] == '\0') {
        if (!(at_flags & AT_EMPTY_PATH)) return Resolution::failed(ENOENT);
        uint32_t entry = fds_.lookup(dirfd);
        return entry == kNoEntry ? Resolution::forward() : Resolution::found(entry);
    }
    Position base;
    std::string cwd;
    if (!base_for(dirfd, path, base, cwd)) return Resolution::forward();
    return tree_.resolve(base, path, follow_last);
}

Answer Core::stat_at(int dirfd, const char* path, int flags, struct stat* out) {
    if (flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT)) return Answer::forward();
    bool by_fd = path && path[0] == '\0' && (flags & AT_EMPTY_PATH);
    CallKind kind = by_fd ? CallKind::fstat : CallKind::stat;
    Resolution r = lookup(dirfd, path, flags, !(flags & AT_SYMLINK_NOFOLLOW));
    if (r.kind != Resolution::Found) return settle(r, kind, path);
    stats_.served(kind);
    to_stat(record_of(r), *out);
    return Answer::ok(0);
}

Answer Core::statx_at(int dirfd, const char* path, int flags, unsigned mask, struct statx* out) {
    const int known = AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT |
                      AT_STATX_SYNC_AS_STAT | AT_STATX_DONT_SYNC;
    if ((flags & ~known) || (mask & STATX__RESERVED)) return Answer::forward();
    Resolution r = lookup(dirfd, path, flags, !(flags & AT_SYMLINK_NOFOLLOW));
    if (r.kind != Resolution::Found) return settle(r, CallKind::stat, path);
    stats_.served(CallKind::stat);
    const StatRecord& s = record_of(r);
    std::memset(out, 0, sizeof *out);
    // The filesystem fills the birth time only when asked for it.
    // The kernel leaves out some fields that were not asked for; which ones
    // rank 0 measured on the same kernel.
    uint32_t returned = s.mask & (mask | snapshot_.header().statx_unrequested);
    bool btime = returned & STATX_BTIME;
    out->stx_mask = returned;
    out->stx_blksize = s.blksize;
    out->stx_attributes = s.attributes;
    out->stx_nlink = s.nlink;
    out->stx_uid = s.uid;
    out->stx_gid = s.gid;
    out->stx_mode = static_cast<uint16_t>(s.mode);
    out->stx_ino = s.ino;
    out->stx_size = s.size;
    out->stx_blocks = s.blocks;
    out->stx_attributes_mask = s.attributes_mask;
    out->stx_atime = {s.atime.sec, s.atime.nsec, 0};
    if (btime) out->stx_btime = {s.btime.sec, s.btime.nsec, 0};
    if (returned & STATX_CTIME) out->stx_ctime = {s.ctime.sec, s.ctime.nsec, 0};
    if (returned & STATX_MTIME) out->stx_mtime = {s.mtime.sec, s.mtime.nsec, 0};
    out->stx_rdev_major = s.rdev_major;
    out->stx_rdev_minor = s.rdev_minor;
    out->stx_dev_major = s.dev_major;
    out->stx_dev_minor = s.dev_minor;
    out->stx_mnt_id = s.mnt_id;
    return Answer::ok(0);
}

Answer Core::access_at(int dirfd, const char* path, int mode, int flags) {
    // Write permission depends on mount flags and more: ask the filesystem.
    if ((mode & ~(R_OK | X_OK)) || (flags & ~(AT_EACCESS | AT_SYMLINK_NOFOLLOW)))
        return Answer::forward();
    Resolution r = lookup(dirfd, path, flags, !(flags & AT_SYMLINK_NOFOLLOW));
    if (r.kind != Resolution::Found) return settle(r, CallKind::access, path);
    if (mode == F_OK) {
        stats_.served(CallKind::access);
        return Answer::ok(0);
    }
    const StatRecord& s = record_of(r);
    uid_t uid = (flags & AT_EACCESS) ? geteuid() : getuid();
    gid_t gid = (flags & AT_EACCESS) ? getegid() : getgid();
    unsigned granted;
    if (uid == 0) {
        // CAP_DAC_OVERRIDE: read always; execute if anyone may, or a directory.
        granted = R_OK | ((S_ISDIR(s.mode) || (s.mode & 0111)) ? X_OK : 0);
    } else {
        unsigned bits;
        if (uid == s.uid) {
            bits = (s.mode >> 6) & 7;
        } else {
            bool member = gid == s.gid;
            if (!member) {
                std::vector<gid_t> groups;
                if (!supplementary_groups(groups)) { // the kernel's own check, then
                    stats_.forwarded(CallKind::access, path);
                    return Answer::forward();
                }
                member = std::find(groups.begin(), groups.end(), s.gid) != groups.end();
            }
            bits = member ? (s.mode >> 3) & 7 : s.mode & 7;
        }
        granted = ((bits & 4) ? R_OK : 0) | ((bits & 1) ? X_OK : 0);
    }
    stats_.served(CallKind::access);
    return (static_cast<unsigned>(mode) & ~granted) ? Answer::fail(EACCES) : Answer::ok(0);
}

Answer Core::readlink_at(int dirfd, const char* path, char* buf, size_t size) {
    if (size == 0 || size > SSIZE_MAX) return Answer::forward();
    Resolution r = lookup(dirfd, path, 0, false);
    if (r.kind != Resolution::Found) return settle(r, CallKind::readlink, path);
    stats_.served(CallKind::readlink);
    if (!S_ISLNK(snapshot_.entry(r.entry).st.mode)) return Answer::fail(EINVAL);
    std::string_view target = snapshot_.link_target(r.entry);
    size_t n = target.size() < size ? target.size() : size;
    std::memcpy(buf, target.data(), n);
    return Answer::ok(static_cast<long>(n));
}

bool Core::real_path(const char* path, std::string& out) {
    if (!path || !*path) return false;
    Resolution r = lookup(AT_FDCWD, path, 0, true);
    if (r.kind != Resolution::Found || r.followed) {
        if (r.kind == Resolution::Forward) stats_.forwarded(CallKind::realpath, path);
        return false;
    }
    out = snapshot_.path(r.entry); // roots are canonical, names are the kernel's
    if (out.size() >= PATH_MAX) return false;
    stats_.served(CallKind::realpath);
    return true;
}

Answer Core::open_file(uint32_t entry, int flags) {
    const Entry& e = snapshot_.entry(entry);
    if (!(e.flags & kHasContent)) return Answer::forward();
    uint64_t ino = 0;
    int fd = make_memory_file(snapshot_.content(entry), e.content_len, flags, ino);
    if (fd < 0) return Answer::forward(); // out of descriptors or memory: let libc say
    if (static_cast<size_t>(fd) >= fds_.capacity()) {
        REAL(close)(fd);
        return Answer::forward();
    }
    fds_.set(fd, entry, ino);
    return Answer::ok(fd);
}

Answer Core::open_at(int dirfd, const char* path, int flags) {
    // Only plain reads are served; anything else (writes, O_PATH, O_TMPFILE,
    // O_DIRECT, ...) is the filesystem's business.
    // (O_NOATIME needs an ownership check: the filesystem's business too.)
    const int plain =
        O_ACCMODE | O_CLOEXEC | O_NOFOLLOW | O_DIRECTORY | O_NONBLOCK | O_NOCTTY | O_LARGEFILE;
    if ((flags & O_ACCMODE) != O_RDONLY || (flags & ~plain) || !path) {
        return Answer::forward();
    }
    Resolution r = lookup(dirfd, path, 0, !(flags & O_NOFOLLOW));
    if (r.kind != Resolution::Found) return settle(r, CallKind::open, path);
    uint32_t mode = record_of(r).mode;
    // The kernel checks O_DIRECTORY before O_NOFOLLOW's ELOOP.
    if ((flags & O_DIRECTORY) && !S_ISDIR(mode)) {
        stats_.served(CallKind::open);
        return Answer::fail(ENOTDIR);
    }
    if (S_ISLNK(mode)) { // only reached with O_NOFOLLOW
        stats_.served(CallKind::open);
        return Answer::fail(ELOOP);
    }
    // A file outside the prefixes (through a symlink) is opened for real.
    Answer a = S_ISREG(mode) && !r.followed ? open_file(r.entry, flags) : Answer::forward();
    if (a.served)
        stats_.served(CallKind::open);
    else
        stats_.forwarded(CallKind::open, path);
    return a;
}

DIR* Core::open_dir(const char* path, int& error, bool& served) {
    served = false;
    Resolution r = lookup(AT_FDCWD, path, 0, true);
    if (r.kind == Resolution::Forward) {
        stats_.forwarded(CallKind::opendir, path);
        if (path && path[0] == '/') tree_.learn_outside(path, true);
        return nullptr;
    }
    if (r.kind == Resolution::Failed) {
        stats_.served(CallKind::opendir);
        served = true;
        error = r.error;
        return nullptr;
    }
    const Entry& e = snapshot_.entry(r.entry);
    if (!S_ISDIR(record_of(r).mode)) {
        stats_.served(CallKind::opendir);
        served = true;
        error = ENOTDIR;
        return nullptr;
    }
    if (!(e.flags & kHasListing) || r.followed) {
        stats_.forwarded(CallKind::opendir, path);
        return nullptr;
    }
    // Others may write into a live root (the script's directory): its listing
    // is served only while the directory is as it was, which one statx tells
    // (the listing itself would be an open, reads and a close).
    if ((e.flags & kLive) && (e.flags & kIsRoot) && !directory_unchanged(snapshot_, r.entry)) {
        tree_.changed_by_others(r.entry);
        stats_.forwarded(CallKind::opendir, path);
        return nullptr;
    }
    // A descriptor is reserved now, as the real opendir takes one: later
    // descriptor numbers and EMFILE stay as they would be.
    int reserved = REAL(open)("/", O_PATH | O_CLOEXEC);
    if (reserved < 0) {
        stats_.served(CallKind::opendir);
        served = true;
        error = errno;
        return nullptr;
    }
    DIR* dir = make_dir_stream(snapshot_, r.entry, reserved);
    if (!dir) {
        REAL(close)(reserved);
        stats_.forwarded(CallKind::opendir, path);
        return nullptr;
    }
    stats_.served(CallKind::opendir);
    served = true;
    return dir;
}

} // namespace pyimport
