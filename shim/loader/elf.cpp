#include "loader/elf.hpp"

#include <cstring>
#include <elf.h>
#include <link.h>

namespace pyimport {

namespace {

#if defined(__x86_64__)
constexpr int kMachine = EM_X86_64;
#elif defined(__aarch64__)
constexpr int kMachine = EM_AARCH64;
#elif defined(__powerpc64__)
constexpr int kMachine = EM_PPC64;
#else
constexpr int kMachine = -1;
#endif

template <typename T> bool read_at(const char* data, size_t size, uint64_t offset, T& out) {
    if (offset > size || size - offset < sizeof(T)) return false;
    std::memcpy(&out, data + offset, sizeof(T));
    return true;
}

ElfRead read_sections(const char* data, size_t size, const ElfW(Ehdr) & eh, DynamicInfo& out);

// The entries both readers take as they are: NODEFLIB, filters.
void note_flags(const ElfW(Dyn) & d, DynamicInfo& out) {
    if (d.d_tag == DT_FLAGS_1) out.nodeflib = d.d_un.d_val & DF_1_NODEFLIB;
    if (d.d_tag == DT_FILTER || d.d_tag == DT_AUXILIARY) out.filters = true;
}

} // namespace

ElfRead read_dynamic(const char* data, size_t size, DynamicInfo& out) {
    out = DynamicInfo{};
    ElfW(Ehdr) eh;
    if (!read_at(data, size, 0, eh)) return ElfRead::NotLoadable; // shorter than a header
    // The checks of glibc's open_verify (elf/dl-load.c) for this host.
    if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_ident[EI_VERSION] != EV_CURRENT ||
        (eh.e_ident[EI_OSABI] != ELFOSABI_SYSV && eh.e_ident[EI_OSABI] != ELFOSABI_GNU) ||
        eh.e_version != EV_CURRENT || eh.e_machine != kMachine || eh.e_type != ET_DYN)
        return ElfRead::NotLoadable;
    ElfRead read = read_sections(data, size, eh, out);
    if (read != ElfRead::Read) out = DynamicInfo{};
    return read;
}

namespace {

ElfRead read_sections(const char* data, size_t size, const ElfW(Ehdr) & eh, DynamicInfo& out) {
    constexpr ElfRead failed = ElfRead::Unreadable;
    if (eh.e_phentsize != sizeof(ElfW(Phdr)) || eh.e_phnum == PN_XNUM) return failed;
    const ElfW(Phdr)* dynamic = nullptr;
    std::vector<ElfW(Phdr)> loads;
    ElfW(Phdr) ph;
    std::vector<ElfW(Phdr)> headers;
    for (unsigned i = 0; i < eh.e_phnum; ++i) {
        if (!read_at(data, size, eh.e_phoff + uint64_t{i} * sizeof ph, ph)) return failed;
        headers.push_back(ph);
    }
    for (const ElfW(Phdr) & h : headers) {
        if (h.p_type == PT_LOAD) loads.push_back(h);
        if (h.p_type == PT_DYNAMIC) dynamic = &h;
    }
    if (!dynamic) return failed;
    // Addresses in the dynamic section are virtual: map them to file offsets.
    auto file_offset = [&](uint64_t vaddr, uint64_t& offset) {
        for (const ElfW(Phdr) & l : loads)
            if (vaddr >= l.p_vaddr && vaddr - l.p_vaddr < l.p_filesz)
                return offset = l.p_offset + (vaddr - l.p_vaddr), true;
        return false;
    };
    uint64_t strtab = 0, strsz = 0, rpath = 0, runpath = 0, soname = 0;
    bool has_strtab = false, has_rpath = false, has_runpath = false, has_soname = false;
    std::vector<uint64_t> needed;
    ElfW(Dyn) d;
    for (uint64_t at = dynamic->p_offset;; at += sizeof d) {
        if (at >= dynamic->p_offset + dynamic->p_filesz || !read_at(data, size, at, d))
            return failed;
        if (d.d_tag == DT_NULL) break;
        switch (d.d_tag) {
        case DT_STRTAB:
            strtab = d.d_un.d_ptr, has_strtab = true;
            break;
        case DT_STRSZ:
            strsz = d.d_un.d_val;
            break;
        case DT_NEEDED:
            needed.push_back(d.d_un.d_val);
            break;
        case DT_RPATH:
            rpath = d.d_un.d_val, has_rpath = true;
            break;
        case DT_RUNPATH:
            runpath = d.d_un.d_val, has_runpath = true;
            break;
        case DT_SONAME:
            soname = d.d_un.d_val, has_soname = true;
            break;
        default:
            note_flags(d, out);
            break;
        }
    }
    uint64_t table = 0;
    if (!has_strtab || !file_offset(strtab, table) || table > size || strsz > size - table)
        return failed;
    auto string_at = [&](uint64_t index, std::string_view& s) {
        if (index >= strsz) return false;
        const char* begin = data + table + index;
        const void* end = std::memchr(begin, '\0', strsz - index);
        if (!end) return false;
        s = std::string_view(begin, static_cast<const char*>(end) - begin);
        return true;
    };
    for (uint64_t index : needed) {
        std::string_view name;
        if (!string_at(index, name)) return failed;
        out.needed.push_back(name);
    }
    // The loader ignores DT_RPATH when DT_RUNPATH is present.
    if (has_runpath && !string_at(runpath, out.runpath)) return failed;
    if (has_rpath && !has_runpath && !string_at(rpath, out.rpath)) return failed;
    if (has_soname && !string_at(soname, out.soname)) return failed;
    return ElfRead::Read;
}

} // namespace

bool read_loaded_dynamic(const void* dynamic, uintptr_t base, DynamicInfo& out) {
    out = DynamicInfo{};
    if (!dynamic) return false;
    uintptr_t strtab = 0;
    uint64_t rpath = 0, runpath = 0, soname = 0;
    bool has_rpath = false, has_runpath = false, has_soname = false;
    for (auto* d = static_cast<const ElfW(Dyn)*>(dynamic); d->d_tag != DT_NULL; ++d) {
        switch (d->d_tag) {
        case DT_STRTAB:
            strtab = d->d_un.d_ptr;
            break;
        case DT_RPATH:
            rpath = d->d_un.d_val, has_rpath = true;
            break;
        case DT_RUNPATH:
            runpath = d->d_un.d_val, has_runpath = true;
            break;
        case DT_SONAME:
            soname = d->d_un.d_val, has_soname = true;
            break;
        default:
            note_flags(*d, out);
            break;
        }
    }
    if (!strtab) return !has_rpath && !has_runpath && !has_soname;
    if (strtab < base) strtab += base; // not relocated in place
    const char* strings = reinterpret_cast<const char*>(strtab);
    if (has_runpath) out.runpath = strings + runpath;
    if (has_rpath && !has_runpath) out.rpath = strings + rpath;
    if (has_soname) out.soname = strings + soname;
    return true;
}

} // namespace pyimport
