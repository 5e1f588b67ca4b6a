// The image format: one contiguous, position-independent byte image of the
// cached directory trees, built by rank 0 (walk.hpp), broadcast as is, and
// read in place by every rank (no decoding step, no per-rank copies beyond
// the buffer). Snapshot is the checked, read-only view of one.
//
// Layout: Header | Entry[entry_count] | ListingItem[listing_count] |
//         strings (names, symlink targets) | data (cached file bytes)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <vector>

namespace pyimport {

inline constexpr uint32_t kNoEntry = 0xffffffffu;
inline constexpr char kSnapshotMagic[8] = {'P', 'Y', 'I', 'M', 'P', 'S', 'N', '1'};
inline constexpr uint32_t kSnapshotVersion = 3;

// Entry flags.
inline constexpr uint8_t kHasListing = 1; // directory listed completely
inline constexpr uint8_t kHasContent = 2; // regular file whose bytes are in data
inline constexpr uint8_t kIsRoot = 4;     // a cached prefix
// Listed by name and type only (a data file, an excluded directory): calls on
// it and under it are forwarded.
inline constexpr uint8_t kNoStat = 8;
// A directory whose children are recorded one by one, not listed (the
// interpreter's start-up probes: /usr/bin/pyvenv.cfg ...): a name not among
// them is looked up further out (another root) or forwarded. Always a root.
inline constexpr uint8_t kPartial = 16;
// A root others may write into during the job (the script's directory):
// names not in it are forwarded, never "absent", and its listing is served
// only while the real directory's stat still matches. (Packages below it
// are answered like a prefix's; its data files are forwarded.)
inline constexpr uint8_t kLive = 32;
// A probed name that did not exist: lookups of it fail with Entry::error.
inline constexpr uint8_t kAbsent = 64;

struct Timestamp {
    int64_t sec;
    uint32_t nsec;
    uint32_t pad;
};

// What statx(AT_SYMLINK_NOFOLLOW) reported for the entry on rank 0.
struct StatRecord {
    uint32_t mask;
    uint32_t blksize;
    uint64_t attributes;
    uint64_t attributes_mask;
    uint32_t nlink;
    uint32_t uid;
    uint32_t gid;
    uint32_t mode;
    uint64_t ino;
    uint64_t size;
    uint64_t blocks;
    Timestamp atime, btime, ctime, mtime;
    uint32_t rdev_major, rdev_minor;
    uint32_t dev_major, dev_minor;
    uint64_t mnt_id;
};

struct Entry {
    StatRecord st;
    uint32_t parent;   // kNoEntry for a root
    uint32_t name_off; // into strings: the component name, or the full path of a root
    uint32_t name_len;
    uint32_t link_off; // symlink target, into strings
    uint32_t link_len;
    uint32_t listing_begin; // into listing items, readdir order (includes "." and "..")
    uint32_t listing_count;
    uint8_t flags;
    uint8_t error; // kAbsent: the errno of rank 0's lstat (ENOENT, EACCES)
    uint8_t pad[2];
    // A symlink whose target lies outside every prefix: the stat of the
    // target (index into follow records), or kNoEntry.
    uint32_t follow;
    uint32_t pad2;
    uint64_t content_off; // into data
    uint64_t content_len;
};

struct ListingItem {
    uint64_t ino;   // d_ino as readdir reported it
    uint32_t entry; // child entry, or kNoEntry for "." / ".."
    uint8_t type;   // d_type as readdir reported it
    uint8_t dots;   // 1 for ".", 2 for "..", 0 otherwise
    uint8_t pad[2];
};

struct Header {
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint64_t total_size;
    uint64_t checksum; // XXH3-64 of everything after the header
    uint32_t entry_count;
    uint32_t root_count; // roots are entries [0, root_count)
    uint32_t listing_count;
    uint32_t sizeof_entry;
    uint64_t entries_off, listing_off, strings_off, strings_size, data_off, data_size;
    // Credentials rank 0 read the trees with; a rank whose credentials differ
    // stays uncached, since permission checks were made with rank 0's.
    uint32_t euid, egid;
    uint64_t groups_hash;
    // statx result bits the kernel returns even when not asked for them
    // (newer kernels return times only on request).
    uint32_t statx_unrequested;
    uint32_t follow_count;
    uint64_t follow_off; // StatRecord[follow_count]
};

// Read-only view over a snapshot image. The image must outlive the view.
class Snapshot {
  public:
    // Checks magic, version, bounds and (unless `checksum_checked`: the
    // bytes were checked where they cannot have changed since) the checksum.
    // Returns false with a reason.
    bool attach(const void* image, size_t size, std::string& error, bool checksum_checked = false);

    uint32_t entry_count() const { return header_->entry_count; }
    uint32_t root_count() const { return header_->root_count; }
    const Header& header() const { return *header_; }
    const Entry& entry(uint32_t index) const { return entries_[index]; }
    std::string_view name(uint32_t index) const {
        const Entry& e = entries_[index];
        return {strings_ + e.name_off, e.name_len};
    }
    std::string_view link_target(uint32_t index) const {
        const Entry& e = entries_[index];
        return {strings_ + e.link_off, e.link_len};
    }
    const ListingItem* listing(uint32_t index) const {
        return listing_ + entries_[index].listing_begin;
    }
    const char* content(uint32_t index) const { return data_ + entries_[index].content_off; }
    const StatRecord& followed(uint32_t index) const { return follow_[entries_[index].follow]; }
    std::string path(uint32_t index) const; // full path, for messages
    size_t size() const { return header_ ? header_->total_size : 0; }

  private:
    const Header* header_ = nullptr;
    const Entry* entries_ = nullptr;
    const ListingItem* listing_ = nullptr;
    const char* strings_ = nullptr;
    const char* data_ = nullptr;
    const StatRecord* follow_ = nullptr;
};

// Hash of the process's credentials, compared with Header::groups_hash.
uint64_t credentials_hash();

// Fills `st` from a record; the layout of struct stat is the kernel's.
void to_stat(const StatRecord& record, struct stat& st);

uint64_t checksum(const void* data, size_t size);

} // namespace pyimport
