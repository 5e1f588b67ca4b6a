// The walk: rank 0 reads the prefixes with the real libc, one directory at a
// time in named steps (record_directory: list it, record each child, keep or
// abandon the listing, descend into the subdirectories, read the sources),
// and encodes the image.
#include "image/walk.hpp"

#include "base/real.hpp"
#include "image/library_name.hpp"

#include <algorithm>
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
bool list_directory(DIR* dir, std::vector<Item>& items) {
    for (;;) {
        errno = 0;
        struct dirent64* d = REAL(readdir64)(dir);
        if (!d) return errno == 0;
        items.push_back({d->d_name, d->d_ino, d->d_type});
    }
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
        std::vector<Item> items;          // readdir order
        std::vector<ListingItem> listing; // becomes the entry's listing
        std::vector<Subdir> subdirs;      // walked after the listing
        std::vector<uint32_t> sources;    // .py files, read after __pycache__ is known
        // Sizes before the children were recorded, to forget them.
        size_t first_child, first_string, first_follow;
    };
    enum class Outcome { Recorded, Unreadable, OverBudget };

    bool add_roots(std::string& error);
    bool record_directory(uint32_t index, int dirfd, std::string& error);
    Outcome record_child(Directory& d, const Item& item, std::string& error);
    bool stat_child(const Directory& d, const Item& item, Entry& e, int& subdir_fd);
    bool record_link(const Directory& d, const char* name, Entry& e);
    void queue_subdirectory(Directory& d, std::string_view name, const Entry& e, uint32_t entry,
                            int fd);
    void keep_listing(const Directory& d);
    void abandon_listing(Directory& d);
    void close_subdirs(Directory& d);
    bool descend(Directory& d, std::string& error);
    int reopen_subdirectory(const Directory& d, uint32_t child);
    bool read_sources(const Directory& d, std::string& error);
    bool read_content(int dirfd, const char* name, bool noatime, Entry& entry);
    bool stat_by_name(int dirfd, const char* name, Entry& entry);
    int open_directory(int dirfd, const char* name, bool noatime, Entry& entry);
    bool wants_content(std::string_view name) const;
    bool wants_stat(std::string_view name) const;
    bool excluded(std::string_view name) const;
    bool known_by_name_only(const std::string& dir_path, std::string_view name, uint8_t type) const;
    bool is_source(std::string_view name) const;
    bool has_bytecode(uint32_t dir, uint32_t source) const;
    uint32_t add_string(std::string_view text);
    bool over_budget(std::string& error);
    uint64_t current_size() const;
    void drop_library_contents();
    std::string budget_message() const;
    bool wants_source_content(std::string_view name) const;
    bool library_only(std::string_view name) const;
    bool encode(std::vector<char>& image, std::string& error);

    const BuildOptions& options_;
    std::vector<Entry> entries_;
    std::vector<ListingItem> listing_;
    std::string strings_;
    std::vector<char> data_;
    std::vector<int> root_fds_;
    std::vector<std::string> root_paths_;
    std::vector<StatRecord> follow_;
    uint32_t statx_unrequested_ = 0;
    std::unordered_set<std::string> wanted_; // profile paths and their ancestors
    uint32_t libraries_over_budget_ = 0;
    std::vector<uint32_t> library_entries_; // entries holding a library's bytes
    bool libraries_dropped_ = false;
    // Directories kept open between being listed and being walked, over the
    // whole walk (so deep trees cannot run the process out of descriptors).
    size_t open_subdirs_left_ = 128;

    std::string path_of(uint32_t index) const;
    bool inside_roots(const std::string& path) const;
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

// Its bytes are cached only as a library's: optional, within the budget.
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
bool Builder::known_by_name_only(const std::string& dir_path, std::string_view name,
                                 uint8_t type) const {
    if (type != DT_REG && type != DT_DIR) return false;
    if (options_.profile) return !wanted_.count(dir_path + "/" + std::string(name));
    return type == DT_DIR ? excluded(name) : !wants_stat(name);
}

uint32_t Builder::add_string(std::string_view text) {
    auto offset = static_cast<uint32_t>(strings_.size());
    strings_.append(text);
    return offset;
}

std::string Builder::budget_message() const {
    return "the module trees need more than PYIMPORT_MAX_BYTES=" +
           std::to_string(options_.max_bytes) +
           " bytes; raise it or narrow PYIMPORT_PREFIX; running uncached";
}

void Builder::drop_library_contents() {
    for (uint32_t index : library_entries_) {
        entries_[index].flags &= static_cast<uint8_t>(~kHasContent);
        entries_[index].content_off = entries_[index].content_len = 0;
    }
    libraries_over_budget_ += static_cast<uint32_t>(library_entries_.size());
    library_entries_.clear();
    libraries_dropped_ = true;
    std::vector<char> kept;
    for (Entry& e : entries_) {
        if (!(e.flags & kHasContent)) continue;
        size_t offset = kept.size();
        kept.insert(kept.end(), data_.begin() + static_cast<ptrdiff_t>(e.content_off),
                    data_.begin() + static_cast<ptrdiff_t>(e.content_off + e.content_len));
        e.content_off = offset;
    }
    data_.swap(kept);
}

uint64_t Builder::current_size() const {
    return sizeof(Header) + entries_.size() * sizeof(Entry) +
           listing_.size() * sizeof(ListingItem) + strings_.size() + data_.size();
}

// Past the budget the libraries' bytes go first: without them the libraries
// are loaded from the filesystem, and everything else is still cached.
bool Builder::over_budget(std::string& error) {
    if (current_size() <= options_.max_bytes) return false;
    if (!library_entries_.empty()) {
        drop_library_contents();
        if (current_size() <= options_.max_bytes) return false;
    }
    error = budget_message();
    return true;
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
    if (!realpath(path.c_str(), resolved)) return false; // no /proc
    out = resolved;
    return true;
}

bool Builder::add_roots(std::string& error) {
    struct Root {
        std::string path;
        int fd;
        struct statx st;
    };
    std::vector<Root> roots;
    for (const std::string& prefix : options_.prefixes) {
        Root r{{}, open_quietly(AT_FDCWD, prefix.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), {}};
        bool ok = r.fd >= 0 && canonical_path(r.fd, prefix, r.path) &&
                  REAL(statx)(r.fd, "", AT_EMPTY_PATH, kStatxMask, &r.st) == 0;
        if (ok) {
            roots.push_back(std::move(r));
            continue;
        }
        int saved = errno;
        if (r.fd >= 0) REAL(close)(r.fd);
        if (!options_.prefixes_required) continue;
        error = "cannot read prefix " + prefix + ": " + std::strerror(saved) + "; running uncached";
        for (const Root& done : roots)
            REAL(close)(done.fd);
        return false;
    }
    // A prefix inside another (or the same) is covered by the outer walk.
    std::sort(roots.begin(), roots.end(),
              [](const Root& x, const Root& y) { return x.path < y.path; });
    for (const Root& root : roots) {
        bool nested = false;
        for (const std::string& o : root_paths_)
            if (o == "/" || root.path == o ||
                (root.path.starts_with(o) && root.path[o.size()] == '/'))
                nested = true;
        if (nested) {
            REAL(close)(root.fd);
            continue;
        }
        Entry e{};
        e.st = to_record(root.st);
        e.parent = kNoEntry;
        e.name_off = add_string(root.path);
        e.name_len = static_cast<uint32_t>(root.path.size());
        e.flags = kIsRoot;
        e.follow = kNoEntry;
        entries_.push_back(e);
        root_fds_.push_back(root.fd);
        root_paths_.push_back(root.path);
    }
    return true;
}

// Reads a file into data_ with one open: open, fstat, read exactly the size
// fstat gave. Reading up to EOF, not past it, matters: on FUSE and other
// network filesystems a read past the cached size is one more attribute
// request to the server. A file whose ctime is not clearly older than the read
// may be changing, so it is stat'ed again after the read and read until two
// stats agree. Unreadable files get no content: their opens are forwarded and
// fail as they would. Returns false only if the file could not be opened or
// stat'ed, so the caller can fall back to a stat by name.
bool Builder::read_content(int dirfd, const char* name, bool noatime, Entry& entry) {
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
        size_t start = data_.size();
        size_t want = entry.st.size;
        // Libraries are cached only within the budget: past it they are
        // loaded from the filesystem, and the rest of the walk goes on.
        if (library_only(name) &&
            (libraries_dropped_ || current_size() + want > options_.max_bytes)) {
            ++libraries_over_budget_;
            REAL(close)(fd);
            return true;
        }
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

// Lists a directory and records its children, then descends into its
// subdirectories and reads its sources. Each child costs the fewest requests
// to the filesystem that give its stat: on a parallel filesystem every one of
// them is a round trip to the metadata server. False only if the whole build
// must stop (the budget).
bool Builder::record_directory(uint32_t index, int dirfd, std::string& error) {
    DIR* dir = ::fdopendir(dirfd);
    if (!dir) {
        REAL(close)(dirfd);
        return true;
    }
    Directory d{};
    d.index = index;
    d.fd = dirfd;
    bool complete = list_directory(dir, d.items);
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
        Outcome outcome = record_child(d, item, error);
        if (outcome == Outcome::OverBudget) {
            close_subdirs(d);
            REAL(closedir)(dir);
            return false;
        }
        if (outcome == Outcome::Unreadable) {
            complete = false; // vanished or not searchable: let lookups here go to the FS
            break;
        }
    }
    if (complete)
        keep_listing(d);
    else
        abandon_listing(d);
    bool ok = descend(d, error) && read_sources(d, error);
    REAL(closedir)(dir);
    return ok;
}

// Records one child: its entry and listing item, a symlink's target, a cached
// file's bytes; a subdirectory is queued and a source deferred.
Builder::Outcome Builder::record_child(Directory& d, const Item& item, std::string& error) {
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
    queue_subdirectory(d, item.name, e, li.entry, subdir_fd);
    entries_.push_back(e);
    if ((e.flags & kHasContent) && library_only(item.name)) library_entries_.push_back(li.entry);
    d.listing.push_back(li);
    return over_budget(error) ? Outcome::OverBudget : Outcome::Recorded;
}

// The child's stat at the fewest requests: the listing's type alone
// (kNoStat); the open that is needed anyway, for a directory (its descriptor
// then lists it, returned in subdir_fd) or a cached file (open, fstat, read);
// else a stat by name. False if it has none.
bool Builder::stat_child(const Directory& d, const Item& item, Entry& e, int& subdir_fd) {
    if (known_by_name_only(d.path, item.name, item.type)) {
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
    follow_outside(d.index, e);
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
// count against the budget nor are touched by drop_library_contents() once
// their indices are reused.
void Builder::abandon_listing(Directory& d) {
    // Their bytes are data_'s tail: read while listing this directory, and
    // drop_library_contents() keeps entry order, in which they come last.
    size_t data_end = data_.size();
    for (size_t i = d.first_child; i < entries_.size(); ++i)
        if (entries_[i].flags & kHasContent)
            data_end = std::min<size_t>(data_end, entries_[i].content_off);
    data_.resize(data_end);
    std::erase_if(library_entries_, [&](uint32_t i) { return i >= d.first_child; });
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
bool Builder::read_sources(const Directory& d, std::string& error) {
    for (uint32_t source : d.sources) {
        if (has_bytecode(d.index, source)) continue;
        std::string name(strings_.data() + entries_[source].name_off, entries_[source].name_len);
        Entry e = entries_[source];
        read_content(d.fd, name.c_str(), d.noatime, e);
        entries_[source] = e;
        if (over_budget(error)) return false;
    }
    return true;
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

bool Builder::inside_roots(const std::string& path) const {
    for (const std::string& root : root_paths_)
        if (root == "/" || path == root || (path.starts_with(root) && path[root.size()] == '/'))
            return true;
    return false;
}

// A symlink out of the prefixes (Debian's sitecustomize.py -> /etc/...): its
// target's stat is recorded, so stat/access of it are served (opens are not).
void Builder::follow_outside(uint32_t parent, Entry& link) {
    std::string path =
        path_of(parent) + "/" + std::string(strings_.data() + link.name_off, link.name_len);
    char resolved[PATH_MAX];
    if (!realpath(path.c_str(), resolved) || inside_roots(resolved)) return;
    struct statx sx {};
    if (REAL(statx)(AT_FDCWD, resolved, AT_NO_AUTOMOUNT, kStatxMask, &sx) != 0) return;
    link.follow = static_cast<uint32_t>(follow_.size());
    follow_.push_back(to_record(sx));
}

bool Builder::encode(std::vector<char>& image, std::string& error) {
    if (over_budget(error)) return false;
    auto align8 = [](uint64_t v) { return (v + 7) & ~uint64_t{7}; };
    Header h{};
    std::memcpy(h.magic, kSnapshotMagic, sizeof h.magic);
    h.version = kSnapshotVersion;
    h.header_size = sizeof(Header);
    h.sizeof_entry = sizeof(Entry);
    h.entry_count = static_cast<uint32_t>(entries_.size());
    h.root_count = static_cast<uint32_t>(root_fds_.size());
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
    if (h.total_size > options_.max_bytes) { // the alignment's few bytes
        error = budget_message();
        return false;
    }
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
    h.checksum = checksum(image.data() + sizeof(Header), image.size() - sizeof(Header));
    std::memcpy(image.data(), &h, sizeof h);
    return true;
}

bool Builder::run(std::vector<char>& image, std::string& error) {
    if (!add_roots(error)) return false;
    if (root_fds_.empty()) {
        error = "none of the prefixes exists; running uncached";
        return false;
    }
    struct statx minimal {};
    if (REAL(statx)(root_fds_[0], "", AT_EMPTY_PATH, STATX_TYPE, &minimal) == 0)
        statx_unrequested_ = minimal.stx_mask;
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
    if (strings_.size() > UINT32_MAX || entries_.size() >= kNoEntry ||
        listing_.size() >= kNoEntry) {
        error = "the module trees are too large for one snapshot; narrow PYIMPORT_PREFIX";
        return false;
    }
    if (options_.libraries_over_budget) *options_.libraries_over_budget = libraries_over_budget_;
    return encode(image, error);
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
