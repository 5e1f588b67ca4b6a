/*
 * slowfs: a read-only FUSE3 passthrough filesystem that models the metadata
 * server of a parallel filesystem.
 *
 *   slowfs [options] SOURCE_DIR MOUNTPOINT
 *
 * Every request is served by ONE thread (fuse_loop), i.e. through a single
 * queue.  Each metadata request (getattr -- which is also how the high-level
 * API answers lookups --, open, opendir, readdir, readlink, access, statfs)
 * costs --meta-us microseconds of service time, each read --read-us.
 * release/releasedir are free; reads cost no metadata request.  Kernel
 * caching is off unless --cache.
 *
 * Counters per request kind are printed to stderr as one line at exit and on
 * SIGUSR1, and with --counters=FILE also written to FILE as JSON (atomically,
 * via FILE.tmp + rename) at exit and on SIGUSR1.  The JSON carries "seq",
 * incremented on every dump, so a reader can wait for a fresh one.  With
 * --log=FILE every metadata request is also appended to FILE as one line,
 * "KIND PATH" (PATH relative to the mount's root, "/" for the root), written
 * before it is served, so that a reader can tell which paths the requests are
 * on (bench/run --log-requests).
 */
#define FUSE_USE_VERSION 31
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <fuse.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

enum counter {
    C_GETATTR,
    C_OPEN,
    C_OPENDIR,
    C_READDIR,
    C_READLINK,
    C_ACCESS,
    C_READ,
    C_STATFS,
    C_OTHER,
    C_READ_BYTES,
    C_COUNT
};
static const char* const counter_names[C_COUNT] = {"getattr",  "open",      "opendir", "readdir",
                                                   "readlink", "access",    "read",    "statfs",
                                                   "other",    "read_bytes"};

static atomic_ullong counters[C_COUNT];
static atomic_ullong dump_seq;

static struct {
    int src_fd;
    unsigned long long meta_us;
    unsigned long long read_us;
    int cache;
    char* counters_path; /* absolute, or NULL */
    char* counters_tmp;  /* counters_path + ".tmp" */
    int log_fd;          /* --log, or -1 */
} g = {.src_fd = -1, .log_fd = -1};

/* ---------------------------------------------------------------- helpers */

static void service(unsigned long long us) {
    if (us == 0) return;
    struct timespec ts = {(time_t)(us / 1000000ULL), (long)(us % 1000000ULL) * 1000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static void count(enum counter c) {
    atomic_fetch_add_explicit(&counters[c], 1, memory_order_relaxed);
}

static void write_all(int fd, const char* p, size_t n);

static void meta(enum counter c, const char* path) {
    count(c);
    if (g.log_fd >= 0) {
        char line[PATH_MAX + 32];
        int n = snprintf(line, sizeof line, "%s %s\n", counter_names[c], path ? path : "?");
        if (n > 0) write_all(g.log_fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    }
    service(g.meta_us);
}

/* Path relative to the source directory fd. */
static const char* rel(const char* path) {
    while (*path == '/')
        path++;
    return *path ? path : ".";
}

/* Async-signal-safe formatting into a fixed buffer. */
struct sbuf {
    char* p;
    size_t n, cap;
};

static void sb_str(struct sbuf* b, const char* s) {
    while (*s && b->n + 1 < b->cap)
        b->p[b->n++] = *s++;
}

static void sb_u64(struct sbuf* b, unsigned long long v) {
    char tmp[24];
    int i = 0;
    do {
        tmp[i++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (i > 0 && b->n + 1 < b->cap)
        b->p[b->n++] = tmp[--i];
}

static void write_all(int fd, const char* p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Async-signal-safe: only atomics, write, open, close, rename. */
static void dump_counters(void) {
    int saved_errno = errno;
    unsigned long long v[C_COUNT];
    for (int i = 0; i < C_COUNT; i++)
        v[i] = atomic_load_explicit(&counters[i], memory_order_relaxed);
    unsigned long long seq = atomic_fetch_add(&dump_seq, 1) + 1;

    char line[512];
    struct sbuf b = {line, 0, sizeof line};
    sb_str(&b, "slowfs:");
    for (int i = 0; i < C_COUNT; i++) {
        sb_str(&b, " ");
        sb_str(&b, counter_names[i]);
        sb_str(&b, "=");
        sb_u64(&b, v[i]);
    }
    sb_str(&b, "\n");
    write_all(STDERR_FILENO, line, b.n);

    if (g.counters_path) {
        char js[640];
        struct sbuf j = {js, 0, sizeof js};
        sb_str(&j, "{\"seq\": ");
        sb_u64(&j, seq);
        for (int i = 0; i < C_COUNT; i++) {
            sb_str(&j, ", \"");
            sb_str(&j, counter_names[i]);
            sb_str(&j, "\": ");
            sb_u64(&j, v[i]);
        }
        sb_str(&j, "}\n");
        int fd = open(g.counters_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            write_all(fd, js, j.n);
            close(fd);
            rename(g.counters_tmp, g.counters_path);
        }
    }
    errno = saved_errno;
}

static void on_sigusr1(int sig) {
    (void)sig;
    dump_counters();
}

/* ---------------------------------------------------------- operations */

static void* sf_init(struct fuse_conn_info* conn, struct fuse_config* cfg) {
    /* With auto_inval_data every read() checks the attributes, one getattr
     * request per read; on a parallel filesystem reads go to the object
     * servers, not to the metadata server.  Without --cache the kernel
     * drops a file's pages at every open anyway. */
    conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
    cfg->use_ino = 1;
    cfg->readdir_ino = 0;
    cfg->direct_io = 0; /* keep mmap working */
    cfg->auto_cache = 0;
    cfg->hard_remove = 0;
    if (g.cache) {
        cfg->kernel_cache = 1;
        cfg->attr_timeout = 3600.0;
        cfg->entry_timeout = 3600.0;
        cfg->negative_timeout = 3600.0;
    } else {
        cfg->kernel_cache = 0;
        cfg->attr_timeout = 0.0;
        cfg->entry_timeout = 0.0;
        cfg->negative_timeout = 0.0;
    }
    return NULL;
}

static int sf_getattr(const char* path, struct stat* st, struct fuse_file_info* fi) {
    (void)fi;
    meta(C_GETATTR, path);
    if (fstatat(g.src_fd, rel(path), st, AT_SYMLINK_NOFOLLOW) == -1) return -errno;
    return 0;
}

static int sf_readlink(const char* path, char* buf, size_t size) {
    meta(C_READLINK, path);
    if (size == 0) return -EINVAL;
    ssize_t n = readlinkat(g.src_fd, rel(path), buf, size - 1);
    if (n == -1) return -errno;
    buf[n] = '\0';
    return 0;
}

static int sf_access(const char* path, int mask) {
    meta(C_ACCESS, path);
    if ((mask & W_OK)) return -EROFS;
    if (faccessat(g.src_fd, rel(path), mask, AT_SYMLINK_NOFOLLOW) == -1) return -errno;
    return 0;
}

static int sf_statfs(const char* path, struct statvfs* sv) {
    meta(C_STATFS, path);
    if (fstatvfs(g.src_fd, sv) == -1) return -errno;
    sv->f_flag |= ST_RDONLY;
    return 0;
}

static int sf_open(const char* path, struct fuse_file_info* fi) {
    meta(C_OPEN, path);
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & (O_TRUNC | O_CREAT))) return -EROFS;
    int fd = openat(g.src_fd, rel(path), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd == -1) return -errno;
    fi->fh = (uint64_t)fd;
    fi->keep_cache = g.cache ? 1 : 0;
    return 0;
}

static int sf_read(const char* path, char* buf, size_t size, off_t off, struct fuse_file_info* fi) {
    (void)path;
    count(C_READ);
    service(g.read_us);
    ssize_t n = pread((int)fi->fh, buf, size, off);
    if (n == -1) return -errno;
    atomic_fetch_add_explicit(&counters[C_READ_BYTES], (unsigned long long)n, memory_order_relaxed);
    return (int)n;
}

static int sf_release(const char* path, struct fuse_file_info* fi) {
    (void)path;
    count(C_OTHER);
    close((int)fi->fh);
    return 0;
}

static int sf_opendir(const char* path, struct fuse_file_info* fi) {
    meta(C_OPENDIR, path);
    int fd = openat(g.src_fd, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd == -1) return -errno;
    DIR* d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return -e;
    }
    fi->fh = (uint64_t)(uintptr_t)d;
    return 0;
}

static int sf_readdir(const char* path, void* buf, fuse_fill_dir_t filler, off_t off,
                      struct fuse_file_info* fi, enum fuse_readdir_flags flags) {
    (void)off;
    (void)flags;
    meta(C_READDIR, path);
    DIR* d = (DIR*)(uintptr_t)fi->fh;
    rewinddir(d);
    errno = 0;
    struct dirent* de;
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        memset(&st, 0, sizeof st);
        st.st_ino = de->d_ino;
        st.st_mode = (mode_t)de->d_type << 12;
        if (filler(buf, de->d_name, &st, 0, 0)) break;
        errno = 0;
    }
    if (errno != 0) return -errno;
    return 0;
}

static int sf_releasedir(const char* path, struct fuse_file_info* fi) {
    (void)path;
    count(C_OTHER);
    closedir((DIR*)(uintptr_t)fi->fh);
    return 0;
}

static const struct fuse_operations sf_ops = {
    .init = sf_init,
    .getattr = sf_getattr,
    .readlink = sf_readlink,
    .access = sf_access,
    .statfs = sf_statfs,
    .open = sf_open,
    .read = sf_read,
    .release = sf_release,
    .opendir = sf_opendir,
    .readdir = sf_readdir,
    .releasedir = sf_releasedir,
};

/* ------------------------------------------------------------- arguments */

static void usage(FILE* out) {
    fprintf(out,
            "usage: slowfs [options] SOURCE_DIR MOUNTPOINT\n"
            "\n"
            "Mirror SOURCE_DIR read-only at MOUNTPOINT, serving every request from one\n"
            "queue (single thread) like a parallel filesystem's metadata server.\n"
            "\n"
            "options:\n"
            "  --meta-us=N      service time per metadata request (getattr/lookup, open,\n"
            "                   opendir, readdir, readlink, access, statfs), microseconds\n"
            "                   (default 200)\n"
            "  --read-us=N      service time per read request, microseconds (default 0)\n"
            "  --cache          enable kernel caching (attr/entry/negative timeouts 3600 s,\n"
            "                   page cache kept); default: no kernel caching\n"
            "  --counters=FILE  also write the counters as JSON to FILE at exit and on SIGUSR1\n"
            "  --log=FILE       append one line per metadata request to FILE: its kind\n"
            "                   and its path under the mount (\"getattr /lib/os.py\")\n"
            "  --background     daemonize once mounted (stdio then goes to /dev/null;\n"
            "                   use --counters to collect counters)\n"
            "  --help           print this help and exit\n"
            "\n"
            "Counters are printed to stderr as one line at exit and on SIGUSR1.\n"
            "Unmount with `fusermount3 -u MOUNTPOINT`, SIGTERM or SIGINT.\n");
}

static _Noreturn void bad_arg(const char* fmt, const char* what) {
    fprintf(stderr, "slowfs: error: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, " (try --help)\n");
    exit(2);
}

static unsigned long long parse_us(const char* name, const char* s) {
    if (!s || !*s) bad_arg("%s needs a value: a non-negative integer of microseconds", name);
    for (const char* p = s; *p; p++)
        if (*p < '0' || *p > '9') {
            fprintf(stderr,
                    "slowfs: error: %s: '%s' is not a non-negative integer "
                    "of microseconds (try --help)\n",
                    name, s);
            exit(2);
        }
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno == ERANGE || v > 3600ULL * 1000000ULL) {
        fprintf(stderr,
                "slowfs: error: %s: '%s' is out of range (max 3600000000) "
                "(try --help)\n",
                name, s);
        exit(2);
    }
    return v;
}

/* Matches "--name=value" or "--name value"; returns the value or NULL. */
static const char* opt_value(const char* name, int argc, char** argv, int* i) {
    size_t n = strlen(name);
    const char* a = argv[*i];
    if (strncmp(a, name, n) != 0) return NULL;
    if (a[n] == '=') return a + n + 1;
    if (a[n] == '\0') {
        if (*i + 1 >= argc) bad_arg("%s needs a value", name);
        return argv[++*i];
    }
    return NULL;
}

int main(int argc, char** argv) {
    g.meta_us = 200;
    g.read_us = 0;
    int background = 0;
    const char* counters_arg = NULL;
    const char* log_arg = NULL;
    const char* pos[2];
    int npos = 0;
    int only_pos = 0;

    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        const char* v;
        if (!only_pos && a[0] == '-' && a[1] != '\0') {
            if (strcmp(a, "--") == 0) {
                only_pos = 1;
            } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
                usage(stdout);
                return 0;
            } else if (strcmp(a, "--cache") == 0) {
                g.cache = 1;
            } else if (strcmp(a, "--background") == 0) {
                background = 1;
            } else if ((v = opt_value("--meta-us", argc, argv, &i)) != NULL) {
                g.meta_us = parse_us("--meta-us", v);
            } else if ((v = opt_value("--read-us", argc, argv, &i)) != NULL) {
                g.read_us = parse_us("--read-us", v);
            } else if ((v = opt_value("--counters", argc, argv, &i)) != NULL) {
                if (!*v) bad_arg("%s needs a file name", "--counters");
                counters_arg = v;
            } else if ((v = opt_value("--log", argc, argv, &i)) != NULL) {
                if (!*v) bad_arg("%s needs a file name", "--log");
                log_arg = v;
            } else {
                bad_arg("unknown option '%s'", a);
            }
            continue;
        }
        if (npos == 2) bad_arg("unexpected extra argument '%s'", a);
        pos[npos++] = a;
    }
    if (npos < 2)
        bad_arg("%s", npos == 0 ? "missing SOURCE_DIR and MOUNTPOINT" : "missing MOUNTPOINT");

    const char *source = pos[0], *mountpoint = pos[1];
    struct stat st;
    if (stat(source, &st) == -1) {
        fprintf(stderr, "slowfs: error: SOURCE_DIR '%s': %s (try --help)\n", source,
                strerror(errno));
        return 2;
    }
    if (!S_ISDIR(st.st_mode)) bad_arg("SOURCE_DIR '%s' is not a directory", source);
    if (stat(mountpoint, &st) == -1) {
        fprintf(stderr, "slowfs: error: MOUNTPOINT '%s': %s (try --help)\n", mountpoint,
                strerror(errno));
        return 2;
    }
    if (!S_ISDIR(st.st_mode)) bad_arg("MOUNTPOINT '%s' is not a directory", mountpoint);

    /* Absolute mountpoint: libfuse unmounts by path, possibly after a chdir. */
    char* mnt_abs = realpath(mountpoint, NULL);
    if (!mnt_abs) {
        fprintf(stderr, "slowfs: error: MOUNTPOINT '%s': %s (try --help)\n", mountpoint,
                strerror(errno));
        return 2;
    }
    mountpoint = mnt_abs;

    g.src_fd = open(source, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (g.src_fd == -1) {
        fprintf(stderr, "slowfs: error: cannot open SOURCE_DIR '%s': %s\n", source,
                strerror(errno));
        return 2;
    }

    if (counters_arg) {
        /* Absolute, since --background changes directory to /. */
        if (counters_arg[0] == '/') {
            g.counters_path = strdup(counters_arg);
        } else {
            char cwd[PATH_MAX];
            if (!getcwd(cwd, sizeof cwd)) {
                perror("slowfs: getcwd");
                return 1;
            }
            if (asprintf(&g.counters_path, "%s/%s", cwd, counters_arg) < 0) g.counters_path = NULL;
        }
        if (!g.counters_path || asprintf(&g.counters_tmp, "%s.tmp", g.counters_path) < 0) {
            fprintf(stderr, "slowfs: out of memory\n");
            return 1;
        }
    }

    /* Opened before daemonizing, which changes directory to /. */
    if (log_arg) {
        g.log_fd = open(log_arg, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (g.log_fd == -1) {
            fprintf(stderr, "slowfs: error: --log '%s': %s\n", log_arg, strerror(errno));
            return 2;
        }
    }

    /* fsname shows the source in /proc/mounts; ro makes the kernel refuse
     * writes with EROFS before they reach us. */
    char* fsopts = NULL;
    char* esc = malloc(strlen(source) * 2 + 1);
    if (!esc) return 1;
    {
        char* o = esc;
        for (const char* s = source; *s; s++) {
            if (*s == ',' || *s == '\\') *o++ = '\\';
            *o++ = *s;
        }
        *o = '\0';
    }
    if (asprintf(&fsopts, "ro,fsname=slowfs:%s,subtype=slowfs", esc) < 0) return 1;
    free(esc);

    char* fargv[] = {argv[0], "-o", fsopts, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, fargv);

    struct fuse* fuse = fuse_new(&args, &sf_ops, sizeof sf_ops, NULL);
    if (!fuse) {
        fprintf(stderr, "slowfs: error: fuse_new failed\n");
        return 1;
    }
    if (fuse_mount(fuse, mountpoint) != 0) {
        fprintf(stderr, "slowfs: error: cannot mount on '%s' (is /dev/fuse available?)\n",
                mountpoint);
        fuse_destroy(fuse);
        return 1;
    }
    if (fuse_daemonize(background ? 0 : 1) != 0) {
        fprintf(stderr, "slowfs: error: cannot daemonize\n");
        fuse_unmount(fuse);
        fuse_destroy(fuse);
        return 1;
    }
    struct fuse_session* se = fuse_get_session(fuse);
    /* libfuse only installs its exit handlers over SIG_DFL; a shell starts
     * `slowfs ... &` with SIGINT ignored, yet SIGINT must unmount. */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (fuse_set_signal_handlers(se) != 0) {
        fuse_unmount(fuse);
        fuse_destroy(fuse);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);

    int res = fuse_loop(fuse);

    /* Final dump, with SIGUSR1 blocked so it cannot race a handler dump. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    fuse_remove_signal_handlers(se);
    fuse_unmount(fuse);
    fuse_destroy(fuse);
    dump_counters();
    close(g.src_fd);
    if (g.log_fd >= 0) close(g.log_fd);
    free(fsopts);
    free(mnt_abs);
    if (res < 0) {
        fprintf(stderr, "slowfs: error: fuse loop failed: %s\n", strerror(-res));
        return 1;
    }
    return 0;
}
