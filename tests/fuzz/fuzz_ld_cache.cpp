// The ld.so cache reader on arbitrary bytes: /etc/ld.so.cache is the
// system's, but a damaged or foreign one must be refused, never overread.
#include "loader/ld_cache.hpp"

#include <cstdint>
#include <cstdlib>
#include <string>

using namespace pyimport;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    LdCache cache;
    bool parsed = cache.parse(reinterpret_cast<const char*>(data), size);
    if (parsed != cache.loaded()) std::abort();
    std::string path;
    for (const char* name : {"libc.so.6", "libm.so.6", "", "libz.so.1"}) {
        LdCache::Answer answer = cache.lookup(name, path);
        if (!parsed && answer != LdCache::Answer::unknown) std::abort();
        if (answer == LdCache::Answer::found && path.find('\0') != std::string::npos) std::abort();
    }
    return 0;
}
