/* Cost per call of the file operations the shim serves, hits and misses:
 * for a directory inside the cached prefixes (served from the snapshot) and
 * one outside them (forwarded to libc): stat of a present and an absent name,
 * open+read+close of a file, and a directory listing.  Run plain and under the
 * shim (bench/micro/run.sh) to compare.
 *
 *   micro ITERATIONS LABEL DIR FILE [LABEL DIR FILE ...]   (FILE: a name in DIR)
 *
 * Prints "<measure>_<label>_ns <nanoseconds per call>" lines.
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

static long sink;
static char buf[1 << 16];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void report(const char* measure, const char* label, double start, long n) {
    printf("%s_%s_ns %.0f\n", measure, label, (now() - start) / n * 1e9);
}

static int measure(const char* label, const char* dir, const char* file, long n) {
    char present[4096], absent[4096];
    snprintf(present, sizeof present, "%s/%s", dir, file);
    snprintf(absent, sizeof absent, "%s/no-such-module.py", dir);
    struct stat st;
    if (stat(present, &st) != 0) {
        perror(present);
        return 2;
    }
    double t = now();
    for (long i = 0; i < n; ++i)
        sink += stat(present, &st);
    report("stat_present", label, t, n);

    t = now();
    for (long i = 0; i < n; ++i)
        sink += stat(absent, &st);
    report("stat_absent", label, t, n);

    t = now();
    for (long i = 0; i < n; ++i) {
        int fd = open(present, O_RDONLY | O_CLOEXEC);
        ssize_t got;
        while ((got = read(fd, buf, sizeof buf)) > 0)
            sink += got;
        close(fd);
    }
    report("open_read_close", label, t, n);

    t = now();
    for (long i = 0; i < n; ++i) {
        DIR* d = opendir(dir);
        while (readdir(d))
            ++sink;
        closedir(d);
    }
    report("listdir", label, t, n);
    return 0;
}

int main(int argc, char** argv) {
    if (argc < 5 || (argc - 2) % 3 != 0) {
        fprintf(stderr, "usage: micro ITERATIONS LABEL DIR FILE [LABEL DIR FILE ...]\n");
        return 2;
    }
    long n = atol(argv[1]);
    if (n <= 0) {
        fprintf(stderr, "micro: ITERATIONS must be a positive number\n");
        return 2;
    }
    for (int i = 2; i + 2 < argc; i += 3) {
        int rc = measure(argv[i], argv[i + 1], argv[i + 2], n);
        if (rc) return rc;
    }
    return sink == 42 ? 1 : 0; /* keep the loops */
}
