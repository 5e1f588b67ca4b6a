// The two MPI ABIs in use, described by the few types and constants the
// transport needs, so that no family's mpi.h is compiled in and one family's
// constants are never used with the other's library:
//
//   MPICH ABI: MPICH, Intel MPI, Cray MPICH, MVAPICH (libmpi.so.12,
//              Debian's libmpich.so.12). Handles are ints with fixed values.
//   Open MPI:  libmpi.so.40. Handles are addresses of objects the library
//              exports (MPI_COMM_WORLD is &ompi_mpi_comm_world), found with
//              dlsym once it is loaded.
//
// The values are the families' published ABIs (stable since MPICH 3.1 and
// Open MPI 3.0); unit_mpi_abi checks them against the installed headers.
#pragma once

#include "base/real.hpp"

#include <cstddef>
#include <dlfcn.h>
#include <span>
#include <string>

namespace pyimport::mpi_abi {

// The same in both families.
inline constexpr int kSuccess = 0;
inline constexpr int kThreadMultiple = 3;

struct Mpich {
    static constexpr const char* kFamily = "MPICH";
    using Comm = int;
    using Group = int;
    using Info = int;
    using Datatype = int;
    using Op = int;
    using Request = int;
    using Session = int;
    using Errhandler = int;
    struct Status {
        int count_lo, count_hi_and_cancelled, source, tag, error;
    };

    Comm comm_world = 0x44000000;
    Comm comm_null = 0x04000000;
    Group group_null = 0x08000000;
    Info info_null = 0x1c000000;
    Errhandler errors_return = 0x54000001;
    Session session_null = 0x38000000;
    Datatype byte = 0x4c00010d;
    Datatype character = 0x4c000101;
    Datatype integer = 0x4c000405;
    Datatype uint64 = 0x4c00083e;
    Op sum = 0x58000003;
    Status* status_ignore = reinterpret_cast<Status*>(1);

    bool resolve(void*, std::string&) { return true; }
};

struct OpenMpi {
    static constexpr const char* kFamily = "Open MPI";
    using Comm = void*;
    using Group = void*;
    using Info = void*;
    using Datatype = void*;
    using Op = void*;
    using Request = void*;
    using Session = void*;
    using Errhandler = void*;
    struct Status {
        int source, tag, error, cancelled;
        size_t ucount;
    };

    Comm comm_world = nullptr;
    Comm comm_null = nullptr;
    Group group_null = nullptr;
    Info info_null = nullptr;
    Errhandler errors_return = nullptr;
    Session session_null = nullptr;
    Datatype byte = nullptr;
    Datatype character = nullptr;
    Datatype integer = nullptr;
    Datatype uint64 = nullptr;
    Op sum = nullptr;
    Status* status_ignore = nullptr;

    // Each handle and the object it is the address of, in the order of the
    // fields above (unit_mpi_abi compares them with Open MPI's mpi.h).
    struct HandleSymbol {
        void* OpenMpi::*field;
        const char* symbol;
    };
    static std::span<const HandleSymbol> handle_symbols() {
        static constexpr HandleSymbol symbols[] = {
            {&OpenMpi::comm_world, "ompi_mpi_comm_world"},
            {&OpenMpi::comm_null, "ompi_mpi_comm_null"},
            {&OpenMpi::group_null, "ompi_mpi_group_null"},
            {&OpenMpi::info_null, "ompi_mpi_info_null"},
            {&OpenMpi::errors_return, "ompi_mpi_errors_return"},
            {&OpenMpi::byte, "ompi_mpi_byte"},
            {&OpenMpi::character, "ompi_mpi_char"},
            {&OpenMpi::integer, "ompi_mpi_int"},
            {&OpenMpi::uint64, "ompi_mpi_uint64_t"},
            {&OpenMpi::sum, "ompi_mpi_op_sum"},
        };
        return symbols;
    }

    bool resolve(void* library, std::string& error) {
        for (const HandleSymbol& named : handle_symbols()) {
            // A program linked with the library has copies of these objects
            // (copy relocations) which the library itself then uses: the
            // global scope's definition first, the library's own otherwise
            // (loaded RTLD_LOCAL, as mpi4py's is).
            void*& slot = this->*named.field;
            slot = REAL(dlsym)(RTLD_DEFAULT, named.symbol);
            if (!slot) slot = REAL(dlsym)(library, named.symbol);
            if (!slot) return error = std::string("no ") + named.symbol, false;
        }
        return true;
    }
};

} // namespace pyimport::mpi_abi
