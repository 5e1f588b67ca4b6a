// The ld.so cache (/etc/ld.so.cache, made by ldconfig), read as glibc's
// loader reads it for a name its search directories did not hold
// (elf/dl-cache.c): the new format ("glibc-ld.so.cache1.1"), entries of this
// machine's ABI.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pyimport {

class LdCache {
  public:
    // Reads the cache from bytes; false (and an empty cache) for anything
    // but the new format, whole and consistent.
    bool parse(const char* data, size_t size);
    bool load(const char* path = "/etc/ld.so.cache"); // with the real libc

    enum class Answer {
        found,   // `path` is where the loader takes the library from
        missing, // the cache has no entry for it: the loader goes on to its system directories
        unknown, // entries for glibc-hwcaps subdirectories or other hardware: not emulated
    };
    Answer lookup(std::string_view name, std::string& path) const;
    bool loaded() const { return loaded_; }

  private:
    struct Item {
        std::string key, value;
        uint64_t hwcap;
    };
    std::vector<Item> items_; // of this ABI, in the file's order
    bool loaded_ = false;
};

} // namespace pyimport
