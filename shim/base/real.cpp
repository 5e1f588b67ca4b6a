#include "base/real.hpp"

#include <atomic>
#include <dlfcn.h>

namespace pyimport::real {
namespace {
void* lookup(const char* name) {
    // RTLD_NEXT: the definition after this library's, normally libc's.
    void* symbol = dlsym(RTLD_NEXT, name);
    if (!symbol) symbol = dlsym(RTLD_DEFAULT, name);
    return symbol;
}
} // namespace

#define PYIMPORT_DEFINE_REAL(name, ret, params)                                                    \
    namespace {                                                                                    \
    std::atomic<void*> slot_##name{nullptr};                                                       \
    }                                                                                              \
    name##_fn name() {                                                                             \
        void* fn = slot_##name.load(std::memory_order_acquire);                                    \
        if (__builtin_expect(fn == nullptr, 0)) {                                                  \
            fn = lookup(#name);                                                                    \
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

} // namespace pyimport::real
