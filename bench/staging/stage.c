/*
 * stage: the staging approach that users of MPI Python jobs pick today (as
 * python-mpi-bcast does), written here as the benchmark's comparison.
 *
 *   mpiexec -n N stage TARBALL PROGRAM [ARGS...]
 *
 * Rank 0 reads TARBALL (an uncompressed tar of a Python prefix) from the
 * shared filesystem and broadcasts it over MPI to one rank per node, which
 * unpacks it into a fresh directory in /dev/shm (tmpfs).  Every rank then runs
 * PROGRAM, a path relative to the unpacked tree (bin/python3), with ARGS, and
 * waits for it; the node's directory is removed afterwards.  Exit status: the
 * worst of the ranks' programs; 2 for bad arguments, 1 for a staging fault.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHUNK (1 << 30)

static void fail(const char* what) {
    fprintf(stderr, "stage: %s: %s\n", what, strerror(errno));
    MPI_Abort(MPI_COMM_WORLD, 1);
}

static void bcast_bytes(char* data, uint64_t length, MPI_Comm comm) {
    for (uint64_t done = 0; done < length; done += CHUNK) {
        uint64_t left = length - done;
        MPI_Bcast(data + done, (int)(left < CHUNK ? left : CHUNK), MPI_BYTE, 0, comm);
    }
}

static int run(char* const argv[]) {
    pid_t pid = fork();
    if (pid < 0) fail("fork");
    if (pid == 0) {
        execv(argv[0], argv);
        fprintf(stderr, "stage: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) fail("waitpid");
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: mpiexec -n N stage TARBALL PROGRAM [ARGS...]\n");
        return 2;
    }
    MPI_Init(&argc, &argv);
    int rank, node_rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm node, leaders;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &node_rank);
    MPI_Comm_split(MPI_COMM_WORLD, node_rank == 0 ? 0 : MPI_UNDEFINED, rank, &leaders);

    char dir[PATH_MAX] = "";
    if (node_rank == 0) {
        uint64_t length = 0;
        char* data = NULL;
        if (rank == 0) {
            int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
            struct stat st;
            if (fd < 0 || fstat(fd, &st) != 0) fail(argv[1]);
            length = (uint64_t)st.st_size;
            data = malloc(length ? length : 1);
            if (!data) fail("malloc");
            for (uint64_t got = 0; got < length;) {
                ssize_t n = read(fd, data + got, length - got);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) fail(argv[1]);
                got += (uint64_t)n;
            }
            close(fd);
        }
        MPI_Bcast(&length, 1, MPI_UINT64_T, 0, leaders);
        if (rank != 0 && !(data = malloc(length ? length : 1))) fail("malloc");
        bcast_bytes(data, length, leaders);
        snprintf(dir, sizeof dir, "/dev/shm/stage-XXXXXX");
        if (!mkdtemp(dir)) fail("mkdtemp in /dev/shm");
        char command[PATH_MAX + 32];
        snprintf(command, sizeof command, "tar -x -C '%s'", dir);
        FILE* tar = popen(command, "w");
        if (!tar) fail("tar");
        if (fwrite(data, 1, length, tar) != length) fail("writing to tar");
        if (pclose(tar) != 0) {
            fprintf(stderr, "stage: tar failed unpacking %s\n", argv[1]);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        free(data);
    }
    MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, node);

    char program[2 * PATH_MAX];
    snprintf(program, sizeof program, "%s/%s", dir, argv[2]);
    char** args = calloc((size_t)argc, sizeof *args);
    if (!args) fail("calloc");
    args[0] = program;
    for (int i = 3; i < argc; i++)
        args[i - 2] = argv[i];
    int status = run(args);

    int worst = 0;
    MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (node_rank == 0) {
        char command[PATH_MAX + 32];
        snprintf(command, sizeof command, "rm -rf '%s'", dir);
        if (system(command) != 0) fprintf(stderr, "stage: could not remove %s\n", dir);
    }
    if (leaders != MPI_COMM_NULL) MPI_Comm_free(&leaders);
    MPI_Comm_free(&node);
    MPI_Finalize();
    return worst;
}
