#include "serve/core.hpp"

#include "base/log.hpp"
#include "base/real.hpp"

#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace pyimport {

// ---------------------------------------------------------------- memfd files

namespace {
std::atomic<uint64_t> g_memfd_dev{~uint64_t{0}};

uint64_t memfd_dev() {
    uint64_t dev = g_memfd_dev.load(std::memory_order_acquire);
    if (dev != ~uint64_t{0}) return dev;
    int fd = memfd_create("pyimport-probe", MFD_CLOEXEC);
    struct stat st {};
    if (fd >= 0 && REAL(fstat)(fd, &st) == 0) dev = st.st_dev;
    if (fd >= 0) REAL(close)(fd);
    g_memfd_dev.store(dev, std::memory_order_release);
    return dev;
}

uint64_t pack(uint32_t entry, uint64_t ino) {
    return (uint64_t{entry + 1} << 32) | (ino & 0xffffffffu);
}

// A read-only descriptor holding `size` bytes, numbered as the lowest free
// descriptor, as the real open's would be. -1 with errno on failure.
int make_memory_file(const char* bytes, size_t size, int flags, uint64_t& ino) {
    int rw = memfd_create("pyimport", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (rw < 0) return -1;
    size_t done = 0;
    while (done < size) {
        ssize_t n = ::write(rw, bytes + done, size - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = errno;
            REAL(close)(rw);
            errno = n < 0 ? e : EIO;
            return -1;
        }
        done += static_cast<size_t>(n);
    }
    REAL(fcntl)(rw, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    // Reopen read-only so that F_GETFL reports O_RDONLY like the real file,
    // then move it onto the memfd's (lowest free) number.
    char proc[64];
    std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", rw);
    int ro = REAL(open)(proc, O_RDONLY | O_CLOEXEC | (flags & O_NONBLOCK));
    int fd = rw;
    if (ro >= 0) {
        // dup3 also sets close-on-exec as the caller asked.
        fd = REAL(dup3)(ro, rw, flags & O_CLOEXEC);
        REAL(close)(ro);
        if (fd < 0) return -1;
    } else if (!(flags & O_CLOEXEC)) {
        REAL(fcntl)(fd, F_SETFD, 0);
    }
    struct stat st {};
    if (REAL(fstat)(fd, &st) != 0) {
        REAL(close)(fd);
        return -1;
    }
    ino = st.st_ino;
    return fd;
}
} // namespace

// ------------------------------------------------------------------- FdTable

FdTable::FdTable(size_t capacity)
    : capacity_(capacity), slots_(std::make_unique<std::atomic<uint64_t>[]>(capacity)) {
    for (size_t i = 0; i < capacity; ++i)
        slots_[i].store(0, std::memory_order_relaxed);
}

void FdTable::set(int fd, uint32_t entry, uint64_t ino) {
    if (fd >= 0 && static_cast<size_t>(fd) < capacity_)
        slots_[fd].store(pack(entry, ino), std::memory_order_release);
}

void FdTable::clear(int fd) {
    if (fd >= 0 && static_cast<size_t>(fd) < capacity_)
        slots_[fd].store(0, std::memory_order_release);
}

void FdTable::clear_range(unsigned first, unsigned last) {
    for (size_t fd = first; fd <= last && fd < capacity_; ++fd)
        slots_[fd].store(0, std::memory_order_release);
}

void FdTable::copy(int from, int to) {
    if (to < 0 || static_cast<size_t>(to) >= capacity_) return;
    uint64_t value = maybe_served(from) ? slots_[from].load(std::memory_order_acquire) : 0;
    slots_[to].store(value, std::memory_order_release);
}

uint32_t FdTable::lookup(int fd) const {
    if (!maybe_served(fd)) return kNoEntry;
    uint64_t value = slots_[fd].load(std::memory_order_acquire);
    if (value == 0) return kNoEntry;
    struct stat st {};
    if (REAL(fstat)(fd, &st) != 0 || st.st_dev != memfd_dev() ||
        (st.st_ino & 0xffffffffu) != (value & 0xffffffffu))
        return kNoEntry;
    return static_cast<uint32_t>(value >> 32) - 1;
}

// -------------------------------------------------------------- DirStream

struct DirStream {
    const Snapshot* snapshot;
    uint32_t entry;
    uint32_t position;
    int fd;    // reserved at opendir; the real directory once dirfd() asks for it
    bool real; // fd refers to the real directory
    DirStream* next_free;
    struct dirent64 current;
};

namespace {
constexpr size_t kDirArenaSlots = 65536;
std::atomic<DirStream*> g_dir_arena{nullptr};
std::mutex g_dir_mutex;
DirStream* g_dir_free = nullptr;
size_t g_dir_used = 0;

DirStream* allocate_dir() {
    std::lock_guard lock(g_dir_mutex);
    DirStream* arena = g_dir_arena.load(std::memory_order_acquire);
    if (!arena) {
        void* p = mmap(nullptr, kDirArenaSlots * sizeof(DirStream), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return nullptr;
        arena = static_cast<DirStream*>(p);
        g_dir_arena.store(arena, std::memory_order_release);
    }
    if (g_dir_free) {
        DirStream* d = g_dir_free;
        g_dir_free = d->next_free;
        return d;
    }
    if (g_dir_used == kDirArenaSlots) return nullptr;
    return &arena[g_dir_used++];
}

void release_dir(DirStream* d) {
    std::lock_guard lock(g_dir_mutex);
    d->snapshot = nullptr;
    d->next_free = g_dir_free;
    g_dir_free = d;
}
} // namespace

bool is_dir_stream(const void* dir) {
    auto* arena = g_dir_arena.load(std::memory_order_acquire);
    if (!arena) return false;
    auto* p = static_cast<const char*>(dir);
    auto* begin = reinterpret_cast<const char*>(arena);
    return p >= begin && p < begin + kDirArenaSlots * sizeof(DirStream);
}

struct dirent64* dir_read(DIR* dir) {
    auto* d = reinterpret_cast<DirStream*>(dir);
    const Entry& e = d->snapshot->entry(d->entry);
    if (d->position >= e.listing_count) return nullptr; // end: errno unchanged
    const ListingItem& item = d->snapshot->listing(d->entry)[d->position];
    std::string_view name = item.dots == 1   ? std::string_view(".")
                            : item.dots == 2 ? std::string_view("..")
                                             : d->snapshot->name(item.entry);
    ++d->position;
    struct dirent64& out = d->current;
    out.d_ino = item.ino;
    out.d_off = d->position;
    out.d_type = item.type;
    std::memcpy(out.d_name, name.data(), name.size());
    out.d_name[name.size()] = '\0';
    out.d_reclen = static_cast<unsigned short>(
        (offsetof(struct dirent64, d_name) + name.size() + 1 + 7) & ~size_t{7});
    return &out;
}

void dir_rewind(DIR* dir) {
    reinterpret_cast<DirStream*>(dir)->position = 0;
}
long dir_tell(DIR* dir) {
    return reinterpret_cast<DirStream*>(dir)->position;
}
void dir_seek(DIR* dir, long pos) {
    auto* d = reinterpret_cast<DirStream*>(dir);
    uint32_t count = d->snapshot->entry(d->entry).listing_count;
    d->position = pos < 0 ? 0 : (pos > count ? count : static_cast<uint32_t>(pos));
}

int dir_close(DIR* dir) {
    auto* d = reinterpret_cast<DirStream*>(dir);
    REAL(close)(d->fd);
    release_dir(d);
    return 0;
}

// ---------------------------------------------------------------------- Core

namespace {
// One real stat of the directory: unchanged if inode, times and size agree.
bool directory_unchanged(const Snapshot& snapshot, uint32_t entry) {
    std::string path = snapshot.path(entry);
    struct statx now {};
    if (REAL(statx)(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &now) != 0)
        return false;
    const StatRecord& then = snapshot.entry(entry).st;
    return now.stx_ino == then.ino && now.stx_size == then.size &&
           now.stx_mtime.tv_sec == then.mtime.sec && now.stx_mtime.tv_nsec == then.mtime.nsec &&
           now.stx_ctime.tv_sec == then.ctime.sec && now.stx_ctime.tv_nsec == then.ctime.nsec &&
           now.stx_nlink == then.nlink;
}
} // namespace

Core::Core(const Config& config, SharedImage image, Snapshot snapshot)
    : config_(config), image_(std::move(image)), snapshot_(snapshot), tree_(snapshot_),
      fds_(65536) {
    stats_.enable_paths(config.stats);
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
    stats_.served(CallKind::access);
    if (mode == F_OK) return Answer::ok(0);
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
            gid_t groups[256];
            int n = getgroups(256, groups);
            for (int i = 0; !member && i < n; ++i)
                member = groups[i] == s.gid;
            bits = member ? (s.mode >> 3) & 7 : s.mode & 7;
        }
        granted = ((bits & 4) ? R_OK : 0) | ((bits & 1) ? X_OK : 0);
    }
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
    // A descriptor is reserved now, as the real opendir takes one: later
    // descriptor numbers and EMFILE stay as they would be.
    int reserved = REAL(open)("/", O_PATH | O_CLOEXEC);
    if (reserved < 0) {
        stats_.served(CallKind::opendir);
        served = true;
        error = errno;
        return nullptr;
    }
    DIR* dir = new_dir_stream(r.entry, reserved);
    if (!dir) {
        REAL(close)(reserved);
        stats_.forwarded(CallKind::opendir, path);
        return nullptr;
    }
    stats_.served(CallKind::opendir);
    served = true;
    return dir;
}

DIR* Core::new_dir_stream(uint32_t entry, int fd) {
    DirStream* d = allocate_dir();
    if (!d) return nullptr;
    d->snapshot = &snapshot_;
    d->entry = entry;
    d->position = 0;
    d->fd = fd;
    d->real = false;
    d->next_free = nullptr;
    return reinterpret_cast<DIR*>(d);
}

int dir_fd(DIR* dir) {
    auto* d = reinterpret_cast<DirStream*>(dir);
    if (d->real) return d->fd;
    // First use: the real directory takes the reserved descriptor's number,
    // so that *at calls, fstat and fchdir on it are the kernel's.
    std::string path = d->snapshot->path(d->entry);
    int real = REAL(open)(path.c_str(), O_RDONLY | O_NONBLOCK | O_DIRECTORY | O_CLOEXEC);
    if (real < 0) return -1;
    int fd = REAL(dup3)(real, d->fd, O_CLOEXEC);
    REAL(close)(real);
    if (fd < 0) return -1;
    d->real = true;
    return d->fd;
}

namespace {
// The absolute path the kernel has for a descriptor (procfs, no filesystem traffic).
bool descriptor_path(int fd, std::string& out) {
    char proc[64];
    std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    char buf[PATH_MAX];
    ssize_t n = REAL(readlink)(proc, buf, sizeof buf - 1);
    if (n <= 0 || buf[0] != '/') return false;
    out.assign(buf, static_cast<size_t>(n));
    return true;
}
} // namespace

void Core::changed(int dirfd, const char* path, bool follow_last) {
    stats_.served(CallKind::change);
    if (!path || path[0] == '\0') return changed_fd(dirfd); // futimens-like forms
    Position base;
    std::string cwd;
    if (base_for(dirfd, path, base, cwd) && tree_.invalidate(base, path, follow_last)) return;
    tree_.outside_changed();
    // The snapshot cannot place the path's directory (a symlink or a working
    // directory outside the roots, /lib for /usr/lib ...): ask the kernel
    // which directory it is, and invalidate by its canonical path.
    auto [dir_part, name] = Tree::split_last(path);
    std::string dir(dir_part);
    int fd = REAL(openat)(dirfd, dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    std::string canonical;
    bool known = descriptor_path(fd, canonical);
    REAL(close)(fd);
    if (!known) return;
    Position where;
    if (!tree_.locate(canonical, where)) return; // outside the roots: nothing cached
    tree_.invalidate(Position{}, canonical + "/" + std::string(name), follow_last);
}

void Core::changed_fd(int fd) {
    uint32_t entry = fds_.lookup(fd);
    std::string path;
    if (entry != kNoEntry)
        path = snapshot_.path(entry);
    else if (!descriptor_path(fd, path))
        return;
    tree_.invalidate(Position{}, path, false);
}

} // namespace pyimport
