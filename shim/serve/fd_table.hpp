// The descriptor table: which descriptors are the shim's memory files, and
// for which snapshot entry. Kept up to date by the descriptor entry points
// (close, close_range, dup, fcntl's dup forms) and verified on every lookup.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace pyimport {

// Descriptors the shim opened in place of a cached file or directory: each
// slot packs (entry + 1) and the low bits of the memfd's inode, so a slot
// left by a descriptor closed behind our back (a raw syscall) never matches
// a new, unrelated descriptor.
class FdTable {
  public:
    explicit FdTable(size_t capacity);
    size_t capacity() const { return capacity_; }
    void set(int fd, uint32_t entry, uint64_t ino);
    void clear(int fd);
    void clear_range(unsigned first, unsigned last);
    void copy(int from, int to); // dup
    // The entry behind `fd`, verified against the descriptor itself.
    uint32_t lookup(int fd) const;
    bool maybe_served(int fd) const {
        return fd >= 0 && static_cast<size_t>(fd) < capacity_ &&
               slots_[fd].load(std::memory_order_acquire) != 0;
    }

  private:
    size_t capacity_;
    std::unique_ptr<std::atomic<uint64_t>[]> slots_;
};

} // namespace pyimport
