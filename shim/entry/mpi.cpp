// The application's MPI life cycle: MPI_Init, MPI_Init_thread,
// MPI_Initialized, MPI_Finalized, MPI_Finalize. Answered by the shim only in
// the process where it initialised MPI itself (no MPI-4 sessions: Open MPI
// 4.1, MPI-3 libraries; startup/world_model.hpp); everywhere else they are
// the MPI library's own, called straight through.
#include "entry/wrap.hpp"
#include "startup/world_model.hpp"

#include <cstring>

using namespace pyimport;

PYIMPORT_EXPORT int MPI_Init(int* argc, char*** argv) {
    int result = 0;
    if (world_model_init(nullptr, &result)) return result;
    return REAL_MPI(MPI_Init, world_model_library())(argc, argv);
}

PYIMPORT_EXPORT int MPI_Init_thread(int* argc, char*** argv, int required, int* provided) {
    int result = 0;
    if (world_model_init(provided, &result)) return result;
    return REAL_MPI(MPI_Init_thread, world_model_library())(argc, argv, required, provided);
}

PYIMPORT_EXPORT int MPI_Initialized(int* flag) {
    if (world_model_initialized(flag)) return 0;
    return REAL_MPI(MPI_Initialized, world_model_library())(flag);
}

PYIMPORT_EXPORT int MPI_Finalized(int* flag) {
    if (world_model_finalized(flag)) return 0;
    return REAL_MPI(MPI_Finalized, world_model_library())(flag);
}

PYIMPORT_EXPORT int MPI_Finalize(void) {
    int result = 0;
    if (world_model_finalize(&result)) return result;
    return REAL_MPI(MPI_Finalize, world_model_library())();
}

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
