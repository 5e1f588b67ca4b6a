/* Cost per call of the file operations the shim serves, for one directory:
 * stat of present and absent names, open+read+close, and a directory listing.
 * Run plain and under the shim (bench/micro/run.sh) to compare.
 *
 *   micro DIR FILE ITERATIONS     (FILE: a name inside DIR)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: micro DIR FILE ITERATIONS\n");
        return 2;
    }
    const char* dir = argv[1];
    long n = atol(argv[3]);
    if (n <= 0) {
        fprintf(stderr, "micro: ITERATIONS must be a positive number\n");
        return 2;
    }
    char present[4096], absent[4096];
    snprintf(present, sizeof present, "%s/%s", dir, argv[2]);
    snprintf(absent, sizeof absent, "%s/no-such-module.py", dir);
    struct stat st;
    if (stat(present, &st) != 0) {
        perror(present);
        return 2;
    }
    static char buf[1 << 16];
    long sink = 0;

    double t = now();
    for (long i = 0; i < n; ++i)
        sink += stat(present, &st);
    printf("stat_hit_ns %.0f\n", (now() - t) / n * 1e9);

    t = now();
    for (long i = 0; i < n; ++i)
        sink += stat(absent, &st);
    printf("stat_miss_ns %.0f\n", (now() - t) / n * 1e9);

    t = now();
    for (long i = 0; i < n; ++i) {
        int fd = open(present, O_RDONLY | O_CLOEXEC);
        ssize_t got;
        while ((got = read(fd, buf, sizeof buf)) > 0)
            sink += got;
        close(fd);
    }
    printf("open_read_close_ns %.0f\n", (now() - t) / n * 1e9);

    t = now();
    for (long i = 0; i < n; ++i) {
        DIR* d = opendir(dir);
        while (readdir(d))
            ++sink;
        closedir(d);
    }
    printf("listdir_ns %.0f\n", (now() - t) / n * 1e9);
    return sink == 42 ? 1 : 0; /* keep the loops */
}
