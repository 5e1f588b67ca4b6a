// Synthetic directory streams (dir_stream.hpp): the arena and its free list,
// readdir over a listing, positions, and the real directory behind dirfd().
#include "serve/dir_stream.hpp"

#include "base/real.hpp"

#include <atomic>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <sys/mman.h>

namespace pyimport {

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

DIR* make_dir_stream(const Snapshot& snapshot, uint32_t entry, int fd) {
    DirStream* d = allocate_dir();
    if (!d) return nullptr;
    d->snapshot = &snapshot;
    d->entry = entry;
    d->position = 0;
    d->fd = fd;
    d->real = false;
    d->next_free = nullptr;
    return reinterpret_cast<DIR*>(d);
}

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

} // namespace pyimport
