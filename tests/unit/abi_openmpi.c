/* Open MPI's own mpi.h, for unit_mpi_abi: what shim/startup/mpi_abi.hpp
 * states for Open MPI. Its handles are addresses of the library's objects,
 * whose names the header spells in its macros (checked by name here). */
#define OMPI_SKIP_MPICXX 1
#include <mpi.h>
#include <stddef.h>

#define NAME_OF(handle) #handle
#define NAME(handle) NAME_OF(handle)

const char* const openmpi_header_handles[] = {
    NAME(MPI_COMM_WORLD),    NAME(MPI_COMM_NULL), NAME(MPI_GROUP_NULL), NAME(MPI_INFO_NULL),
    NAME(MPI_ERRORS_RETURN), NAME(MPI_BYTE),      NAME(MPI_CHAR),       NAME(MPI_INT),
    NAME(MPI_UINT64_T),      NAME(MPI_SUM),
};
const int openmpi_header_handle_count =
    sizeof openmpi_header_handles / sizeof openmpi_header_handles[0];
const long openmpi_header_values[] = {
    (long)(size_t)MPI_STATUS_IGNORE, (long)MPI_THREAD_MULTIPLE, (long)MPI_SUCCESS,
    (long)sizeof(MPI_Status),        (long)sizeof(MPI_Comm),
};
