#include "image/image.hpp"

#include "base/credentials.hpp"

#include "base/real.hpp"

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
#include <sys/sysmacros.h>
#include <unistd.h>
#include <xxhash.h>

namespace pyimport {

uint64_t checksum(const void* data, size_t size) {
    return XXH3_64bits(data, size);
}

uint64_t credentials_hash() {
    // Every supplementary group, however many; if the kernel will not say,
    // no groups are hashed.
    std::vector<gid_t> groups;
    if (!supplementary_groups(groups)) groups.clear();
    std::sort(groups.begin(), groups.end());
    uint64_t ids[4] = {getuid(), geteuid(), getgid(), getegid()};
    return XXH3_64bits_withSeed(groups.data(), sizeof(gid_t) * groups.size(),
                                XXH3_64bits(ids, sizeof ids));
}

void to_stat(const StatRecord& r, struct stat& st) {
    std::memset(&st, 0, sizeof st);
    st.st_dev = makedev(r.dev_major, r.dev_minor);
    st.st_ino = r.ino;
    st.st_mode = r.mode;
    st.st_nlink = r.nlink;
    st.st_uid = r.uid;
    st.st_gid = r.gid;
    st.st_rdev = makedev(r.rdev_major, r.rdev_minor);
    st.st_size = static_cast<off_t>(r.size);
    st.st_blksize = r.blksize;
    st.st_blocks = static_cast<blkcnt_t>(r.blocks);
    st.st_atim = {r.atime.sec, r.atime.nsec};
    st.st_mtim = {r.mtime.sec, r.mtime.nsec};
    st.st_ctim = {r.ctime.sec, r.ctime.nsec};
}

std::string Snapshot::path(uint32_t index) const {
    std::vector<std::string_view> parts;
    for (uint32_t i = index; i != kNoEntry; i = entries_[i].parent)
        parts.push_back(name(i));
    std::string out;
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (!out.empty() && out.back() != '/') out += '/';
        out += *it;
    }
    return out;
}

bool Snapshot::attach(const void* image, size_t size, std::string& error, bool checksum_checked) {
    auto* bytes = static_cast<const char*>(image);
    if (size < sizeof(Header)) return error = "snapshot truncated", false;
    auto* h = reinterpret_cast<const Header*>(bytes);
    if (std::memcmp(h->magic, kSnapshotMagic, sizeof h->magic) != 0)
        return error = "snapshot has a bad magic number", false;
    if (h->version != kSnapshotVersion || h->header_size != sizeof(Header) ||
        h->sizeof_entry != sizeof(Entry))
        return error = "snapshot was made by another version of pyimport", false;
    if (h->total_size != size) return error = "snapshot size does not match its header", false;
    if (!checksum_checked && checksum(bytes + sizeof(Header), size - sizeof(Header)) != h->checksum)
        return error = "snapshot checksum mismatch (corrupt transfer)", false;
    auto within = [&](uint64_t off, uint64_t len) { return off <= size && len <= size - off; };
    if (!within(h->entries_off, uint64_t{h->entry_count} * sizeof(Entry)) ||
        !within(h->listing_off, uint64_t{h->listing_count} * sizeof(ListingItem)) ||
        !within(h->strings_off, h->strings_size) || !within(h->data_off, h->data_size) ||
        !within(h->follow_off, uint64_t{h->follow_count} * sizeof(StatRecord)) ||
        h->follow_off % 8 || h->root_count > h->entry_count || h->entries_off % 8 ||
        h->listing_off % 8)
        return error = "snapshot sections out of bounds", false;
    auto* entries = reinterpret_cast<const Entry*>(bytes + h->entries_off);
    for (uint32_t i = 0; i < h->entry_count; ++i) {
        const Entry& e = entries[i];
        // Roots have no parent, every other entry an earlier one (as the walk
        // makes them): no chain of parents can loop.
        if ((i < h->root_count) != (e.parent == kNoEntry) ||
            (e.parent != kNoEntry && e.parent >= i) ||
            uint64_t{e.name_off} + e.name_len > h->strings_size ||
            uint64_t{e.link_off} + e.link_len > h->strings_size ||
            uint64_t{e.listing_begin} + e.listing_count > h->listing_count ||
            (e.follow != kNoEntry && e.follow >= h->follow_count) || e.content_off > h->data_size ||
            e.content_len > h->data_size - e.content_off)
            return error = "snapshot entry out of bounds", false;
        // Lookups leave a partial directory by its full path: only a root has one.
        if (((e.flags & kPartial) && e.parent != kNoEntry) ||
            ((e.flags & kAbsent) && (e.error == 0 || (e.flags & (kHasListing | kHasContent)))))
            return error = "snapshot entry has inconsistent flags", false;
    }
    auto* listing = reinterpret_cast<const ListingItem*>(bytes + h->listing_off);
    for (uint32_t i = 0; i < h->listing_count; ++i)
        if (listing[i].entry != kNoEntry && listing[i].entry >= h->entry_count)
            return error = "snapshot listing out of bounds", false;
    header_ = h;
    entries_ = entries;
    listing_ = listing;
    strings_ = bytes + h->strings_off;
    data_ = bytes + h->data_off;
    follow_ = reinterpret_cast<const StatRecord*>(bytes + h->follow_off);
    return true;
}

} // namespace pyimport
