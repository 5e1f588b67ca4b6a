#include "base/real.hpp"

#include <atomic>
#include <cstring>
#include <dlfcn.h>
#include <link.h>

namespace pyimport::real {

namespace {

// dlsym itself is interposed (entry/dl.cpp): its real definition is asked
// for by version, which no dlsym call does.
void* find_real_dlsym() {
    for (const char* version : {"GLIBC_2.34", "GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_2.0"})
        if (void* symbol = dlvsym(RTLD_NEXT, "dlsym", version)) return symbol;
    return nullptr;
}

} // namespace

void* find_next(const char* name) {
    if (std::strcmp(name, "dlsym") == 0) return find_real_dlsym();
    // RTLD_NEXT: the definition after this library's, normally libc's.
    void* symbol = REAL(dlsym)(RTLD_NEXT, name);
    if (symbol) return symbol;
    // Not after us: perhaps earlier in the global scope (a library loaded
    // before this one defines it) - but in a preloaded library that search
    // finds our own wrapper first, which would then call itself forever.
    symbol = REAL(dlsym)(RTLD_DEFAULT, name);
    Dl_info self{}, found{};
    // (dladdr through the table: found after this library, so no recursion.)
    if (!symbol || !REAL(dladdr)(reinterpret_cast<void*>(&find_next), &self) ||
        !REAL(dladdr)(symbol, &found) || found.dli_fbase == self.dli_fbase)
        return nullptr;
    return symbol;
}

#define PYIMPORT_DEFINE_REAL(name, ret, params)                                                    \
    namespace {                                                                                    \
    std::atomic<void*> slot_##name{nullptr};                                                       \
    }                                                                                              \
    name##_fn name() {                                                                             \
        void* fn = slot_##name.load(std::memory_order_acquire);                                    \
        if (__builtin_expect(fn == nullptr, 0)) {                                                  \
            fn = find_next(#name);                                                                 \
            if (!fn) fn = reinterpret_cast<void*>(&Missing<name##_fn>::call);                      \
            slot_##name.store(fn, std::memory_order_release);                                      \
        }                                                                                          \
        return reinterpret_cast<name##_fn>(fn);                                                    \
    }
PYIMPORT_REAL_FUNCTIONS(PYIMPORT_DEFINE_REAL)
#undef PYIMPORT_DEFINE_REAL

namespace {

// The first loaded object but this library that defines `name`.
void* find_loaded(const char* name) {
    struct Search {
        const char* name;
        void* self_base;
        void* found;
    } search{name, nullptr, nullptr};
    Dl_info self{};
    if (REAL(dladdr)(reinterpret_cast<void*>(&find_loaded), &self))
        search.self_base = self.dli_fbase;
    dl_iterate_phdr(
        [](struct dl_phdr_info* info, size_t, void* data) -> int {
            auto* s = static_cast<Search*>(data);
            if (!info->dlpi_name || !info->dlpi_name[0]) return 0;
            void* handle = REAL(dlopen)(info->dlpi_name, RTLD_LAZY | RTLD_NOLOAD);
            if (!handle) return 0;
            void* symbol = REAL(dlsym)(handle, s->name);
            Dl_info where{};
            if (symbol && REAL(dladdr)(symbol, &where) && where.dli_fbase != s->self_base)
                s->found = symbol;
            dlclose(handle);
            return s->found ? 1 : 0;
        },
        &search);
    return search.found;
}

void* find_mpi(const char* name) {
    if (void* symbol = find_next(name)) return symbol;
    return find_loaded(name);
}

int mpi_missing() {
    return 1; // an MPI error class; only a program that links no MPI gets here
}

} // namespace

#define PYIMPORT_DEFINE_REAL_MPI(name, ret, params)                                                \
    namespace {                                                                                    \
    std::atomic<void*> slot_##name{nullptr};                                                       \
    }                                                                                              \
    name##_fn name(void* library) {                                                                \
        if (library) {                                                                             \
            if (void* fn = REAL(dlsym)(library, #name)) return reinterpret_cast<name##_fn>(fn);    \
        }                                                                                          \
        void* fn = slot_##name.load(std::memory_order_acquire);                                    \
        if (!fn) {                                                                                 \
            fn = find_mpi(#name);                                                                  \
            if (!fn) return reinterpret_cast<name##_fn>(reinterpret_cast<void*>(&mpi_missing));    \
            slot_##name.store(fn, std::memory_order_release);                                      \
        }                                                                                          \
        return reinterpret_cast<name##_fn>(fn);                                                    \
    }
PYIMPORT_MPI_FUNCTIONS(PYIMPORT_DEFINE_REAL_MPI)
#undef PYIMPORT_DEFINE_REAL_MPI

void resolve_all() {
#define PYIMPORT_RESOLVE(name, ret, params) (void)name();
    PYIMPORT_REAL_FUNCTIONS(PYIMPORT_RESOLVE)
#undef PYIMPORT_RESOLVE
}

bool substitute(const char* name, void* fn) {
#define PYIMPORT_SUBSTITUTE(real_name, ret, params)                                                \
    if (std::strcmp(name, #real_name) == 0) {                                                      \
        slot_##real_name.store(fn, std::memory_order_release);                                     \
        return true;                                                                               \
    }
    PYIMPORT_REAL_FUNCTIONS(PYIMPORT_SUBSTITUTE)
#undef PYIMPORT_SUBSTITUTE
    return false;
}

} // namespace pyimport::real
