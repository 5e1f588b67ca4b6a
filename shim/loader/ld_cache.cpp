#include "loader/ld_cache.hpp"

#include "base/real.hpp"

#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace pyimport {

namespace {

constexpr char kMagic[] = "glibc-ld.so.cache1.1"; // magic and version, 20 bytes

// glibc's FLAG_ELF_LIBC6 | the ABI's own flag (sysdeps/.../dl-cache.h).
#if defined(__x86_64__)
constexpr int32_t kAbiFlags = 0x0303; // FLAG_X8664_LIB64
#elif defined(__aarch64__)
constexpr int32_t kAbiFlags = 0x0a03; // FLAG_AARCH64_LIB64
#elif defined(__powerpc64__)
constexpr int32_t kAbiFlags = 0x0503; // FLAG_POWERPC_LIB64
#else
constexpr int32_t kAbiFlags = -1;
#endif

struct Header {
    char magic[20];
    uint32_t nlibs;
    uint32_t len_strings;
    uint8_t flags;
    uint8_t padding[3];
    uint32_t extension_offset;
    uint32_t unused[3];
};
static_assert(sizeof(Header) == 48);

struct FileEntry {
    int32_t flags;
    uint32_t key, value;
    uint32_t osversion;
    uint64_t hwcap;
};
static_assert(sizeof(FileEntry) == 24);

bool string_at(const char* data, size_t size, uint32_t offset, std::string& out) {
    if (offset >= size) return false;
    const void* end = std::memchr(data + offset, '\0', size - offset);
    if (!end) return false;
    out.assign(data + offset, static_cast<const char*>(end));
    return true;
}

} // namespace

bool LdCache::parse(const char* data, size_t size) {
    items_.clear();
    loaded_ = false;
    Header h;
    if (size < sizeof h) return false;
    std::memcpy(&h, data, sizeof h);
    if (std::memcmp(h.magic, kMagic, sizeof h.magic) != 0) return false;
    // flags 2: little-endian, 3: big (glibc's cache_file_new_flags_endian_*);
    // 0: not said (older ldconfig), which glibc takes as this machine's.
    unsigned endian = h.flags & 3;
    if (endian != 0 && endian != (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? 2u : 3u))
        return false;
    if (h.nlibs > (size - sizeof h) / sizeof(FileEntry)) return false;
    for (uint32_t i = 0; i < h.nlibs; ++i) {
        FileEntry e;
        std::memcpy(&e, data + sizeof h + i * sizeof e, sizeof e);
        if (e.flags != kAbiFlags) continue;
        Item item;
        item.hwcap = e.hwcap;
        if (!string_at(data, size, e.key, item.key) || !string_at(data, size, e.value, item.value))
            return items_.clear(), false;
        items_.push_back(std::move(item));
    }
    loaded_ = true;
    return true;
}

bool LdCache::load(const char* path) {
    int fd = REAL(open)(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    struct stat st {};
    std::vector<char> bytes;
    bool ok = REAL(fstat)(fd, &st) == 0 && st.st_size > 0 && st.st_size < (64 << 20);
    if (ok) bytes.resize(static_cast<size_t>(st.st_size));
    for (size_t at = 0; ok && at < bytes.size();) {
        ssize_t got = ::read(fd, bytes.data() + at, bytes.size() - at);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            ok = false;
        else
            at += static_cast<size_t>(got);
    }
    REAL(close)(fd);
    return ok && parse(bytes.data(), bytes.size());
}

LdCache::Answer LdCache::lookup(std::string_view name, std::string& path) const {
    if (!loaded_) return Answer::unknown;
    const Item* first = nullptr;
    for (const Item& item : items_) {
        if (item.key != name) continue;
        // glibc chooses among entries for hardware capabilities (glibc-hwcaps
        // subdirectories, legacy hwcap bits): not followed here.
        if (item.hwcap != 0) return Answer::unknown;
        if (!first) first = &item;
    }
    if (!first) return Answer::missing;
    path = first->value;
    return Answer::found;
}

} // namespace pyimport
