/* A C program that calls MPI_Init unconditionally (never asking
 * MPI_Initialized first) and MPI_Finalize itself, built at test time by
 * cluster_openmpi.py with mpicc.openmpi and with mpicc.mpich and run with
 * PYIMPORT_ANY_PROGRAM=1, so that the shim, active in a non-Python program,
 * has taken part in its own MPI step before main().
 *
 *   cluster_mpi_init [EXIT_RANK]
 *
 * Prints, one write per line: MPI_Initialized before MPI_Init, MPI_Init's
 * result, MPI_Initialized after, rank, size, an MPI_Allreduce of the ranks,
 * and MPI_Finalized after MPI_Finalize. Rank EXIT_RANK returns 3. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void say(int rank, const char* text) {
    char line[256];
    int n = snprintf(line, sizeof line, "[rank %d] %s\n", rank, text);
    if (write(1, line, (size_t)n) != n) exit(20);
}

int main(int argc, char** argv) {
    int before = -1, after = -1, rank = -1, size = -1, sum = -1, finalized = -1;
    char text[200];
    int exit_rank = argc > 1 ? atoi(argv[1]) : -1;
    MPI_Initialized(&before);
    int rc = MPI_Init(&argc, &argv);
    MPI_Initialized(&after);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    snprintf(text, sizeof text,
             "initialized before MPI_Init %d; MPI_Init returned %d; "
             "initialized after %d; rank %d size %d",
             before, rc, after, rank, size);
    say(rank, text);
    MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    snprintf(text, sizeof text, "allreduce sum of ranks %d (expected %d)", sum,
             size * (size - 1) / 2);
    say(rank, text);
    rc = MPI_Finalize();
    MPI_Finalized(&finalized);
    snprintf(text, sizeof text, "MPI_Finalize returned %d; finalized %d", rc, finalized);
    say(rank, text);
    if (rank == exit_rank) {
        say(rank, "returning 3");
        return 3;
    }
    return 0;
}
