// Memory files: what a served open() returns in place of a cached file. A
// sealed memfd holding the file's bytes, reopened read-only and numbered as
// the lowest free descriptor, as the real open's would be; and the device
// number that tells such descriptors from every other file.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pyimport {

// A read-only descriptor holding `size` bytes, on the lowest free number;
// `flags` gives O_CLOEXEC and O_NONBLOCK as the caller asked. Sets `ino` to
// the memory file's inode. -1 with errno on failure (nothing left open).
int make_memory_file(const char* bytes, size_t size, int flags, uint64_t& ino);

// The device of memory files (probed once), or ~0 if it cannot be known.
uint64_t memfd_dev();

} // namespace pyimport
