#include "base/real.hpp"

#include <atomic>
#include <cstring>
#include <dlfcn.h>

namespace pyimport::real {

void* find_next(const char* name) {
    // RTLD_NEXT: the definition after this library's, normally libc's.
    void* symbol = dlsym(RTLD_NEXT, name);
    if (symbol) return symbol;
    // Not after us: perhaps earlier in the global scope (a library loaded
    // before this one defines it) - but in a preloaded library that search
    // finds our own wrapper first, which would then call itself forever.
    symbol = dlsym(RTLD_DEFAULT, name);
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
