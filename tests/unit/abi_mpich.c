/* MPICH's own mpi.h, for unit_mpi_abi: the values shim/startup/mpi_abi.hpp
 * states for the MPICH ABI, as the installed header defines them. */
#include <mpi.h>
#include <stddef.h>

const long mpich_header_values[] = {
    (long)MPI_COMM_WORLD,
    (long)MPI_COMM_NULL,
    (long)MPI_GROUP_NULL,
    (long)MPI_INFO_NULL,
    (long)MPI_ERRORS_RETURN,
    (long)MPI_SESSION_NULL,
    (long)MPI_BYTE,
    (long)MPI_CHAR,
    (long)MPI_INT,
    (long)MPI_UINT64_T,
    (long)MPI_SUM,
    (long)(size_t)MPI_STATUS_IGNORE,
    (long)MPI_THREAD_MULTIPLE,
    (long)MPI_SUCCESS,
    (long)sizeof(MPI_Status),
};
const int mpich_header_count = sizeof mpich_header_values / sizeof mpich_header_values[0];
