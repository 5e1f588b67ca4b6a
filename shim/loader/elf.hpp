// What the dynamic loader reads from a shared object before mapping it: the
// header checks it makes, and the dynamic section's DT_NEEDED, DT_RPATH,
// DT_RUNPATH and DT_SONAME. Read from bytes in memory (the snapshot).
#pragma once

#include "image/library_name.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace pyimport {

struct DynamicInfo {
    std::vector<std::string_view> needed; // into the bytes given to read_dynamic
    std::string_view rpath;               // empty when absent (or shadowed by a RUNPATH)
    std::string_view runpath;
    std::string_view soname;
    bool filters = false;  // DT_FILTER or DT_AUXILIARY: the loader loads more by name
    bool nodeflib = false; // DF_1_NODEFLIB: no ld.so cache, no system directories
};

enum class ElfRead {
    Read,        // a shared object for this machine: `out` is filled, pointing into `data`
    NotLoadable, // not one (not ELF, another class, machine, ABI or type): the loader refuses it
    Unreadable,  // one, but its headers or dynamic section could not be read whole
};

// Makes the header checks the loader makes (glibc's open_verify), then reads
// the dynamic section.
ElfRead read_dynamic(const char* data, size_t size, DynamicInfo& out);

// The same of a loaded object, from its dynamic section in memory (a link
// map's l_ld and l_addr): RPATH, RUNPATH, SONAME and NODEFLIB only. The loader
// has relocated the string table's address in place, or not (a read-only
// dynamic section): both are taken.
bool read_loaded_dynamic(const void* dynamic, uintptr_t base, DynamicInfo& out);

} // namespace pyimport
