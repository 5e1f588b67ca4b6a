// The walk: rank 0 reads the prefixes with the real libc, one directory at a
// time in named steps (record_directory: list it, record each child, keep or
// abandon the listing, descend into the subdirectories, read the sources),
// and encodes the image.
#include "image/walk.hpp"

#include "base/real.hpp"
#include "base/text.hpp"
#include "image/library_name.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <fcntl.h>
#include <new>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_map>

namespace pyimport {

namespace {

constexpr unsigned kStatxMask = STATX_BASIC_STATS | STATX_BTIME | STATX_MNT_ID;

Timestamp to_timestamp(const struct statx_timestamp& t) {
    return {t.tv_sec, t.tv_nsec, 0};
}

StatRecord to_record(const struct statx& s) {
    StatRecord r{};
    r.mask = s.stx_mask;
    r.blksize = s.stx_blksize;
    r.attributes = s.stx_attributes;
    r.attributes_mask = s.stx_attributes_mask;
    r.nlink = s.stx_nlink;
    r.uid = s.stx_uid;
    r.gid = s.stx_gid;
    r.mode = s.stx_mode;
    r.ino = s.stx_ino;
    r.size = s.stx_size;
    r.blocks = s.stx_blocks;
    r.atime = to_timestamp(s.stx_atime);
    r.btime = to_timestamp(s.stx_btime);
    r.ctime = to_timestamp(s.stx_ctime);
    r.mtime = to_timestamp(s.stx_mtime);
    r.rdev_major = s.stx_rdev_major;
    r.rdev_minor = s.stx_rdev_minor;
    r.dev_major = s.stx_dev_major;
    r.dev_minor = s.stx_dev_minor;
    r.mnt_id = s.stx_mnt_id;
    return r;
}

bool same_version(const StatRecord& a, const StatRecord& b) {
    return a.ino == b.ino && a.size == b.size && a.mtime.sec == b.mtime.sec &&
           a.mtime.nsec == b.mtime.nsec && a.ctime.sec == b.ctime.sec &&
           a.ctime.nsec == b.ctime.nsec;
}

// Opens without touching atime where the kernel lets us (owner or root), so
// that building the snapshot leaves the trees as they were.
int open_quietly(int dirfd, const char* name, int flags, bool try_noatime = true) {
    int fd = REAL(openat)(dirfd, name, flags | (try_noatime ? O_NOATIME : 0));
    if (fd < 0 && try_noatime && errno == EPERM) fd = REAL(openat)(dirfd, name, flags);
    return fd;
}

struct Item {
    std::string name;
    uint64_t ino;
    uint8_t type;
};

// The whole listing, in readdir order, before any child is looked at. False
// if readdir failed partway.
bool list_directory(DIR* dir, std::vector<Item>& items, size_t limit = SIZE_MAX) {
    for (;;) {
        if (items.size() > limit) return false;
        errno = 0;
        struct dirent64* d = REAL(readdir64)(dir);
        if (!d) return errno == 0;
        items.push_back({d->d_name, d->d_ino, d->d_type});
    }
}

// A package name (an identifier, as import needs) or __pycache__.
bool is_package_name(std::string_view name) {
    if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) return false;
    for (char c : name)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' &&
            static_cast<unsigned char>(c) < 0x80)
            return false;
    return true;
}

class Builder {
  public:
    explicit Builder(const BuildOptions& options) : options_(options) {}

    bool run(std::vector<char>& image, std::string& error);

  private:
    struct Subdir {
        uint32_t entry;
        int fd; // open, or -1: reopen when walked
    };
    // A directory being recorded, from its listing to its last source read.
    struct Directory {
        uint32_t index;
        int fd;
        std::string path; // with a profile only; "" for "/"
        bool noatime;
        bool live;                        // under a live root (kLive)
        std::vector<Item> items;          // readdir order
        std::vector<ListingItem> listing; // becomes the entry's listing
        std::vector<Subdir> subdirs;      // walked after the listing
        std::vector<uint32_t> sources;    // .py files, read after __pycache__ is known
        // Sizes before the children were recorded, to forget them.
        size_t first_child, first_string, first_follow;
    };
    enum class Outcome { Recorded, Unreadable };

    bool add_roots(std::string& error);
    struct PendingProbe {
        uint32_t root; // a partial root
        std::string name;
        bool absent;
        bool content;
        StatRecord st; // the lstat that found it (present ones)
    };
    void add_partial_roots();
    void add_library_roots();
    void drop_content(uint32_t index);
    bool is_system_directory(const std::string& path) const;
    void record_probe(const PendingProbe& probe);
    bool record_directory(uint32_t index, int dirfd, std::string& error);
    Outcome record_child(Directory& d, const Item& item);
    bool stat_child(const Directory& d, const Item& item, Entry& e, int& subdir_fd);
    bool record_link(const Directory& d, const char* name, Entry& e);
    void queue_subdirectory(Directory& d, std::string_view name, const Entry& e, uint32_t entry,
                            int fd);
    void keep_listing(const Directory& d);
    void abandon_listing(Directory& d);
    void close_subdirs(Directory& d);
    bool descend(Directory& d, std::string& error);
    int reopen_subdirectory(const Directory& d, uint32_t child);
    void read_sources(const Directory& d);
    bool read_content(int dirfd, const char* name, bool noatime, Entry& entry,
                      uint32_t index = kNoEntry);
    bool stat_by_name(int dirfd, const char* name, Entry& entry);
    int open_directory(int dirfd, const char* name, bool noatime, Entry& entry);
    bool wants_content(std::string_view name) const;
    bool wants_stat(std::string_view name) const;
    bool excluded(std::string_view name) const;
    bool known_by_name_only(const Directory& d, std::string_view name, uint8_t type) const;
    bool keeps_live_directory(const Directory& d);
    bool is_source(std::string_view name) const;
    bool has_bytecode(uint32_t dir, uint32_t source) const;
    uint32_t add_string(std::string_view text);
    bool make_room(uint64_t size);
    void not_cached(uint32_t index);
    void compact_data();
    NotCached not_cached_report() const;
    bool wants_source_content(std::string_view name) const;
    bool library_only(std::string_view name) const;
    void encode(std::vector<char>& image);

    const BuildOptions& options_;
    std::vector<Entry> entries_;
    std::vector<ListingItem> listing_;
    std::string strings_;
    std::vector<char> data_;
    std::vector<int> root_fds_;           // walked roots: prefixes, then live ones
    std::vector<std::string> root_paths_; // their canonical paths
    std::vector<bool> root_live_;
    std::vector<int> partial_fds_; // O_PATH, after the walked roots
    std::vector<std::string> partial_paths_;
    // Library roots, added after the walk (their entries go before the
    // partial roots' in the image: a lookup takes the first root of a path).
    std::vector<uint32_t> library_roots_;
    std::unordered_set<uint32_t> library_root_set_;
    std::vector<PendingProbe> pending_probes_;
    std::vector<StatRecord> follow_;
    uint32_t statx_unrequested_ = 0;
    std::unordered_set<std::string> wanted_; // profile paths and their ancestors
    // The budget (BuildOptions::max_bytes): bytes of the entries with
    // content; the rest of data_ is evicted contents, compacted away once
    // more than the budget. Cached entries by size (a max-heap), to evict
    // the largest; entries whose bytes did not fit.
    uint64_t cached_bytes_ = 0;
    struct Cached {
        uint64_t size;
        uint32_t entry;
        bool operator<(const Cached& o) const { return size < o.size; }
    };
    std::vector<Cached> cached_;
    std::vector<uint32_t> not_cached_;
    // Directories kept open between being listed and being walked, over the
    // whole walk (so deep trees cannot run the process out of descriptors).
    size_t open_subdirs_left_ = 128;
    size_t live_entries_left_ = 10000; // in live directories, all together
    // Directories under a live root: walked by its rules, but answered like
    // a prefix's (packages are module trees).
    std::unordered_set<uint32_t> live_packages_;

    std::string path_of(uint32_t index) const;
    bool inside_roots(const std::string& path) const;
    bool inside_prefixes(const std::string& path) const; // the walked ones, not live
    void follow_outside(uint32_t parent, Entry& link);
};

bool Builder::wants_content(std::string_view name) const {
    return wants_source_content(name) || (options_.libraries && is_library_name(name));
}

// Content asked for by PYIMPORT_CONTENT itself (not only as a library).
bool Builder::wants_source_content(std::string_view name) const {
    for (const std::string& suffix : options_.content_suffixes)
        if (name.ends_with(suffix)) return true;
    return false;
}

// Its bytes are cached as a library's, not as PYIMPORT_CONTENT's.
bool Builder::library_only(std::string_view name) const {
    return options_.libraries && is_library_name(name) && !wants_source_content(name);
}

bool Builder::wants_stat(std::string_view name) const {
    for (const std::string& suffix : options_.stat_suffixes)
        if (suffix == "*" || name.ends_with(suffix)) return true;
    return wants_content(name);
}

bool Builder::excluded(std::string_view name) const {
    return std::find(options_.exclude.begin(), options_.exclude.end(), name) !=
           options_.exclude.end();
}

// Entries whose stat rank 0 does not ask for (kNoStat): with a profile, files
// and directories no earlier job used; without, directories named in
// PYIMPORT_EXCLUDE and files that are not modules (the import system never
// looks at them). Symlinks and entries of unknown type are always stat'ed.
bool Builder::known_by_name_only(const Directory& d, std::string_view name, uint8_t type) const {
    if (type != DT_REG && type != DT_DIR) return false;
    // A library root: its libraries (with their bytes), names of the rest.
    if (library_root_set_.count(d.index))
        return type == DT_DIR || !(options_.libraries && is_library_name(name));
    // In a live directory: modules and package directories only; data files
    // and other directories (results/, data/) are the filesystem's.
    // A directory that is a root itself is reached through its kNoStat entry,
    // so that one copy of it exists.
    if (d.live && type == DT_DIR && root_paths_.size() + partial_paths_.size() > 1) {
        std::string child = path_of(d.index) + "/" + std::string(name);
        auto holds_root = [&](const std::string& root) { return path_within(root, child); };
        if (std::any_of(root_paths_.begin(), root_paths_.end(), holds_root) ||
            std::any_of(partial_paths_.begin(), partial_paths_.end(), holds_root))
            return true;
    }
    if (d.live) return type == DT_DIR ? !is_package_name(name) : !wants_stat(name);
    if (options_.profile) return !wanted_.count(d.path + "/" + std::string(name));
    return type == DT_DIR ? excluded(name) : !wants_stat(name);
}

uint32_t Builder::add_string(std::string_view text) {
    auto offset = static_cast<uint32_t>(strings_.size());
    strings_.append(text);
    return offset;
}

// Room in the budget for `size` more bytes of contents. When they do not
// fit, the largest cached contents go if they are larger: the budget then
// holds more files, and each file it holds is one open, fstat and read fewer
// per rank (bytecode and sources before a few large libraries). One eviction
// suffices: what stays cached is at most the budget, so dropping anything
// larger than `size` makes room for it. False: the file does not fit.
bool Builder::make_room(uint64_t size) {
    if (size > options_.max_bytes) return false;
    while (cached_bytes_ + size > options_.max_bytes) {
        if (cached_.empty() || cached_.front().size <= size) return false;
        std::pop_heap(cached_.begin(), cached_.end());
        Entry& e = entries_[cached_.back().entry];
        cached_bytes_ -= e.content_len;
        e.flags &= static_cast<uint8_t>(~kHasContent);
        e.content_off = e.content_len = 0;
        not_cached_.push_back(cached_.back().entry);
        cached_.pop_back();
    }
    // Evicted bytes stay in data_ until they are more than the budget: the
    // walk then holds at most about twice the budget.
    if (data_.size() - cached_bytes_ > options_.max_bytes) compact_data();
    return true;
}

// A file whose bytes did not fit (its stat is recorded): `index` is where its
// entry is, or is about to be pushed (kNoEntry: the next one).
void Builder::not_cached(uint32_t index) {
    not_cached_.push_back(index == kNoEntry ? static_cast<uint32_t>(entries_.size()) : index);
}

// Moves the cached contents down over the evicted ones, in place and in
// data_'s order (abandon_listing() relies on it: a directory's bytes are the
// tail of data_ while it is listed).
void Builder::compact_data() {
    std::vector<uint32_t> holders;
    for (uint32_t i = 0; i < entries_.size(); ++i)
        if (entries_[i].flags & kHasContent) holders.push_back(i);
    std::sort(holders.begin(), holders.end(), [&](uint32_t a, uint32_t b) {
        return entries_[a].content_off < entries_[b].content_off;
    });
    uint64_t end = 0;
    for (uint32_t i : holders) {
        Entry& e = entries_[i];
        if (e.content_off != end && e.content_len > 0)
            std::memmove(data_.data() + end, data_.data() + e.content_off, e.content_len);
        e.content_off = end;
        end += e.content_len;
    }
    data_.resize(end); // the capacity stays, for the bytes to come
}

NotCached Builder::not_cached_report() const {
    NotCached report;
    for (uint32_t i : not_cached_) {
        const Entry& e = entries_[i];
        ++report.files;
        report.bytes += e.st.size;
        if (library_only({strings_.data() + e.name_off, e.name_len})) ++report.libraries;
    }
    return report;
}

// The canonical path of an open directory: the kernel's name for it, from one
// path walk (realpath would walk the path once per component).
bool canonical_path(int fd, const std::string& path, std::string& out) {
    char proc[64], resolved[PATH_MAX];
    std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    ssize_t n = REAL(readlink)(proc, resolved, sizeof resolved - 1);
    if (n > 0 && resolved[0] == '/') {
        out.assign(resolved, static_cast<size_t>(n));
        return true;
    }
    if (!REAL(realpath)(path.c_str(), resolved)) return false; // no /proc
    out = resolved;
    return true;
}

std::string parent_of(const std::string& path) {
    size_t slash = path.find_last_of('/');
    return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

bool Builder::add_roots(std::string& error) {
    struct Root {
        std::string path;
        int fd;
        struct statx st;
        bool live;
    };
    std::vector<Root> roots;
    auto open_root = [&](const std::string& prefix, bool live) {
        Root r{{},
               open_quietly(AT_FDCWD, prefix.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC),
               {},
               live};
        bool ok = r.fd >= 0 && canonical_path(r.fd, prefix, r.path) &&
                  REAL(statx)(r.fd, "", AT_EMPTY_PATH, kStatxMask, &r.st) == 0;
        if (ok) {
            roots.push_back(std::move(r));
            return 0;
        }
        int saved = errno;
        if (r.fd >= 0) REAL(close)(r.fd);
        return saved ? saved : EIO;
    };
    for (const std::string& prefix : options_.prefixes) {
        int failed = open_root(prefix, false);
        if (!failed || !options_.prefixes_required) continue;
        error =
            "cannot read prefix " + prefix + ": " + std::strerror(failed) + "; running uncached";
        for (const Root& done : roots)
            REAL(close)(done.fd);
        return false;
    }
    for (const std::string& dir : options_.live_roots)
        open_root(dir, true);
    // A prefix inside another (or the same) is covered by the outer walk, and
    // so is a live directory inside a prefix.
    std::sort(roots.begin(), roots.end(), [](const Root& x, const Root& y) {
        return x.path != y.path ? x.path < y.path : !x.live && y.live;
    });
    for (const Root& root : roots) {
        // A prefix inside a live root stays a root of its own (lookups reach
        // it through the live root's entry for it, which is kNoStat).
        bool nested = false;
        for (size_t i = 0; i < root_paths_.size(); ++i)
            nested =
                nested || (path_within(root.path, root_paths_[i]) && (root.live || !root_live_[i]));
        if (nested) {
            REAL(close)(root.fd);
            continue;
        }
        Entry e{};
        e.st = to_record(root.st);
        e.parent = kNoEntry;
        e.name_off = add_string(root.path);
        e.name_len = static_cast<uint32_t>(root.path.size());
        e.flags = kIsRoot | (root.live ? kLive : 0);
        e.follow = kNoEntry;
        entries_.push_back(e);
        root_fds_.push_back(root.fd);
        root_paths_.push_back(root.path);
        root_live_.push_back(root.live);
    }
    return true;
}

// The probes outside the walked roots: each path's answer (present, or
// absent with its errno) is recorded in a partial root at the deepest
// directory above it that exists. Probes under a walked root are answered by
// its listing already.
void Builder::add_partial_roots() {
    // Each path asked once: the error (-1 for a directory) and the record.
    std::unordered_map<std::string, std::pair<int, StatRecord>> lstats;
    auto lstat_of = [&](const std::string& path) -> const std::pair<int, StatRecord>& {
        if (auto known = lstats.find(path); known != lstats.end()) return known->second;
        struct statx sx {};
        int err = REAL(statx)(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT,
                              kStatxMask, &sx) == 0
                      ? 0
                      : errno;
        if (err == 0 && S_ISDIR(sx.stx_mode)) err = -1;
        return lstats.emplace(path, std::pair{err, err == ENOENT ? StatRecord{} : to_record(sx)})
            .first->second;
    };
    auto lstat_error = [&](const std::string& path) { return lstat_of(path).first; };
    std::unordered_map<std::string, uint32_t> partial_index;
    auto partial_root = [&](const std::string& dir) -> uint32_t {
        // A root named "/" is never matched by a lookup; nor is a second root
        // of a walked root's name.
        if (dir == "/" ||
            std::find(root_paths_.begin(), root_paths_.end(), dir) != root_paths_.end())
            return kNoEntry;
        if (auto known = partial_index.find(dir); known != partial_index.end())
            return known->second;
        int fd = REAL(openat)(AT_FDCWD, dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        std::string canonical;
        struct statx sx {};
        // Lookups match a root by its path: one reached through a symlink
        // would never match, so it is not kept.
        if (fd < 0 || !canonical_path(fd, dir, canonical) || canonical != dir ||
            REAL(statx)(fd, "", AT_EMPTY_PATH, kStatxMask, &sx) != 0) {
            if (fd >= 0) REAL(close)(fd);
            return partial_index[dir] = kNoEntry;
        }
        Entry e{};
        e.st = to_record(sx);
        e.parent = kNoEntry;
        e.name_off = add_string(dir);
        e.name_len = static_cast<uint32_t>(dir.size());
        e.flags = kIsRoot | kPartial;
        e.follow = kNoEntry;
        entries_.push_back(e);
        partial_paths_.push_back(dir);
        partial_fds_.push_back(fd);
        return partial_index[dir] = static_cast<uint32_t>(entries_.size() - 1);
    };
    // Inside a live root, what lies in a package (or a __pycache__) is the
    // live walk's to answer; a partial root there would hide the package.
    auto live_package = [&](const std::string& dir) {
        if (!inside_roots(dir)) return false;
        for (std::string d = dir;
             d != "/" && !std::count(root_paths_.begin(), root_paths_.end(), d); d = parent_of(d))
            if (d.ends_with("/__pycache__") || lstat_error(d + "/__init__.py") == 0) return true;
        return false;
    };
    std::unordered_set<std::string> seen; // root index and name
    for (const BuildOptions::Probe& probe : options_.probes) {
        // Under a prefix the prefix answers; under a live root (a venv in the
        // working directory) the probe's partial root is reached through it.
        if (probe.path.size() < 2 || probe.path[0] != '/' || inside_prefixes(probe.path)) continue;
        int err = lstat_error(probe.path);
        if (err == -1) { // a directory: a partial root itself
            if (!live_package(probe.path)) partial_root(probe.path);
            continue;
        }
        std::string below = probe.path;
        std::string dir = parent_of(below);
        if (err == ENOENT) // the first missing component answers for all below it
            while (dir != "/" && lstat_error(dir) == ENOENT) {
                below = dir;
                dir = parent_of(dir);
            }
        else if (err != 0 && err != ENOENT)
            continue; // EACCES, ENOTDIR ...: the filesystem's to answer
        if (lstat_error(dir) != -1 || inside_prefixes(dir) || live_package(dir)) continue;
        uint32_t root = partial_root(dir);
        if (root == kNoEntry) continue;
        std::string name = below.substr(dir.size() + 1);
        if (seen.insert(std::to_string(root) + "/" + name).second)
            pending_probes_.push_back({root, name, err == ENOENT,
                                       probe.content && below == probe.path,
                                       lstat_of(below).second});
    }
}

// A probe's entry in its partial root: absent, or what the name is now.
void Builder::record_probe(const PendingProbe& probe) {
    Entry e{};
    e.follow = kNoEntry;
    e.parent = probe.root;
    e.name_off = add_string(probe.name);
    e.name_len = static_cast<uint32_t>(probe.name.size());
    int fd = partial_fds_[probe.root - root_fds_.size()];
    const char* name = probe.name.c_str();
    bool noatime = geteuid() == 0;
    // The lstat of add_partial_roots() is its stat, unless its bytes are
    // read (the open's fstat then gives the stat the bytes belong to).
    e.st = probe.st;
    if (!probe.absent && probe.content && !S_ISLNK(e.st.mode) &&
        !read_content(fd, name, noatime, e))
        return; // gone since: the filesystem's to answer
    if (probe.absent) {
        e.flags = kAbsent;
        e.error = ENOENT;
        e.st = StatRecord{};
    } else if (S_ISLNK(e.st.mode)) {
        Directory d{};
        d.index = probe.root;
        d.fd = fd;
        if (!record_link(d, name, e)) return;
    } else if (S_ISDIR(e.st.mode)) {
        return; // became a directory meanwhile: forwarded
    }
    entries_.push_back(e);
}

// Reads a file into data_ with one open: open, fstat, read exactly the size
// fstat gave. Reading up to EOF, not past it, matters: on FUSE and other
// network filesystems a read past the cached size is one more attribute
// request to the server. A file whose ctime is not clearly older than the read
// may be changing, so it is stat'ed again after the read and read until two
// stats agree. Unreadable files get no content: their opens are forwarded and
// fail as they would; so do files that do not fit in the budget (make_room),
// whose stat is fstat's. `index`: where the entry is, or kNoEntry for the one
// pushed next. Returns false only if the file could not be opened or stat'ed,
// so the caller can fall back to a stat by name.
bool Builder::read_content(int dirfd, const char* name, bool noatime, Entry& entry,
                           uint32_t index) {
    for (int attempt = 0; attempt < 4; ++attempt) {
        int fd = open_quietly(dirfd, name,
                              O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, noatime);
        if (fd < 0) return attempt > 0;
        struct timespec started {};
        clock_gettime(CLOCK_REALTIME, &started);
        struct statx sx {};
        if (REAL(statx)(fd, "", AT_EMPTY_PATH, kStatxMask, &sx) != 0) {
            REAL(close)(fd);
            return attempt > 0;
        }
        entry.st = to_record(sx);
        if (!S_ISREG(entry.st.mode)) { // raced into something else
            REAL(close)(fd);
            return true;
        }
        size_t want = entry.st.size;
        if (!make_room(want)) {
            not_cached(index);
            REAL(close)(fd);
            return true;
        }
        size_t start = data_.size();
        // At most twice the budget (make_room): grow no further than that.
        uint64_t most = options_.max_bytes > UINT64_MAX / 2 ? UINT64_MAX : 2 * options_.max_bytes;
        if (start + want > data_.capacity())
            data_.reserve(
                std::min<uint64_t>(std::max<uint64_t>(2 * data_.capacity(), start + want), most));
        data_.resize(start + want);
        size_t got = 0;
        bool ok = true;
        while (got < want) {
            ssize_t n = ::read(fd, data_.data() + start + got, want - got);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                ok = n == 0; // shrank meanwhile (checked below) or unreadable
                break;
            }
            got += static_cast<size_t>(n);
        }
        data_.resize(start + got);
        bool settled = entry.st.ctime.sec + 2 < started.tv_sec;
        if (ok && !settled) {
            struct statx again {};
            settled = REAL(statx)(fd, "", AT_EMPTY_PATH, kStatxMask, &again) == 0 &&
                      same_version(to_record(again), entry.st);
        }
        REAL(close)(fd);
        if (!ok) {
            data_.resize(start);
            return true;
        }
        if (settled && got == want) {
            entry.flags |= kHasContent;
            entry.content_off = start;
            entry.content_len = got;
            cached_bytes_ += got;
            cached_.push_back(
                {got, index == kNoEntry ? static_cast<uint32_t>(entries_.size()) : index});
            std::push_heap(cached_.begin(), cached_.end());
            return true;
        }
        data_.resize(start);
    }
    return true; // kept changing: no content, stat as last seen
}

bool Builder::stat_by_name(int dirfd, const char* name, Entry& entry) {
    struct statx sx {};
    if (REAL(statx)(dirfd, name, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, kStatxMask, &sx) != 0)
        return false;
    entry.st = to_record(sx);
    return true;
}

// A directory is opened first and stat'ed through its descriptor, which the
// walk then lists: one lookup instead of two, and the listing is surely of
// the directory whose stat is recorded. Returns the open descriptor or -1.
int Builder::open_directory(int dirfd, const char* name, bool noatime, Entry& entry) {
    int fd = open_quietly(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, noatime);
    if (fd < 0) return -1;
    struct statx sx {};
    if (REAL(statx)(fd, "", AT_EMPTY_PATH, kStatxMask, &sx) != 0) {
        REAL(close)(fd);
        return -1;
    }
    entry.st = to_record(sx);
    return fd;
}

// Whether a live directory just listed is walked. Below the live root only
// packages are (an __init__.py, or __pycache__): results/ and data/ are
// forwarded whole. And only so many entries: a working directory may hold
// a million data files, which would cost every rank memory for nothing.
bool Builder::keeps_live_directory(const Directory& d) {
    Entry& e = entries_[d.index];
    bool root = e.parent == kNoEntry;
    bool package =
        root || std::string_view(strings_.data() + e.name_off, e.name_len) == "__pycache__";
    for (const Item& item : d.items)
        package = package || item.name == "__init__.py";
    if (package && d.items.size() <= live_entries_left_) {
        live_entries_left_ -= d.items.size();
        return true;
    }
    if (!root) e.flags |= kNoStat; // lookups under it go to the filesystem
    return false;
}

// Lists a directory and records its children, then descends into its
// subdirectories and reads its sources. Each child costs the fewest requests
// to the filesystem that give its stat: on a parallel filesystem every one of
// them is a round trip to the metadata server. False only if the whole build
// must stop (none does now: past the budget files are only not cached).
bool Builder::record_directory(uint32_t index, int dirfd, std::string& error) {
    bool live = (entries_[index].flags & kLive) || live_packages_.count(index);
    // Below a live root only packages are walked: one stat of __init__.py
    // tells, where the listing of a data directory would cost its size.
    if (live && entries_[index].parent != kNoEntry &&
        std::string_view(strings_.data() + entries_[index].name_off, entries_[index].name_len) !=
            "__pycache__") {
        struct statx sx {};
        if (REAL(statx)(dirfd, "__init__.py", AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_TYPE,
                        &sx) != 0 ||
            !S_ISREG(sx.stx_mode)) {
            entries_[index].flags |= kNoStat; // lookups under it go to the filesystem
            REAL(close)(dirfd);
            return true;
        }
    }
    DIR* dir = ::fdopendir(dirfd);
    if (!dir) {
        REAL(close)(dirfd);
        return true;
    }
    Directory d{};
    d.index = index;
    d.fd = dirfd;
    d.live = live;
    bool complete = list_directory(dir, d.items, live ? live_entries_left_ : SIZE_MAX);
    if (d.live && !keeps_live_directory(d)) {
        REAL(closedir)(dir);
        return true;
    }
    d.path = options_.profile ? path_of(index) : std::string();
    if (d.path == "/") d.path.clear();
    // Owner (or root) of this directory: likely owner of its files, so
    // O_NOATIME is worth trying (for anyone else it fails with EPERM and
    // would cost a second lookup per open).
    d.noatime = geteuid() == 0 || entries_[index].st.uid == geteuid();
    d.first_child = entries_.size();
    d.first_string = strings_.size();
    d.first_follow = follow_.size();
    for (const Item& item : d.items) {
        Outcome outcome = record_child(d, item);
        if (outcome == Outcome::Unreadable) {
            complete = false; // vanished or not searchable: let lookups here go to the FS
            break;
        }
    }
    if (complete)
        keep_listing(d);
    else
        abandon_listing(d);
    bool ok = descend(d, error);
    if (ok) read_sources(d);
    REAL(closedir)(dir);
    return ok;
}

// Records one child: its entry and listing item, a symlink's target, a cached
// file's bytes; a subdirectory is queued and a source deferred.
Builder::Outcome Builder::record_child(Directory& d, const Item& item) {
    ListingItem li{};
    li.ino = item.ino;
    li.type = item.type;
    li.entry = kNoEntry;
    if (item.name == "." || item.name == "..") {
        li.dots = item.name == "." ? 1 : 2;
        d.listing.push_back(li);
        return Outcome::Recorded;
    }
    Entry e{};
    e.follow = kNoEntry;
    e.parent = d.index;
    e.name_off = add_string(item.name);
    e.name_len = static_cast<uint32_t>(item.name.size());
    const char* name = item.name.c_str();
    int subdir_fd = -1;
    if (!stat_child(d, item, e, subdir_fd)) return Outcome::Unreadable;
    if (S_ISLNK(e.st.mode)) {
        if (!record_link(d, name, e)) return Outcome::Unreadable;
    } else if (S_ISREG(e.st.mode) && wants_content(item.name)) {
        if (is_source(item.name))
            d.sources.push_back(static_cast<uint32_t>(entries_.size()));
        else if (!(e.flags & kHasContent) && item.type != DT_REG)
            read_content(d.fd, name, d.noatime, e); // the listing gave no type
    }
    li.entry = static_cast<uint32_t>(entries_.size());
    if (d.live && S_ISDIR(e.st.mode) && !(e.flags & kNoStat)) live_packages_.insert(li.entry);
    queue_subdirectory(d, item.name, e, li.entry, subdir_fd);
    entries_.push_back(e);
    d.listing.push_back(li);
    return Outcome::Recorded;
}

// The child's stat at the fewest requests: the listing's type alone
// (kNoStat); the open that is needed anyway, for a directory (its descriptor
// then lists it, returned in subdir_fd) or a cached file (open, fstat, read);
// else a stat by name. False if it has none.
bool Builder::stat_child(const Directory& d, const Item& item, Entry& e, int& subdir_fd) {
    if (known_by_name_only(d, item.name, item.type)) {
        e.st.mode = DTTOIF(item.type);
        e.st.ino = item.ino;
        e.flags |= kNoStat;
        return true;
    }
    const char* name = item.name.c_str();
    bool stated = false;
    if (item.type == DT_DIR) {
        subdir_fd = open_directory(d.fd, name, d.noatime, e);
        stated = subdir_fd >= 0;
    } else if (item.type == DT_REG && wants_content(item.name) && !is_source(item.name)) {
        stated = read_content(d.fd, name, d.noatime, e);
    }
    return stated || stat_by_name(d.fd, name, e);
}

// A symlink's target, and the target's stat if it lies outside the prefixes.
// False if the link cannot be read or is no longer a link.
bool Builder::record_link(const Directory& d, const char* name, Entry& e) {
    std::vector<char> target(e.st.size + 2 > PATH_MAX ? e.st.size + 2 : PATH_MAX);
    ssize_t n = REAL(readlinkat)(d.fd, name, target.data(), target.size());
    // Reading a link can update its atime: take its stat afterwards.
    if (n < 0 || static_cast<size_t>(n) >= target.size() || !stat_by_name(d.fd, name, e) ||
        !S_ISLNK(e.st.mode))
        return false;
    e.link_off = add_string({target.data(), static_cast<size_t>(n)});
    e.link_len = static_cast<uint32_t>(n);
    // In a live directory a link out is to data others may write: the
    // lookup follows it to the filesystem.
    if (!d.live) follow_outside(d.index, e);
    return true;
}

// A subdirectory to walk after the listing; `fd` is its open descriptor or -1.
// Within open_subdirs_left_ it stays open, else it is reopened when walked.
void Builder::queue_subdirectory(Directory& d, std::string_view name, const Entry& e,
                                 uint32_t entry, int fd) {
    if (!S_ISDIR(e.st.mode) || (e.flags & kNoStat) || (!options_.profile && excluded(name))) {
        if (fd >= 0) REAL(close)(fd);
        return;
    }
    if (fd >= 0 && open_subdirs_left_ == 0) {
        REAL(close)(fd);
        fd = -1;
    } else if (fd >= 0) {
        --open_subdirs_left_;
    }
    d.subdirs.push_back({entry, fd});
}

void Builder::keep_listing(const Directory& d) {
    Entry& dir = entries_[d.index];
    dir.listing_begin = static_cast<uint32_t>(listing_.size());
    dir.listing_count = static_cast<uint32_t>(d.listing.size());
    dir.flags |= kHasListing;
    listing_.insert(listing_.end(), d.listing.begin(), d.listing.end());
}

// Keeps no half listing: the children recorded so far are forgotten whole
// (entries, names, targets, follow records, bytes), so that they neither
// count against the budget nor are evicted or reported once their indices
// are reused.
void Builder::abandon_listing(Directory& d) {
    // Their bytes are data_'s tail: read while listing this directory, and
    // compact_data() keeps data_'s order. Evicted bytes among them go too.
    size_t data_end = data_.size();
    for (size_t i = d.first_child; i < entries_.size(); ++i)
        if (entries_[i].flags & kHasContent) {
            data_end = std::min<size_t>(data_end, entries_[i].content_off);
            cached_bytes_ -= entries_[i].content_len;
        }
    data_.resize(data_end);
    auto forgotten = [&](uint32_t i) { return i >= d.first_child; };
    if (std::erase_if(cached_, [&](const Cached& c) { return forgotten(c.entry); }) > 0)
        std::make_heap(cached_.begin(), cached_.end());
    std::erase_if(not_cached_, forgotten);
    std::erase_if(live_packages_, [&](uint32_t i) { return i >= d.first_child; });
    entries_.resize(d.first_child);
    strings_.resize(d.first_string);
    follow_.resize(d.first_follow);
    close_subdirs(d);
    d.sources.clear();
}

void Builder::close_subdirs(Directory& d) {
    for (const Subdir& s : d.subdirs)
        if (s.fd >= 0) {
            REAL(close)(s.fd);
            ++open_subdirs_left_;
        }
    d.subdirs.clear();
}

// Walks the queued subdirectories in listing order, depth first.
bool Builder::descend(Directory& d, std::string& error) {
    for (size_t i = 0; i < d.subdirs.size(); ++i) {
        uint32_t child = d.subdirs[i].entry;
        int fd = d.subdirs[i].fd;
        d.subdirs[i].fd = -1;
        if (fd >= 0)
            ++open_subdirs_left_; // record_directory() owns it now
        else
            fd = reopen_subdirectory(d, child);
        if (fd < 0) continue; // not listable: lookups inside are forwarded
        if (!record_directory(child, fd, error)) {
            close_subdirs(d);
            return false;
        }
    }
    return true;
}

// A subdirectory closed for the descriptor budget: it must still be the
// directory whose stat was recorded. Returns its descriptor or -1.
int Builder::reopen_subdirectory(const Directory& d, uint32_t child) {
    std::string name(strings_.data() + entries_[child].name_off, entries_[child].name_len);
    Entry again = entries_[child];
    int fd = open_directory(d.fd, name.c_str(), d.noatime, again);
    if (fd >= 0 && (again.st.ino != entries_[child].st.ino ||
                    again.st.dev_major != entries_[child].st.dev_major ||
                    again.st.dev_minor != entries_[child].st.dev_minor)) {
        REAL(close)(fd); // replaced meanwhile: lookups inside are forwarded
        return -1;
    }
    return fd;
}

// A .py is read only if its __pycache__ bytecode is absent, which is known
// once the subdirectories are walked.
void Builder::read_sources(const Directory& d) {
    for (uint32_t source : d.sources) {
        if (has_bytecode(d.index, source)) continue;
        std::string name(strings_.data() + entries_[source].name_off, entries_[source].name_len);
        Entry e = entries_[source];
        read_content(d.fd, name.c_str(), d.noatime, e, source);
        entries_[source] = e;
    }
}

bool Builder::is_source(std::string_view name) const {
    return !options_.cache_tag.empty() && name.ends_with(".py");
}

bool Builder::has_bytecode(uint32_t dir, uint32_t source) const {
    std::string_view name(strings_.data() + entries_[source].name_off, entries_[source].name_len);
    std::string pyc(name.substr(0, name.size() - 3));
    pyc += "." + options_.cache_tag + ".pyc";
    const Entry& d = entries_[dir];
    for (uint32_t i = 0; i < d.listing_count; ++i) {
        const ListingItem& item = listing_[d.listing_begin + i];
        if (item.entry == kNoEntry) continue;
        const Entry& c = entries_[item.entry];
        if (std::string_view(strings_.data() + c.name_off, c.name_len) != "__pycache__" ||
            !(c.flags & kHasListing))
            continue;
        for (uint32_t j = 0; j < c.listing_count; ++j) {
            const ListingItem& p = listing_[c.listing_begin + j];
            if (p.entry == kNoEntry) continue;
            const Entry& f = entries_[p.entry];
            if (std::string_view(strings_.data() + f.name_off, f.name_len) == pyc &&
                S_ISREG(f.st.mode))
                return true;
        }
    }
    return false;
}

std::string Builder::path_of(uint32_t index) const {
    std::vector<uint32_t> chain;
    for (uint32_t i = index; i != kNoEntry; i = entries_[i].parent)
        chain.push_back(i);
    std::string out;
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
        if (!out.empty() && out.back() != '/') out += '/';
        out.append(strings_.data() + entries_[*it].name_off, entries_[*it].name_len);
    }
    return out;
}

bool Builder::inside_prefixes(const std::string& path) const {
    for (size_t i = 0; i < root_paths_.size(); ++i)
        if (!root_live_[i] && path_within(path, root_paths_[i])) return true;
    return false;
}

bool Builder::inside_roots(const std::string& path) const {
    for (const std::string& root : root_paths_)
        if (path_within(path, root)) return true;
    return false;
}

// A symlink out of the prefixes (Debian's sitecustomize.py -> /etc/...): its
// target's stat is recorded, so stat/access of it are served (opens are not).
void Builder::follow_outside(uint32_t parent, Entry& link) {
    std::string path =
        path_of(parent) + "/" + std::string(strings_.data() + link.name_off, link.name_len);
    char resolved[PATH_MAX];
    if (!REAL(realpath)(path.c_str(), resolved) || inside_roots(resolved)) return;
    struct statx sx {};
    if (REAL(statx)(AT_FDCWD, resolved, AT_NO_AUTOMOUNT, kStatxMask, &sx) != 0) return;
    link.follow = static_cast<uint32_t>(follow_.size());
    follow_.push_back(to_record(sx));
}

// The loader's own directories: libraries there are the system's, found by
// every rank from local disks (and listing them would cost thousands of
// entries).
bool Builder::is_system_directory(const std::string& path) const {
    for (const char* dir :
         {"/lib", "/lib64", "/usr/lib", "/usr/lib64", "/lib32", "/usr/lib32", "/usr/local/lib"})
        if (path == dir) return true;
    for (const char* dir : {"/lib/", "/usr/lib/"}) {
        std::string_view rest = std::string_view(path).substr(std::strlen(dir));
        if (path.starts_with(dir) && rest.find('/') == std::string_view::npos &&
            rest.find("-linux-") != std::string_view::npos)
            return true; // multiarch: /usr/lib/x86_64-linux-gnu
    }
    return false;
}

// Forgets an entry's bytes (the budget's accounting too); they leave data_
// when it is compacted.
void Builder::drop_content(uint32_t index) {
    Entry& e = entries_[index];
    cached_bytes_ -= e.content_len;
    e.flags &= static_cast<uint8_t>(~kHasContent);
    e.content_off = e.content_len = 0;
    if (std::erase_if(cached_, [&](const Cached& c) { return c.entry == index; }) > 0)
        std::make_heap(cached_.begin(), cached_.end());
}

void Builder::add_library_roots() {
    if (!options_.libraries || (!options_.search_dirs && options_.library_path.empty())) return;
    std::vector<std::string> wanted = options_.library_path;
    std::unordered_set<std::string> seen;
    size_t asked = 0; // entries whose search directories are taken
    for (;;) {
        if (options_.search_dirs) {
            for (; asked < entries_.size(); ++asked) {
                const Entry& e = entries_[asked];
                if (!(e.flags & kHasContent) || !S_ISREG(e.st.mode) ||
                    !is_library_name({strings_.data() + e.name_off, e.name_len}))
                    continue;
                std::string path = path_of(static_cast<uint32_t>(asked));
                options_.search_dirs(path, data_.data() + e.content_off,
                                     static_cast<size_t>(e.content_len), wanted);
            }
        }
        bool added = false;
        for (const std::string& want : wanted) {
            if (library_roots_.size() >= options_.max_library_roots) break;
            if (want.empty() || want[0] != '/' || !seen.insert(want).second) continue;
            int fd = open_quietly(AT_FDCWD, want.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            std::string path;
            struct statx st {};
            if (fd < 0) continue;
            if (!canonical_path(fd, want, path) || inside_roots(path) ||
                is_system_directory(path) ||
                REAL(statx)(fd, "", AT_EMPTY_PATH, kStatxMask, &st) != 0) {
                REAL(close)(fd);
                continue;
            }
            Entry e{};
            e.st = to_record(st);
            e.parent = kNoEntry;
            e.name_off = add_string(path);
            e.name_len = static_cast<uint32_t>(path.size());
            e.flags = kIsRoot;
            e.follow = kNoEntry;
            uint32_t index = static_cast<uint32_t>(entries_.size());
            entries_.push_back(e);
            library_roots_.push_back(index);
            library_root_set_.insert(index);
            root_paths_.push_back(path);
            root_live_.push_back(false);
            std::string ignored;
            record_directory(index, fd, ignored); // closes fd
            added = true;
        }
        wanted.clear();
        if (!added) break;
    }
}

void Builder::encode(std::vector<char>& image) {
    // Library roots join the roots, before the partial ones: every entry's
    // index changes, keeping the order of the rest (a parent stays before
    // its children).
    if (!library_roots_.empty()) {
        uint32_t walked = static_cast<uint32_t>(root_fds_.size());
        uint32_t partial = static_cast<uint32_t>(partial_fds_.size());
        uint32_t added = static_cast<uint32_t>(library_roots_.size());
        std::vector<uint32_t> remap(entries_.size());
        uint32_t next = walked + added + partial;
        for (uint32_t i = 0; i < entries_.size(); ++i) {
            if (i < walked)
                remap[i] = i;
            else if (i < walked + partial)
                remap[i] = i + added;
            else if (!library_root_set_.count(i))
                remap[i] = next++;
        }
        for (uint32_t j = 0; j < added; ++j)
            remap[library_roots_[j]] = walked + j;
        std::vector<Entry> moved(entries_.size());
        for (uint32_t i = 0; i < entries_.size(); ++i) {
            Entry e = entries_[i];
            if (e.parent != kNoEntry) e.parent = remap[e.parent];
            moved[remap[i]] = e;
        }
        entries_.swap(moved);
        for (ListingItem& item : listing_)
            if (item.entry != kNoEntry) item.entry = remap[item.entry];
    }
    if (data_.size() > cached_bytes_) compact_data(); // no evicted bytes in the image
    auto align8 = [](uint64_t v) { return (v + 7) & ~uint64_t{7}; };
    Header h{};
    std::memcpy(h.magic, kSnapshotMagic, sizeof h.magic);
    h.version = kSnapshotVersion;
    h.header_size = sizeof(Header);
    h.sizeof_entry = sizeof(Entry);
    h.entry_count = static_cast<uint32_t>(entries_.size());
    h.root_count =
        static_cast<uint32_t>(root_fds_.size() + library_roots_.size() + partial_fds_.size());
    h.listing_count = static_cast<uint32_t>(listing_.size());
    h.entries_off = align8(sizeof(Header));
    h.listing_off = align8(h.entries_off + entries_.size() * sizeof(Entry));
    h.strings_off = h.listing_off + listing_.size() * sizeof(ListingItem);
    h.strings_size = strings_.size();
    h.follow_off = align8(h.strings_off + h.strings_size);
    h.follow_count = static_cast<uint32_t>(follow_.size());
    h.data_off = h.follow_off + follow_.size() * sizeof(StatRecord);
    h.data_size = data_.size();
    h.total_size = h.data_off + h.data_size;
    h.euid = geteuid();
    h.egid = getegid();
    h.groups_hash = credentials_hash();
    h.statx_unrequested = statx_unrequested_;
    image.assign(h.total_size, 0);
    // An empty vector's data() may be null, which memcpy must not get even
    // for zero bytes.
    auto put = [&image](uint64_t offset, const void* from, size_t size) {
        if (size > 0) std::memcpy(image.data() + offset, from, size);
    };
    put(h.entries_off, entries_.data(), entries_.size() * sizeof(Entry));
    put(h.listing_off, listing_.data(), listing_.size() * sizeof(ListingItem));
    put(h.strings_off, strings_.data(), strings_.size());
    put(h.follow_off, follow_.data(), follow_.size() * sizeof(StatRecord));
    put(h.data_off, data_.data(), data_.size());
    std::vector<char>().swap(data_); // the budget's bytes are held once, in the image
    h.checksum = checksum(image.data() + sizeof(Header), image.size() - sizeof(Header));
    std::memcpy(image.data(), &h, sizeof h);
}

bool Builder::run(std::vector<char>& image, std::string& error) {
    if (!add_roots(error)) return false;
    add_partial_roots();
    for (const PendingProbe& probe : pending_probes_)
        record_probe(probe);
    if (root_fds_.empty() && partial_fds_.empty()) {
        error = "none of the prefixes exists; running uncached";
        return false;
    }
    struct statx minimal {};
    int first = root_fds_.empty() ? partial_fds_[0] : root_fds_[0];
    if (REAL(statx)(first, "", AT_EMPTY_PATH, STATX_TYPE, &minimal) == 0)
        statx_unrequested_ = minimal.stx_mask;
    for (int fd : partial_fds_)
        REAL(close)(fd);
    if (options_.profile) {
        for (const std::string& path : *options_.profile)
            for (std::string p = path; p.size() > 1 && wanted_.insert(p).second;)
                p = p.substr(0, std::max<size_t>(p.find_last_of('/'), 1));
    }
    bool ok = true;
    for (size_t i = 0; i < root_fds_.size(); ++i) {
        if (ok)
            ok = record_directory(static_cast<uint32_t>(i), root_fds_[i], error);
        else
            REAL(close)(root_fds_[i]);
    }
    if (!ok) return false;
    add_library_roots();
    for (uint32_t i = 0; options_.loaded && i < entries_.size(); ++i)
        if ((entries_[i].flags & kHasContent) &&
            is_library_name({strings_.data() + entries_[i].name_off, entries_[i].name_len}) &&
            options_.loaded(entries_[i].st))
            drop_content(i);
    if (strings_.size() > UINT32_MAX || entries_.size() >= kNoEntry ||
        listing_.size() >= kNoEntry) {
        error = "the module trees are too large for one snapshot; narrow PYIMPORT_PREFIX";
        return false;
    }
    if (options_.not_cached) *options_.not_cached = not_cached_report();
    encode(image);
    return true;
}

} // namespace

bool build_snapshot(const BuildOptions& options, std::vector<char>& image, std::string& error) {
    try {
        Builder builder(options);
        return builder.run(image, error);
    } catch (const std::bad_alloc&) {
        error = "out of memory while building the snapshot; running uncached";
    } catch (...) {
        error = "unexpected failure while building the snapshot; running uncached";
    }
    image.clear();
    return false;
}

} // namespace pyimport
