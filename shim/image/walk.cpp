// The walk: rank 0 reads the prefixes with the real libc, in named steps
// (list a directory, classify and record each child, read the bytes wanted,
// descend into subdirectories), and encodes the image.
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

class Builder {
  public:
    explicit Builder(const BuildOptions& options) : options_(options) {}

    bool run(std::vector<char>& image, std::string& error);

  private:
    struct Pending {
        uint32_t index;
        int fd; // open directory, owned
    };

    bool add_roots(std::string& error);
    bool walk(uint32_t index, int dirfd, std::string& error);
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

bool Builder::walk(uint32_t index, int dirfd, std::string& error) {
    // List the directory first; the listing becomes this entry's items in
    // readdir order, and children get entries. Each child costs the fewest
    // requests to the filesystem that give its stat: on a parallel
    // filesystem every one of them is a round trip to the metadata server.
    DIR* dir = ::fdopendir(dirfd);
    if (!dir) {
        REAL(close)(dirfd);
        return true;
    }
    struct Item {
        std::string name;
        uint64_t ino;
        uint8_t type;
    };
    std::vector<Item> items;
    bool listed = true;
    for (;;) {
        errno = 0;
        struct dirent64* d = REAL(readdir64)(dir);
        if (!d) {
            if (errno != 0) listed = false;
            break;
        }
        items.push_back({d->d_name, d->d_ino, d->d_type});
    }
    std::string dir_path = options_.profile ? path_of(index) : std::string();
    if (dir_path == "/") dir_path.clear();
    // Owner (or root) of this directory: likely owner of its files, so
    // O_NOATIME is worth trying (for anyone else it fails with EPERM and
    // would cost a second lookup per open).
    bool noatime = geteuid() == 0 || entries_[index].st.uid == geteuid();

    struct Subdir {
        uint32_t entry;
        int fd; // open, or -1: reopen when walked
    };
    std::vector<Subdir> subdirs;
    std::vector<uint32_t> sources; // .py files, read after __pycache__ is known
    std::vector<ListingItem> local;
    size_t first_child = entries_.size();
    auto close_subdirs = [&] {
        for (const Subdir& s : subdirs)
            if (s.fd >= 0) {
                REAL(close)(s.fd);
                ++open_subdirs_left_;
            }
        subdirs.clear();
    };
    for (const Item& item : items) {
        ListingItem li{};
        li.ino = item.ino;
        li.type = item.type;
        li.entry = kNoEntry;
        if (item.name == "." || item.name == "..") {
            li.dots = item.name == "." ? 1 : 2;
            local.push_back(li);
            continue;
        }
        Entry e{};
        e.follow = kNoEntry;
        e.parent = index;
        e.name_off = add_string(item.name);
        e.name_len = static_cast<uint32_t>(item.name.size());
        const char* name = item.name.c_str();
        int subdir_fd = -1;
        bool stated = false;
        if (known_by_name_only(dir_path, item.name, item.type)) {
            e.st.mode = DTTOIF(item.type);
            e.st.ino = item.ino;
            e.flags |= kNoStat;
            stated = true;
        } else if (item.type == DT_DIR) {
            subdir_fd = open_directory(dirfd, name, noatime, e);
            stated = subdir_fd >= 0;
        } else if (item.type == DT_REG && wants_content(item.name) && !is_source(item.name)) {
            stated = read_content(dirfd, name, noatime, e);
        }
        if (!stated && !stat_by_name(dirfd, name, e)) {
            listed = false; // vanished or not searchable: let lookups here go to the FS
            break;
        }
        if (S_ISLNK(e.st.mode)) {
            std::vector<char> target(e.st.size + 2 > PATH_MAX ? e.st.size + 2 : PATH_MAX);
            ssize_t n = REAL(readlinkat)(dirfd, name, target.data(), target.size());
            // Reading a link can update its atime: take its stat afterwards.
            if (n < 0 || static_cast<size_t>(n) >= target.size() || !stat_by_name(dirfd, name, e) ||
                !S_ISLNK(e.st.mode)) {
                listed = false;
                break;
            }
            e.link_off = add_string({target.data(), static_cast<size_t>(n)});
            e.link_len = static_cast<uint32_t>(n);
            follow_outside(index, e);
        } else if (S_ISREG(e.st.mode) && wants_content(item.name)) {
            if (is_source(item.name))
                sources.push_back(static_cast<uint32_t>(entries_.size()));
            else if (!(e.flags & kHasContent) && item.type != DT_REG)
                read_content(dirfd, name, noatime, e); // the listing gave no type
        }
        li.entry = static_cast<uint32_t>(entries_.size());
        if (S_ISDIR(e.st.mode) && !(e.flags & kNoStat) &&
            (options_.profile || !excluded(item.name))) {
            // Keep a bounded number of directories open; the rest are
            // reopened when walked and must still be the same directory.
            if (subdir_fd >= 0 && open_subdirs_left_ == 0) {
                REAL(close)(subdir_fd);
                subdir_fd = -1;
            } else if (subdir_fd >= 0) {
                --open_subdirs_left_;
            }
            subdirs.push_back({li.entry, subdir_fd});
        } else if (subdir_fd >= 0) {
            REAL(close)(subdir_fd);
        }
        entries_.push_back(e);
        if ((e.flags & kHasContent) && library_only(item.name))
            library_entries_.push_back(li.entry);
        local.push_back(li);
        if (over_budget(error)) {
            close_subdirs();
            REAL(closedir)(dir);
            return false;
        }
    }
    if (listed) {
        entries_[index].listing_begin = static_cast<uint32_t>(listing_.size());
        entries_[index].listing_count = static_cast<uint32_t>(local.size());
        entries_[index].flags |= kHasListing;
        listing_.insert(listing_.end(), local.begin(), local.end());
    } else {
        // Keep no half listing: drop the children made so far.
        entries_.resize(first_child);
        close_subdirs();
        sources.clear();
    }
    for (size_t i = 0; i < subdirs.size(); ++i) {
        uint32_t child = subdirs[i].entry;
        int fd = subdirs[i].fd;
        subdirs[i].fd = -1;
        if (fd >= 0) {
            ++open_subdirs_left_; // walk() owns it now
        } else {
            std::string child_name(strings_.data() + entries_[child].name_off,
                                   entries_[child].name_len);
            Entry again = entries_[child];
            fd = open_directory(dirfd, child_name.c_str(), noatime, again);
            if (fd >= 0 && (again.st.ino != entries_[child].st.ino ||
                            again.st.dev_major != entries_[child].st.dev_major ||
                            again.st.dev_minor != entries_[child].st.dev_minor)) {
                REAL(close)(fd); // replaced meanwhile: lookups inside are forwarded
                fd = -1;
            }
        }
        if (fd < 0) continue; // not listable: lookups inside are forwarded
        if (!walk(child, fd, error)) {
            close_subdirs();
            REAL(closedir)(dir);
            return false;
        }
    }
    for (uint32_t source : sources) {
        if (has_bytecode(index, source)) continue;
        std::string name(strings_.data() + entries_[source].name_off, entries_[source].name_len);
        Entry e = entries_[source];
        read_content(dirfd, name.c_str(), noatime, e);
        entries_[source] = e;
        if (over_budget(error)) {
            REAL(closedir)(dir);
            return false;
        }
    }
    REAL(closedir)(dir);
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
    std::memcpy(image.data() + h.entries_off, entries_.data(), entries_.size() * sizeof(Entry));
    std::memcpy(image.data() + h.listing_off, listing_.data(),
                listing_.size() * sizeof(ListingItem));
    std::memcpy(image.data() + h.strings_off, strings_.data(), strings_.size());
    std::memcpy(image.data() + h.follow_off, follow_.data(), follow_.size() * sizeof(StatRecord));
    std::memcpy(image.data() + h.data_off, data_.data(), data_.size());
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
            ok = walk(static_cast<uint32_t>(i), root_fds_[i], error);
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
