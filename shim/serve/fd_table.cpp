// The descriptor table (fd_table.hpp): slots, their packing, and the check
// of a slot against the descriptor it names (a memory file, same inode).
#include "serve/fd_table.hpp"

#include "base/real.hpp"
#include "image/image.hpp"
#include "serve/memory_file.hpp"

#include <sys/stat.h>

namespace pyimport {

namespace {
uint64_t pack(uint32_t entry, uint64_t ino) {
    return (uint64_t{entry + 1} << 32) | (ino & 0xffffffffu);
}
} // namespace

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

} // namespace pyimport
