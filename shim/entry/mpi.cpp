// The application's MPI life cycle: MPI_Init, MPI_Init_thread,
// MPI_Initialized, MPI_Finalized, MPI_Finalize and their PMPI_ names.
// Answered by the shim only in the process where it initialised MPI itself
// (no MPI-4 sessions: Open MPI 4.1, MPI-3 libraries; startup/world_model.hpp)
// and only for a caller of that library; everywhere else each call goes to
// the definition the caller would have reached (real::mpi_definition).
#include "entry/wrap.hpp"
#include "startup/world_model.hpp"

#include <cstring>

using namespace pyimport;

namespace {

constexpr int kNoMpi = 1; // an MPI error class (no MPI library in the process)

template <typename Fn> Fn definition(const char* name, const void* caller) {
    return reinterpret_cast<Fn>(real::mpi_definition(name, caller));
}

int init(const char* name, const void* caller, int* argc, char*** argv) {
    auto real = definition<int (*)(int*, char***)>(name, caller);
    int result = 0;
    if (world_model_init(reinterpret_cast<void*>(real), name, nullptr, &result)) return result;
    return real ? real(argc, argv) : kNoMpi;
}

int init_thread(const char* name, const void* caller, int* argc, char*** argv, int required,
                int* provided) {
    auto real = definition<int (*)(int*, char***, int, int*)>(name, caller);
    int result = 0;
    if (world_model_init(reinterpret_cast<void*>(real), name, provided, &result)) return result;
    return real ? real(argc, argv, required, provided) : kNoMpi;
}

// MPI_Initialized and MPI_Finalized. Without any MPI library (a program that
// only looks for one, through a weak symbol or dlsym(RTLD_DEFAULT)): neither.
using WorldModelQuery = bool (*)(const void*, const char*, int*);
int query(const char* name, const void* caller, int* flag, WorldModelQuery world_model_answer) {
    auto real = definition<int (*)(int*)>(name, caller);
    if (world_model_answer(reinterpret_cast<void*>(real), name, flag)) return 0;
    if (real) return real(flag);
    if (flag) *flag = 0;
    return 0;
}

int finalize(const char* name, const void* caller) {
    auto real = definition<int (*)()>(name, caller);
    int result = 0;
    if (world_model_finalize(reinterpret_cast<void*>(real), name, &result)) return result;
    return real ? real() : kNoMpi;
}

} // namespace

// Each prefix's five entry points, passing on who called.
#define PYIMPORT_MPI_LIFE_CYCLE(prefix)                                                            \
    PYIMPORT_EXPORT int prefix##_Init(int* argc, char*** argv) {                                   \
        return init(#prefix "_Init", __builtin_return_address(0), argc, argv);                     \
    }                                                                                              \
    PYIMPORT_EXPORT int prefix##_Init_thread(int* argc, char*** argv, int required,                \
                                             int* provided) {                                      \
        return init_thread(#prefix "_Init_thread", __builtin_return_address(0), argc, argv,        \
                           required, provided);                                                    \
    }                                                                                              \
    PYIMPORT_EXPORT int prefix##_Initialized(int* flag) {                                          \
        return query(#prefix "_Initialized", __builtin_return_address(0), flag,                    \
                     world_model_initialized);                                                     \
    }                                                                                              \
    PYIMPORT_EXPORT int prefix##_Finalized(int* flag) {                                            \
        return query(#prefix "_Finalized", __builtin_return_address(0), flag,                      \
                     world_model_finalized);                                                       \
    }                                                                                              \
    PYIMPORT_EXPORT int prefix##_Finalize(void) {                                                  \
        return finalize(#prefix "_Finalize", __builtin_return_address(0));                         \
    }
PYIMPORT_MPI_LIFE_CYCLE(MPI)
PYIMPORT_MPI_LIFE_CYCLE(PMPI)
#undef PYIMPORT_MPI_LIFE_CYCLE

// Hidden aliases of the entry points: the shim's own references to them
// (a plain &MPI_Init would bind to whichever definition comes first).
#define PYIMPORT_MPI_ALIAS(symbol, ret, params)                                                    \
    extern "C" __attribute__((visibility("hidden"), alias(#symbol))) ret entry_##symbol params;
PYIMPORT_MPI_FUNCTIONS(PYIMPORT_MPI_ALIAS)
#undef PYIMPORT_MPI_ALIAS

namespace pyimport {

void* mpi_entry_point(const char* name) {
#define PYIMPORT_MPI_ENTRY(symbol, ret, params)                                                    \
    if (std::strcmp(name, #symbol) == 0) return reinterpret_cast<void*>(&entry_##symbol);
    PYIMPORT_MPI_FUNCTIONS(PYIMPORT_MPI_ENTRY)
#undef PYIMPORT_MPI_ENTRY
    return nullptr;
}

} // namespace pyimport
