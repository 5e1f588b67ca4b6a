// The ABI descriptions of startup/mpi_abi.hpp against each family's own
// mpi.h (compiled in abi_mpich.c and abi_openmpi.c, each with its header
// only). A family whose development files are not installed is not built
// in; the suite then says so.
#include "startup/mpi_abi.hpp"

#include <criterion/criterion.h>
#include <cstdio>
#include <cstring>
#include <string>

using namespace pyimport;

#ifdef PYIMPORT_TEST_MPICH_ABI
extern "C" const long mpich_header_values[];
extern "C" const int mpich_header_count;

Test(mpi_abi, the_mpich_abi_is_mpichs_header) {
    mpi_abi::Mpich abi;
    const long stated[] = {
        abi.comm_world,
        abi.comm_null,
        abi.group_null,
        abi.info_null,
        abi.errors_return,
        abi.session_null,
        abi.byte,
        abi.character,
        abi.integer,
        abi.uint64,
        abi.sum,
        static_cast<long>(reinterpret_cast<size_t>(abi.status_ignore)),
        mpi_abi::kThreadMultiple,
        mpi_abi::kSuccess,
        static_cast<long>(sizeof(mpi_abi::Mpich::Status)),
    };
    cr_assert_eq(mpich_header_count, static_cast<int>(sizeof stated / sizeof stated[0]));
    for (int i = 0; i < mpich_header_count; ++i)
        cr_expect_eq(stated[i], mpich_header_values[i], "value %d: 0x%lx stated, 0x%lx in mpi.h", i,
                     stated[i], mpich_header_values[i]);
}
#endif

#ifdef PYIMPORT_TEST_OPENMPI_ABI
extern "C" const char* const openmpi_header_handles[];
extern "C" const int openmpi_header_handle_count;
extern "C" const long openmpi_header_values[];

Test(mpi_abi, open_mpis_handles_are_the_objects_its_header_names) {
    auto symbols = mpi_abi::OpenMpi::handle_symbols();
    cr_assert_eq(openmpi_header_handle_count, static_cast<int>(symbols.size()));
    for (size_t i = 0; i < symbols.size(); ++i) {
        std::string object = std::string("&(") + symbols[i].symbol + ")";
        cr_expect(std::strstr(openmpi_header_handles[i], object.c_str()),
                  "handle %zu: %s stated, mpi.h says %s", i, symbols[i].symbol,
                  openmpi_header_handles[i]);
    }
    const long stated[] = {
        0, // MPI_STATUS_IGNORE
        mpi_abi::kThreadMultiple,
        mpi_abi::kSuccess,
        static_cast<long>(sizeof(mpi_abi::OpenMpi::Status)),
        static_cast<long>(sizeof(mpi_abi::OpenMpi::Comm)),
    };
    mpi_abi::OpenMpi abi;
    cr_expect_eq(abi.status_ignore, nullptr);
    for (size_t i = 0; i < sizeof stated / sizeof stated[0]; ++i)
        cr_expect_eq(stated[i], openmpi_header_values[i], "value %zu: %ld stated, %ld in mpi.h", i,
                     stated[i], openmpi_header_values[i]);
}

// The objects are there in the installed library, found as the transport does.
Test(mpi_abi, open_mpis_library_exports_every_handle) {
    void* library = dlopen("libmpi.so.40", RTLD_NOW | RTLD_LOCAL);
    cr_assert(library, "%s", dlerror());
    mpi_abi::OpenMpi abi;
    std::string error;
    cr_expect(abi.resolve(library, error), "%s", error.c_str());
    cr_expect(abi.comm_world == dlsym(library, "ompi_mpi_comm_world"));
}
#endif

#if !defined(PYIMPORT_TEST_MPICH_ABI) || !defined(PYIMPORT_TEST_OPENMPI_ABI)
Test(mpi_abi, families_without_development_files_are_not_checked) {
#ifndef PYIMPORT_TEST_MPICH_ABI
    std::puts("unit_mpi_abi: no MPICH mpi.h (libmpich-dev): the MPICH ABI is not checked");
#endif
#ifndef PYIMPORT_TEST_OPENMPI_ABI
    std::puts("unit_mpi_abi: no Open MPI mpi.h (libopenmpi-dev): Open MPI is not checked");
#endif
}
#endif
