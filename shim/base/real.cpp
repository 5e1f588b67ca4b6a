#include "base/real.hpp"

#include <atomic>
#include <cstddef>
#include <cstring>
#include <dlfcn.h>
#include <link.h>
#include <mutex>
#include <string>
#include <vector>

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

// This library's load address (fixed: it is never unloaded).
void* self_base() {
    static void* const base = [] {
        Dl_info self{};
        return REAL(dladdr)(reinterpret_cast<void*>(&self_base), &self) ? self.dli_fbase : nullptr;
    }();
    return base;
}

bool is_own(void* symbol) {
    Dl_info where{};
    return symbol && REAL(dladdr)(symbol, &where) && where.dli_fbase == self_base();
}

// `name` as the object `file` and its dependencies define it.
void* defined_by(const char* file, const char* name) {
    void* handle = REAL(dlopen)(file, RTLD_LAZY | RTLD_NOLOAD);
    if (!handle) return nullptr;
    void* symbol = REAL(dlsym)(handle, name);
    dlclose(handle);
    return is_own(symbol) ? nullptr : symbol;
}

// The first loaded object but this library that defines `name`. The names
// are copied first: dlopen inside dl_iterate_phdr's callback would take the
// loader's locks in the order opposite to a concurrent dlopen's.
// A search that found nothing is not made again until an object is loaded
// or unloaded (a program looking for MPI with none in the process, often).
std::atomic<unsigned long long> g_nothing_found_at{~0ull};

void* find_loaded(const char* name) {
    struct Objects {
        std::vector<std::string> files;
        unsigned long long changes = 0;
    } objects;
    dl_iterate_phdr(
        [](struct dl_phdr_info* info, size_t size, void* data) -> int {
            auto* o = static_cast<Objects*>(data);
            if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs)
                o->changes = info->dlpi_adds + info->dlpi_subs;
            if (info->dlpi_name && info->dlpi_name[0]) o->files.emplace_back(info->dlpi_name);
            return 0;
        },
        &objects);
    if (objects.changes && g_nothing_found_at.load(std::memory_order_relaxed) == objects.changes)
        return nullptr;
    for (const std::string& file : objects.files)
        if (void* symbol = defined_by(file.c_str(), name)) return symbol;
    g_nothing_found_at.store(objects.changes, std::memory_order_relaxed);
    return nullptr;
}

} // namespace

namespace {

// What a loaded shared object's dependencies define for a name, once per
// object and name: they are fixed while it stays loaded, and asking the
// loader again costs a dlopen, a dlsym and a dlclose (7 us a call).
struct DependencyDefinition {
    const struct link_map* object = nullptr;
    ElfW(Addr) base = 0;
    std::string path;
    const char* name = nullptr; // one of the entry points' own literals
    void* symbol = nullptr;
};
std::mutex g_dependency_mutex;
std::vector<DependencyDefinition> g_dependency_definitions; // never freed (used until exit)

void* dependency_definition(const struct link_map* object, const char* name) {
    {
        std::lock_guard lock(g_dependency_mutex);
        for (const DependencyDefinition& known : g_dependency_definitions)
            if (known.object == object && known.name == name && known.base == object->l_addr &&
                known.path == object->l_name)
                return known.symbol;
    }
    void* symbol = defined_by(object->l_name, name);
    if (symbol) {
        std::lock_guard lock(g_dependency_mutex);
        if (g_dependency_definitions.size() < 64)
            g_dependency_definitions.push_back(
                {object, object->l_addr, object->l_name, name, symbol});
    }
    return symbol;
}

} // namespace

void* mpi_definition(const char* name, const void* caller) {
    Dl_info where{};
    struct link_map* object = nullptr;
    // A shared object (mpi4py's MPI.so, a library linked with MPI) reaches
    // its own dependencies' definition, even loaded RTLD_LOCAL; the main
    // program (l_name "") the global scope's.
    if (caller &&
        REAL(dladdr1)(caller, &where, reinterpret_cast<void**>(&object), RTLD_DL_LINKMAP) &&
        object && object->l_name && object->l_name[0] && where.dli_fbase != self_base())
        if (void* symbol = dependency_definition(object, name)) return symbol;
    if (void* symbol = find_next(name)) return symbol;
    return find_loaded(name);
}

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
