// The loader layer's ELF reader on arbitrary bytes: the shared objects it
// reads come from the prefixes, and any file there may be named like one.
#include "image/library_name.hpp"
#include "loader/elf.hpp"

#include <cstdint>
#include <cstdlib>
#include <string_view>

using namespace pyimport;

namespace {

// A string the reader returned lies in the input and ends before a '\0'.
void check(std::string_view s, const char* data, size_t size) {
    if (s.empty()) return;
    if (s.data() < data || s.data() + s.size() >= data + size) std::abort(); // the '\0' too
    if (s.find('\0') != std::string_view::npos || s.data()[s.size()] != '\0') std::abort();
    (void)is_library_name(s);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const char* bytes = reinterpret_cast<const char*>(data);
    DynamicInfo info;
    ElfRead read = read_dynamic(bytes, size, info);
    if (read == ElfRead::Read) {
        for (std::string_view name : info.needed)
            check(name, bytes, size);
        check(info.rpath, bytes, size);
        check(info.runpath, bytes, size);
        check(info.soname, bytes, size);
        if (!info.rpath.empty() && !info.runpath.empty()) std::abort(); // RUNPATH shadows RPATH
    } else if (!info.needed.empty() || !info.soname.empty() || !info.rpath.empty() ||
               !info.runpath.empty()) {
        std::abort(); // nothing half-read is returned
    }
    // The file name checks of the walk and the mirror, on the same bytes.
    (void)is_library_name(std::string_view(bytes, size));
    return 0;
}
