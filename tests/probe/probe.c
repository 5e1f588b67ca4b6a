/*
 * probe FIXTURE_DIR OUTFILE
 *
 * Differential probe for libpyimport.  Calls every file-system entry point the
 * shim interposes on a list of paths inside (and just outside) the fixture
 * built by make_fixture.sh, and writes a deterministic text report of what
 * each call returned.  run_diff.sh runs it once without the shim (reference)
 * and then under mpiexec with the shim preloaded; every rank's report must be
 * byte-identical to the reference.
 *
 * A literal "%r" in OUTFILE is replaced by $PMI_RANK (or "0").
 *
 * The report never contains values that legitimately differ between a plain
 * and a preloaded run without being file semantics: fd numbers (printed as
 * "fd"), pointers, pids, telldir cookies.  Everything else is printed in full:
 * every stat field, statx fields whose bit is in stx_mask and the mask itself,
 * errno names, directory listings in readdir order and sorted, byte counts and
 * FNV-1a checksums of file contents.
 *
 * The probe never changes the fixture: it writes nothing, truncates nothing,
 * and calls that could change the tree (mkdir, unlink, O_CREAT, ...) are only
 * made where they must fail (EEXIST, ENOENT, ENOTEMPTY, ...).  A changed
 * directory time would make the next run's report differ.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>
#include <utime.h>

#include "probe_fortify.h"

/*
 * Legacy stat entry points.  glibc >= 2.33 no longer declares them, but keeps
 * exporting them for binaries built against older glibc (including many
 * Python extension modules), so the shim has to serve them too.
 */
#define XSTAT_VER 1 /* _STAT_VER_LINUX on x86_64 */
int __xstat(int ver, const char* path, struct stat* st);
int __lxstat(int ver, const char* path, struct stat* st);
int __fxstat(int ver, int fd, struct stat* st);
int __fxstatat(int ver, int dirfd, const char* path, struct stat* st, int flags);
int __xstat64(int ver, const char* path, struct stat64* st);
int __lxstat64(int ver, const char* path, struct stat64* st);
int __fxstat64(int ver, int fd, struct stat64* st);
int __fxstatat64(int ver, int dirfd, const char* path, struct stat64* st, int flags);

/* Odd chunk size so reads never line up with pages or buffers. */
#define CHUNK 4093
/* Reads in the open matrix stop here; the per-path fd checks read it all. */
#define MATRIX_READ_LIMIT (64 * 1024)
/* Fixed targets for dup2 / F_DUPFD_CLOEXEC, so their results are printable. */
#define DUP2_TARGET 200
#define DUPFD_MIN 100

static FILE* out;
static const char* fixture;      /* absolute fixture path, no trailing slash */
static const char* fixture_base; /* its last component */

/* ------------------------------------------------------------------------- */
/* Formatting helpers                                                          */
/* ------------------------------------------------------------------------- */

/* Rotating static buffers so several formatted strings fit in one printf. */
#define NBUFS 8
#define BUFLEN (PATH_MAX * 4 + 64)
static char* next_buf(void) {
    static char bufs[NBUFS][BUFLEN];
    static int next;
    char* b = bufs[next];
    next = (next + 1) % NBUFS;
    return b;
}

/* Quotes n bytes C-style; UTF-8 passes through, control bytes are escaped. */
static const char* qn(const char* s, size_t n) {
    char* b = next_buf();
    char* o = b;
    *o++ = '"';
    for (size_t i = 0; i < n && o < b + BUFLEN - 8; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += sprintf(o, "\\x%02x", c);
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    *o = '\0';
    return b;
}

static const char* q(const char* s) {
    return s ? qn(s, strlen(s)) : "NULL";
}

static const char* fmt(const char* format, ...) __attribute__((format(printf, 1, 2)));
static const char* fmt(const char* format, ...) {
    char* b = next_buf();
    va_list ap;
    va_start(ap, format);
    vsnprintf(b, BUFLEN, format, ap);
    va_end(ap);
    return b;
}

static const char* errname(int err) {
    const char* name = strerrorname_np(err);
    return name ? name : fmt("errno%d", err);
}

/* " = RET" for success, " = -1 ENAME" for failure of a -1/errno call. */
static void res(long ret, int err) {
    if (ret < 0)
        fprintf(out, " = %ld %s", ret, errname(err));
    else
        fprintf(out, " = %ld", ret);
}

/* Same for calls returning an fd, whose number is not file semantics. */
static void res_fd(int fd, int err) {
    if (fd < 0)
        fprintf(out, " = -1 %s", errname(err));
    else
        fputs(" = fd", out);
}

/* Output structs start out garbage-filled, so a field the shim forgets to set
   shows up as 0xa5a5... instead of a lucky zero. */
#define POISON(x) memset(&(x), 0xa5, sizeof(x))

/* errno captured right after the call under test. */
static int call_errno;
#define CALL(var, expr)                                                                            \
    do {                                                                                           \
        errno = 0;                                                                                 \
        (var) = (expr);                                                                            \
        call_errno = errno;                                                                        \
    } while (0)

/* Set where a crash is likely: every line then reaches the file at once. */
static int flush_lines;

static void end_line(void) {
    fputc('\n', out);
    if (flush_lines) fflush(out);
}

/* One whole line for a call returning 0/-1 (or a count) and errno. */
static void show_ret(const char* call, const char* args, long ret) {
    fprintf(out, "%s(%s)", call, args);
    res(ret, call_errno);
    end_line();
}

/* One whole line for a call returning an fd, which is closed again. */
static void show_fd(const char* call, const char* args, int fd) {
    fprintf(out, "%s(%s)", call, args);
    res_fd(fd, call_errno);
    end_line();
    if (fd >= 0) close(fd);
}

/* FNV-1a 64: simple, deterministic, good enough to tell contents apart. */
#define FNV_INIT 0xcbf29ce484222325ULL
static uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
    const unsigned char* p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static const char* dtype_name(unsigned char t) {
    switch (t) {
    case DT_REG:
        return "REG";
    case DT_DIR:
        return "DIR";
    case DT_LNK:
        return "LNK";
    case DT_FIFO:
        return "FIFO";
    case DT_CHR:
        return "CHR";
    case DT_BLK:
        return "BLK";
    case DT_SOCK:
        return "SOCK";
    case DT_UNKNOWN:
        return "UNKNOWN";
    default:
        return fmt("type%u", t);
    }
}

/* ------------------------------------------------------------------------- */
/* stat results                                                                */
/* ------------------------------------------------------------------------- */

/*
 * Within one path group a stat result is printed in full the first time, as
 * "S#<hash>{fields}", and afterwards as "S#<hash>" alone.  The label depends
 * only on the fields, so a single wrong result changes a single line of the
 * report instead of renumbering everything after it.
 */
#define MAX_SEEN 32
#define STAT_TEXT_LEN 512
static uint64_t seen_stats[MAX_SEEN];
static int n_seen_stats;

static void reset_seen_stats(void) {
    n_seen_stats = 0;
}

static void print_stat_text(const char* text) {
    uint64_t h = fnv1a(FNV_INIT, text, strlen(text));
    unsigned label = (unsigned)(h ^ (h >> 32));
    for (int i = 0; i < n_seen_stats; i++) {
        if (seen_stats[i] == h) {
            fprintf(out, " S#%08x", label);
            return;
        }
    }
    if (n_seen_stats < MAX_SEEN) seen_stats[n_seen_stats++] = h;
    fprintf(out, " S#%08x{%s}", label, text);
}

/* struct stat and struct stat64 have the same field names; one body for both. */
#define FORMAT_STAT_FIELDS(buf, st)                                                                \
    snprintf(buf, STAT_TEXT_LEN,                                                                   \
             "dev=%ju ino=%ju mode=0%o nlink=%ju uid=%ju gid=%ju rdev=%ju "                        \
             "size=%jd blksize=%jd blocks=%jd atime=%jd.%09ld mtime=%jd.%09ld "                    \
             "ctime=%jd.%09ld",                                                                    \
             (uintmax_t)(st)->st_dev, (uintmax_t)(st)->st_ino, (unsigned)(st)->st_mode,            \
             (uintmax_t)(st)->st_nlink, (uintmax_t)(st)->st_uid, (uintmax_t)(st)->st_gid,          \
             (uintmax_t)(st)->st_rdev, (intmax_t)(st)->st_size, (intmax_t)(st)->st_blksize,        \
             (intmax_t)(st)->st_blocks, (intmax_t)(st)->st_atim.tv_sec,                            \
             (long)(st)->st_atim.tv_nsec, (intmax_t)(st)->st_mtim.tv_sec,                          \
             (long)(st)->st_mtim.tv_nsec, (intmax_t)(st)->st_ctim.tv_sec,                          \
             (long)(st)->st_ctim.tv_nsec)

static void show_stat(const char* call, const char* args, int ret, const struct stat* st) {
    char text[STAT_TEXT_LEN];
    fprintf(out, "%s(%s)", call, args);
    res(ret, call_errno);
    if (ret == 0) {
        FORMAT_STAT_FIELDS(text, st);
        print_stat_text(text);
    }
    end_line();
}

static void show_stat64(const char* call, const char* args, int ret, const struct stat64* st) {
    char text[STAT_TEXT_LEN];
    fprintf(out, "%s(%s)", call, args);
    res(ret, call_errno);
    if (ret == 0) {
        FORMAT_STAT_FIELDS(text, st);
        print_stat_text(text);
    }
    end_line();
}

/* Short identity of an fd for lines that only need to say "which file". */
static const char* fd_identity(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return fmt("fstat=%s", errname(errno));
    return fmt("dev=%ju ino=%ju mode=0%o size=%jd", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino,
               (unsigned)st.st_mode, (intmax_t)st.st_size);
}

static void show_statx(const char* args, int ret, const struct statx* sx) {
    fprintf(out, "statx(%s)", args);
    res(ret, call_errno);
    if (ret != 0) {
        end_line();
        return;
    }
    unsigned m = sx->stx_mask;
    fprintf(out, " mask=0x%x blksize=%u attr=0x%jx attr_mask=0x%jx dev=%u:%u rdev=%u:%u", m,
            sx->stx_blksize, (uintmax_t)sx->stx_attributes, (uintmax_t)sx->stx_attributes_mask,
            sx->stx_dev_major, sx->stx_dev_minor, sx->stx_rdev_major, sx->stx_rdev_minor);
    if (m & STATX_TYPE) fprintf(out, " type=0%o", sx->stx_mode & S_IFMT);
    if (m & STATX_MODE) fprintf(out, " perm=0%o", sx->stx_mode & ~S_IFMT);
    if (m & STATX_NLINK) fprintf(out, " nlink=%u", sx->stx_nlink);
    if (m & STATX_UID) fprintf(out, " uid=%u", sx->stx_uid);
    if (m & STATX_GID) fprintf(out, " gid=%u", sx->stx_gid);
    if (m & STATX_INO) fprintf(out, " ino=%ju", (uintmax_t)sx->stx_ino);
    if (m & STATX_SIZE) fprintf(out, " size=%ju", (uintmax_t)sx->stx_size);
    if (m & STATX_BLOCKS) fprintf(out, " blocks=%ju", (uintmax_t)sx->stx_blocks);
#define PRINT_TS(bit, name, ts)                                                                    \
    if (m & (bit)) fprintf(out, " " name "=%jd.%09u", (intmax_t)(ts).tv_sec, (ts).tv_nsec);
    PRINT_TS(STATX_ATIME, "atime", sx->stx_atime)
    PRINT_TS(STATX_BTIME, "btime", sx->stx_btime)
    PRINT_TS(STATX_CTIME, "ctime", sx->stx_ctime)
    PRINT_TS(STATX_MTIME, "mtime", sx->stx_mtime)
#undef PRINT_TS
    /* <linux/stat.h> supplies struct statx here, including stx_mnt_id. */
    if (m & STATX_MNT_ID) fprintf(out, " mnt_id=%ju", (uintmax_t)sx->stx_mnt_id);
    end_line();
}

/* ------------------------------------------------------------------------- */
/* Reading                                                                     */
/* ------------------------------------------------------------------------- */

struct read_summary {
    long long bytes;
    long calls; /* successful non-zero reads */
    uint64_t hash;
    int err; /* errno of a failed read, 0 if it ended at EOF or the limit */
};

static struct read_summary read_fd(int fd, long long limit) {
    static char buf[CHUNK];
    struct read_summary s = {0, 0, FNV_INIT, 0};
    while (s.bytes < limit) {
        ssize_t n;
        CALL(n, read(fd, buf, CHUNK));
        if (n < 0) {
            s.err = call_errno;
            break;
        }
        if (n == 0) break;
        s.calls++;
        s.bytes += n;
        s.hash = fnv1a(s.hash, buf, (size_t)n);
    }
    return s;
}

static void print_read_summary(const char* label, struct read_summary s) {
    fprintf(out, " %s{n=%lld calls=%ld fnv=%016jx", label, s.bytes, s.calls, (uintmax_t)s.hash);
    if (s.err) fprintf(out, " err=%s", errname(s.err));
    fputc('}', out);
}

static const char* fl_status(int fl) {
    static const struct {
        int bit;
        const char* name;
    } bits[] = {{O_APPEND, "APPEND"},   {O_NONBLOCK, "NONBLOCK"}, {O_DIRECT, "DIRECT"},
                {O_NOATIME, "NOATIME"}, {O_PATH, "PATH"},         {O_SYNC, "SYNC"},
                {O_ASYNC, "ASYNC"}};
    char* b = next_buf();
    b[0] = '\0';
    const char* acc = (fl & O_ACCMODE) == O_RDONLY   ? "RDONLY"
                      : (fl & O_ACCMODE) == O_WRONLY ? "WRONLY"
                      : (fl & O_ACCMODE) == O_RDWR   ? "RDWR"
                                                     : "ACC3";
    strcat(b, acc);
    for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++) {
        /* O_SYNC contains O_DSYNC's bit; print only exact matches. */
        if ((fl & bits[i].bit) == bits[i].bit) {
            strcat(b, "|");
            strcat(b, bits[i].name);
        }
    }
    return b;
}

/* F_GETFL access mode (and the status flags programs test) plus F_GETFD. */
static void print_fd_flags(int fd) {
    int fl = fcntl(fd, F_GETFL);
    int fl_err = errno;
    int fd_flags = fcntl(fd, F_GETFD);
    int fd_err = errno;
    if (fl < 0)
        fprintf(out, " getfl=-1 %s", errname(fl_err));
    else
        fprintf(out, " getfl=%s", fl_status(fl));
    if (fd_flags < 0)
        fprintf(out, " getfd=-1 %s", errname(fd_err));
    else
        fprintf(out, " getfd=%d", fd_flags);
}

/* ------------------------------------------------------------------------- */
/* Paths and contexts                                                          */
/* ------------------------------------------------------------------------- */

/* Entry flags. */
#define NO_OPEN 1 /* FIFO: opening it for reading would block */

/*
 * Names relative to the fixture.  Tokens: "@SIB" is the sibling directory
 * FIXTURE.sibling (outside the snapshot), "@SELF" leaves the fixture with ".."
 * and comes back in by name, "@DSLASH" is the absolute fixture path written
 * with a leading "//", "@LONG" a component longer than NAME_MAX.
 */
static const struct entry {
    const char* name;
    int flags;
} entries[] = {
    {"", 0},
    {".", 0},
    {"./", 0},
    {"file.txt", 0},
    {"./file.txt", 0},
    {".//file.txt", 0},
    {"file.txt/", 0},
    {"file.txt/.", 0},
    {"file.txt/..", 0},
    {"file.txt/child", 0},
    {"empty", 0},
    {"one", 0},
    {"page.bin", 0},
    {"page_plus_one.bin", 0},
    {"big.bin", 0},
    {"hardlink.txt", 0},
    {"script.sh", 0},
    {".hidden", 0},
    {"noperm.txt", 0},
    {"noperm_dir", 0},
    {"noperm_dir/", 0},
    {"noperm_dir/inner.txt", 0},
    {"noperm_dir/missing", 0},
    {"naïve file.py", 0},
    {"日本", 0},
    {"日本/語.py", 0},
    {"dir with space", 0},
    {"dir with space/x.py", 0},
    {"pkg", 0},
    {"pkg/", 0},
    {"pkg//", 0},
    {"pkg/__init__.py", 0},
    {"pkg/mod.py", 0},
    {"pkg/__pycache__", 0},
    {"pkg/__pycache__/mod.cpython-311.pyc", 0},
    {"pkg/__pycache__/missing.cpython-311.pyc", 0},
    {"pkg/sub/deep/leaf.py", 0},
    {"pkg//sub///deep/leaf.py", 0},
    {"pkg/./sub/./deep/./leaf.py", 0},
    {"pkg/sub/../mod.py", 0},
    {"pkg/sub/deep/../../mod.py", 0},
    {"pkg/../file.txt", 0},
    {"pkg/sub/deep/../../../file.txt", 0},
    {"pkg/missing.py", 0},
    {"missing", 0},
    {"missing/", 0},
    {"missing/child", 0},
    {"missing/../file.txt", 0},
    {"link_file", 0},
    {"link_file/", 0},
    {"link_chain", 0},
    {"link_dir", 0},
    {"link_dir/", 0},
    {"link_dir/mod.py", 0},
    {"link_dir/../file.txt", 0},
    {"link_dir/sub/up_link", 0},
    {"link_dir_slash", 0},
    {"link_dir_slash/mod.py", 0},
    {"pkg/sub/up_link", 0},
    {"pkg/sub/up_link/", 0},
    {"link_abs", 0},
    {"link_out", 0},
    {"dangling", 0},
    {"dangling/", 0},
    {"loop_a", 0},
    {"loop_a/x", 0},
    {"self_loop", 0},
    {"self_loop/", 0},
    {"fifo", NO_OPEN},
    {"chardev", 0},
    {"many", 0},
    {"many/f_152", 0},
    {"many/d_150", 0},
    {"many/l_151", 0},
    {"many/l_151/", 0},
    {"@LONG", 0},
    {"@SELF/file.txt", 0},
    {"@SELF/pkg/mod.py", 0},
    {"@SELF/missing", 0},
    {"@DSLASH/file.txt", 0},
    {"@DSLASH//pkg//mod.py", 0},
    {"@SIB", 0},
    {"@SIB/outside.txt", 0},
    {"@SIB/link_in", 0},
    {"@SIB/missing", 0},
};

/*
 * A context fixes the working directory and the directory fd used by the *at
 * calls, and how an entry name becomes the path passed to each.  The dirfd
 * deliberately differs from the cwd in most contexts so a shim that resolves
 * *at paths against the cwd gets caught.
 */
struct context {
    const char* label;
    const char* cwd;        /* relative to the fixture */
    const char* dfd_dir;    /* relative to the fixture */
    int absolute;           /* paths are FIXTURE/name */
    const char* cwd_prefix; /* otherwise: prefix for the AT_FDCWD form */
    const char* dfd_prefix; /* and for the dirfd form */
    int full_listing;       /* print directory listings in full */
};

static const struct context contexts[] = {
    {"absolute", "pkg", "pkg", 1, NULL, NULL, 1},
    {"cwd=fixture dirfd=pkg", ".", "pkg", 0, "", "../", 0},
    {"cwd=pkg dirfd=pkg/sub/deep", "pkg", "pkg/sub/deep", 0, "../", "../../../", 0},
    {"cwd=pkg/sub/deep dirfd=fixture", "pkg/sub/deep", ".", 0, "../../../", "", 0},
};

static char long_name[300];

/* Builds the path for `name` in one form: absolute, or relative with prefix. */
static void make_path(char* buf, size_t len, int absolute, const char* prefix, const char* name) {
    if (strcmp(name, "@LONG") == 0) name = long_name;
    if (strncmp(name, "@DSLASH", 7) == 0) {
        snprintf(buf, len, "/%s%s", fixture, name + 7);
    } else if (strncmp(name, "@SIB", 4) == 0) {
        if (absolute)
            snprintf(buf, len, "%s.sibling%s", fixture, name + 4);
        else
            snprintf(buf, len, "%s../%s.sibling%s", prefix, fixture_base, name + 4);
    } else if (strncmp(name, "@SELF", 5) == 0) {
        if (absolute)
            snprintf(buf, len, "%s/../%s%s", fixture, fixture_base, name + 5);
        else
            snprintf(buf, len, "%s../%s%s", prefix, fixture_base, name + 5);
    } else if (absolute) {
        snprintf(buf, len, "%s/%s", fixture, name);
    } else {
        snprintf(buf, len, "%s%s", prefix, name);
    }
}

/* ------------------------------------------------------------------------- */
/* Batteries                                                                   */
/* ------------------------------------------------------------------------- */

static void stat_battery(const char* p, int dfd, const char* q_) {
    struct stat st;
    struct stat64 st64;
    struct statx sx;
    int r;
    /* Own copies: q()'s rotating buffers are reused by the fmt() calls below. */
    char qp[BUFLEN], qq[BUFLEN];
    snprintf(qp, sizeof qp, "%s", q(p));
    snprintf(qq, sizeof qq, "%s", q(q_));

    POISON(st);
    CALL(r, stat(p, &st));
    show_stat("stat", qp, r, &st);
    POISON(st);
    CALL(r, lstat(p, &st));
    show_stat("lstat", qp, r, &st);
    POISON(st64);
    CALL(r, stat64(p, &st64));
    show_stat64("stat64", qp, r, &st64);
    POISON(st64);
    CALL(r, lstat64(p, &st64));
    show_stat64("lstat64", qp, r, &st64);
    POISON(st);
    CALL(r, __xstat(XSTAT_VER, p, &st));
    show_stat("__xstat", qp, r, &st);
    POISON(st);
    CALL(r, __lxstat(XSTAT_VER, p, &st));
    show_stat("__lxstat", qp, r, &st);
    POISON(st64);
    CALL(r, __xstat64(XSTAT_VER, p, &st64));
    show_stat64("__xstat64", qp, r, &st64);
    POISON(st64);
    CALL(r, __lxstat64(XSTAT_VER, p, &st64));
    show_stat64("__lxstat64", qp, r, &st64);

    static const struct {
        int flags;
        const char* name;
    } at_flags[] = {{0, "0"}, {AT_SYMLINK_NOFOLLOW, "AT_SYMLINK_NOFOLLOW"}};
    for (size_t i = 0; i < 2; i++) {
        int fl = at_flags[i].flags;
        const char* fn = at_flags[i].name;
        POISON(st);
        CALL(r, fstatat(AT_FDCWD, p, &st, fl));
        show_stat("fstatat", fmt("AT_FDCWD, %s, %s", qp, fn), r, &st);
        POISON(st);
        CALL(r, fstatat(dfd, q_, &st, fl));
        show_stat("fstatat", fmt("dirfd, %s, %s", qq, fn), r, &st);
        POISON(st64);
        CALL(r, fstatat64(AT_FDCWD, p, &st64, fl));
        show_stat64("fstatat64", fmt("AT_FDCWD, %s, %s", qp, fn), r, &st64);
        POISON(st64);
        CALL(r, fstatat64(dfd, q_, &st64, fl));
        show_stat64("fstatat64", fmt("dirfd, %s, %s", qq, fn), r, &st64);
        POISON(st);
        CALL(r, __fxstatat(XSTAT_VER, dfd, q_, &st, fl));
        show_stat("__fxstatat", fmt("dirfd, %s, %s", qq, fn), r, &st);
        POISON(st64);
        CALL(r, __fxstatat64(XSTAT_VER, dfd, q_, &st64, fl));
        show_stat64("__fxstatat64", fmt("dirfd, %s, %s", qq, fn), r, &st64);
        POISON(sx);
        CALL(r, statx(AT_FDCWD, p, fl, STATX_BASIC_STATS, &sx));
        show_statx(fmt("AT_FDCWD, %s, %s, STATX_BASIC_STATS", qp, fn), r, &sx);
        POISON(sx);
        CALL(r, statx(dfd, q_, fl, STATX_BASIC_STATS, &sx));
        show_statx(fmt("dirfd, %s, %s, STATX_BASIC_STATS", qq, fn), r, &sx);
    }
    /* The kernel reports more than was asked for; so must the shim. */
    POISON(sx);
    CALL(r, statx(AT_FDCWD, p, 0, STATX_TYPE | STATX_SIZE, &sx));
    show_statx(fmt("AT_FDCWD, %s, 0, STATX_TYPE|STATX_SIZE", qp), r, &sx);
}

static void access_battery(const char* p, int dfd, const char* q_) {
    static const struct {
        int mode;
        const char* name;
    } modes[] = {{F_OK, "F_OK"}, {R_OK, "R_OK"}, {X_OK, "X_OK"}, {R_OK | X_OK, "R_OK|X_OK"}};
    int r;
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        CALL(r, access(p, modes[i].mode));
        fprintf(out, "access(%s, %s)", q(p), modes[i].name);
        res(r, call_errno);
        end_line();
        CALL(r, faccessat(dfd, q_, modes[i].mode, 0));
        fprintf(out, "faccessat(dirfd, %s, %s, 0)", q(q_), modes[i].name);
        res(r, call_errno);
        end_line();
    }
    CALL(r, eaccess(p, R_OK));
    fprintf(out, "eaccess(%s, R_OK)", q(p));
    res(r, call_errno);
    end_line();
    CALL(r, euidaccess(p, X_OK));
    fprintf(out, "euidaccess(%s, X_OK)", q(p));
    res(r, call_errno);
    end_line();
    CALL(r, faccessat(AT_FDCWD, p, R_OK, AT_EACCESS));
    fprintf(out, "faccessat(AT_FDCWD, %s, R_OK, AT_EACCESS)", q(p));
    res(r, call_errno);
    end_line();
    CALL(r, faccessat(AT_FDCWD, p, F_OK, AT_SYMLINK_NOFOLLOW));
    fprintf(out, "faccessat(AT_FDCWD, %s, F_OK, AT_SYMLINK_NOFOLLOW)", q(p));
    res(r, call_errno);
    end_line();
}

static void readlink_battery(const char* p, int dfd, const char* q_) {
    char buf[PATH_MAX];
    ssize_t n;
    /* Full buffer, a 3-byte buffer (silent truncation), and bufsiz 0. */
    static const size_t sizes[] = {sizeof buf, 3};
    for (size_t i = 0; i < 2; i++) {
        memset(buf, '#', sizeof buf);
        CALL(n, readlink(p, buf, sizes[i]));
        fprintf(out, "readlink(%s, %zu)", q(p), sizes[i]);
        res(n, call_errno);
        if (n >= 0) fprintf(out, " %s", qn(buf, (size_t)n));
        end_line();
        memset(buf, '#', sizeof buf);
        CALL(n, readlinkat(dfd, q_, buf, sizes[i]));
        fprintf(out, "readlinkat(dirfd, %s, %zu)", q(q_), sizes[i]);
        res(n, call_errno);
        if (n >= 0) fprintf(out, " %s", qn(buf, (size_t)n));
        end_line();
    }
    CALL(n, readlinkat(AT_FDCWD, p, buf, 0));
    fprintf(out, "readlinkat(AT_FDCWD, %s, 0)", q(p));
    res(n, call_errno);
    end_line();
}

static void realpath_battery(const char* p) {
    char buf[PATH_MAX];
    char* r;
    CALL(r, realpath(p, buf));
    fprintf(out, "realpath(%s, buf) = %s", q(p), r ? q(r) : "NULL");
    if (!r) fprintf(out, " %s", errname(call_errno));
    end_line();
    CALL(r, realpath(p, NULL));
    fprintf(out, "realpath(%s, NULL) = %s", q(p), r ? q(r) : "NULL");
    if (!r) fprintf(out, " %s", errname(call_errno));
    end_line();
    free(r);
}

enum open_fn {
    FN_OPEN,
    FN_OPEN64,
    FN_OPENAT_CWD,
    FN_OPENAT64_CWD,
    FN_OPENAT_DFD,
    FN_OPENAT64_DFD,
    FN_OPEN_2,
    FN_OPEN64_2,
    FN_OPENAT_2,
    FN_OPENAT64_2,
    N_OPEN_FN
};
static const char* const open_fn_names[N_OPEN_FN] = {
    "open",     "open64",   "openat",     "openat64",   "openat",
    "openat64", "__open_2", "__open64_2", "__openat_2", "__openat64_2"};

static int call_open(enum open_fn fn, const char* p, int dfd, const char* q_, int flags) {
    switch (fn) {
    case FN_OPEN:
        return open(p, flags);
    case FN_OPEN64:
        return open64(p, flags);
    case FN_OPENAT_CWD:
        return openat(AT_FDCWD, p, flags);
    case FN_OPENAT64_CWD:
        return openat64(AT_FDCWD, p, flags);
    case FN_OPENAT_DFD:
        return openat(dfd, q_, flags);
    case FN_OPENAT64_DFD:
        return openat64(dfd, q_, flags);
    case FN_OPEN_2:
        return fortified_open(p, flags);
    case FN_OPEN64_2:
        return fortified_open64(p, flags);
    case FN_OPENAT_2:
        return fortified_openat(dfd, q_, flags);
    case FN_OPENAT64_2:
        return fortified_openat64(dfd, q_, flags);
    default:
        return -1;
    }
}

static const struct {
    int flags;
    const char* name;
} open_flags[] = {
    {O_RDONLY, "O_RDONLY"},
    {O_RDONLY | O_CLOEXEC, "O_RDONLY|O_CLOEXEC"},
    {O_RDONLY | O_DIRECTORY, "O_RDONLY|O_DIRECTORY"},
    {O_RDONLY | O_NOFOLLOW, "O_RDONLY|O_NOFOLLOW"},
    {O_RDONLY | O_DIRECTORY | O_NOFOLLOW, "O_RDONLY|O_DIRECTORY|O_NOFOLLOW"},
    {O_PATH, "O_PATH"},
    {O_PATH | O_NOFOLLOW, "O_PATH|O_NOFOLLOW"},
    /* O_RDWR lives in changes_section(): the shim rightly stops answering a
       path once it was opened for writing, which would blunt everything after. */
};
#define N_OPEN_FLAGS (sizeof open_flags / sizeof open_flags[0])

/*
 * open / open64 / openat / openat64 and the fortified variants.  All flags go
 * through open() and openat(dirfd); the others get the two most common ones.
 */
static void open_battery(const char* p, int dfd, const char* q_) {
    for (int fn = 0; fn < N_OPEN_FN; fn++) {
        int all_flags = fn == FN_OPEN || fn == FN_OPENAT_DFD;
        int at_form = fn == FN_OPENAT_DFD || fn == FN_OPENAT64_DFD || fn == FN_OPENAT_2 ||
                      fn == FN_OPENAT64_2;
        int cwd_form = fn == FN_OPENAT_CWD || fn == FN_OPENAT64_CWD;
        for (size_t i = 0; i < N_OPEN_FLAGS; i++) {
            if (!all_flags && open_flags[i].flags != O_RDONLY &&
                open_flags[i].flags != (O_RDONLY | O_DIRECTORY))
                continue;
            int fd;
            CALL(fd, call_open((enum open_fn)fn, p, dfd, q_, open_flags[i].flags));
            fprintf(out, "%s(%s%s, %s)", open_fn_names[fn],
                    at_form    ? "dirfd, "
                    : cwd_form ? "AT_FDCWD, "
                               : "",
                    q(at_form ? q_ : p), open_flags[i].name);
            res_fd(fd, call_errno);
            if (fd >= 0) {
                print_fd_flags(fd);
                fprintf(out, " %s", fd_identity(fd));
                print_read_summary("read", read_fd(fd, MATRIX_READ_LIMIT));
                int r;
                CALL(r, close(fd));
                fprintf(out, " close");
                res(r, call_errno);
            }
            end_line();
        }
    }
}

static void show_pread(int fd, size_t count, off_t offset, int use64) {
    static char buf[8192];
    ssize_t n;
    if (use64)
        CALL(n, pread64(fd, buf, count, offset));
    else
        CALL(n, pread(fd, buf, count, offset));
    fprintf(out, "%s(fd, %zu, %jd)", use64 ? "pread64" : "pread", count, (intmax_t)offset);
    res(n, call_errno);
    if (n > 0) fprintf(out, " fnv=%016jx", (uintmax_t)fnv1a(FNV_INIT, buf, (size_t)n));
    end_line();
}

static void show_lseek(int fd, off_t offset, int whence, const char* wname) {
    off_t r;
    CALL(r, lseek(fd, offset, whence));
    fprintf(out, "lseek(fd, %jd, %s)", (intmax_t)offset, wname);
    res((long)r, call_errno);
    end_line();
}

static void show_mmap(int fd, size_t len, off_t offset) {
    void* m;
    CALL(m, mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, offset));
    fprintf(out, "mmap(%zu, PROT_READ, MAP_PRIVATE, fd, %jd)", len, (intmax_t)offset);
    if (m == MAP_FAILED) {
        fprintf(out, " = MAP_FAILED %s\n", errname(call_errno));
        return;
    }
    fprintf(out, " = ok fnv=%016jx", (uintmax_t)fnv1a(FNV_INIT, m, len));
    int r;
    CALL(r, munmap(m, len));
    fprintf(out, " munmap");
    res(r, call_errno);
    end_line();
}

/* Duplicates must describe the same open file: same inode, shared offset
   (not checked on directories, whose offsets are file-system cookies). */
static void dup_battery(int fd, int is_dir) {
    int r;
    int d;
    CALL(d, dup(fd));
    fprintf(out, "dup(fd)");
    res_fd(d, call_errno);
    if (d >= 0) {
        print_fd_flags(d);
        fprintf(out, " %s", fd_identity(d));
        if (!is_dir) {
            off_t set = lseek(fd, 5, SEEK_SET);
            off_t seen = lseek(d, 0, SEEK_CUR);
            fprintf(out, " lseek(fd,5)=%jd lseek(dup,0,CUR)=%jd", (intmax_t)set, (intmax_t)seen);
            char buf[3];
            ssize_t n = read(d, buf, sizeof buf);
            fprintf(out, " read(dup,3)=%zd lseek(fd,0,CUR)=%jd", n,
                    (intmax_t)lseek(fd, 0, SEEK_CUR));
        }
        CALL(r, close(d));
        fprintf(out, " close");
        res(r, call_errno);
    }
    end_line();

    CALL(d, dup2(fd, DUP2_TARGET));
    fprintf(out, "dup2(fd, %d)", DUP2_TARGET);
    res(d, call_errno);
    if (d >= 0) {
        print_fd_flags(d);
        fprintf(out, " %s", fd_identity(d));
        CALL(r, close(d));
        fprintf(out, " close");
        res(r, call_errno);
    }
    end_line();

    CALL(d, dup3(fd, DUP2_TARGET + 1, O_CLOEXEC));
    fprintf(out, "dup3(fd, %d, O_CLOEXEC)", DUP2_TARGET + 1);
    res(d, call_errno);
    if (d >= 0) {
        print_fd_flags(d);
        fprintf(out, " %s", fd_identity(d));
        int fl;
        CALL(fl, fcntl64(d, F_GETFL));
        fprintf(out, " fcntl64(F_GETFL)=%s", fl < 0 ? errname(call_errno) : fl_status(fl));
        /* close_range must close it like close() does. */
        CALL(r, close_range((unsigned)d, (unsigned)d, 0));
        fprintf(out, " close_range");
        res(r, call_errno);
        struct stat st;
        CALL(r, fstat(d, &st));
        fprintf(out, " fstat(closed)");
        res(r, call_errno);
    }
    end_line();

    CALL(d, fcntl(fd, F_DUPFD_CLOEXEC, DUPFD_MIN));
    fprintf(out, "fcntl(fd, F_DUPFD_CLOEXEC, %d)", DUPFD_MIN);
    if (d < 0)
        fprintf(out, " = -1 %s", errname(call_errno));
    else
        fprintf(out, " = %s", d >= DUPFD_MIN ? "fd>=min" : "fd<min!");
    if (d >= 0) {
        print_fd_flags(d);
        struct stat st;
        POISON(st);
        CALL(r, fstat(d, &st));
        fprintf(out, " fstat(dup)");
        res(r, call_errno);
        if (r == 0) {
            char text[STAT_TEXT_LEN];
            FORMAT_STAT_FIELDS(text, &st);
            print_stat_text(text);
        }
        CALL(r, close(d));
        fprintf(out, " close");
        res(r, call_errno);
    }
    end_line();
}

/* Everything one can do with a read-only fd, on a fresh open(p, O_RDONLY). */
static void fd_battery(const char* p, int is_dir) {
    int fd;
    int r;
    CALL(fd, open(p, O_RDONLY));
    fprintf(out, "fd checks: open(%s, O_RDONLY)", q(p));
    res_fd(fd, call_errno);
    end_line();
    if (fd < 0) return;

    struct stat st;
    struct stat64 st64;
    struct statx sx;
    POISON(st);
    CALL(r, fstat(fd, &st));
    show_stat("fstat", "fd", r, &st);
    off_t size = r == 0 ? st.st_size : 0;
    POISON(st64);
    CALL(r, fstat64(fd, &st64));
    show_stat64("fstat64", "fd", r, &st64);
    POISON(st);
    CALL(r, __fxstat(XSTAT_VER, fd, &st));
    show_stat("__fxstat", "1, fd", r, &st);
    POISON(st64);
    CALL(r, __fxstat64(XSTAT_VER, fd, &st64));
    show_stat64("__fxstat64", "1, fd", r, &st64);
    POISON(st);
    CALL(r, fstatat(fd, "", &st, AT_EMPTY_PATH));
    show_stat("fstatat", "fd, \"\", AT_EMPTY_PATH", r, &st);
    POISON(st64);
    CALL(r, fstatat64(fd, "", &st64, AT_EMPTY_PATH));
    show_stat64("fstatat64", "fd, \"\", AT_EMPTY_PATH", r, &st64);
    POISON(st);
    CALL(r, fstatat(fd, "", &st, 0));
    show_stat("fstatat", "fd, \"\", 0", r, &st);
    POISON(sx);
    CALL(r, statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &sx));
    show_statx("fd, \"\", AT_EMPTY_PATH, STATX_BASIC_STATS", r, &sx);
    fprintf(out, "fcntl(fd)");
    print_fd_flags(fd);
    end_line();

    fprintf(out, "read(fd, %d) loop", CHUNK);
    print_read_summary("", read_fd(fd, LLONG_MAX));
    end_line();
    char byte;
    ssize_t n;
    CALL(n, read(fd, &byte, 1));
    fprintf(out, "read(fd, 1) after loop");
    res(n, call_errno);
    end_line();

    if (!is_dir) {
        /* Directory offsets are file-system cookies, not file semantics. */
        show_lseek(fd, 0, SEEK_CUR, "SEEK_CUR");
        show_lseek(fd, 0, SEEK_SET, "SEEK_SET");
        show_lseek(fd, 10, SEEK_CUR, "SEEK_CUR");
        show_lseek(fd, 0, SEEK_END, "SEEK_END");
        show_lseek(fd, -1, SEEK_END, "SEEK_END");
        show_lseek(fd, size + 100, SEEK_SET, "SEEK_SET");
        CALL(n, read(fd, &byte, 1));
        fprintf(out, "read(fd, 1) past end");
        res(n, call_errno);
        end_line();
        show_lseek(fd, -1, SEEK_SET, "SEEK_SET");
        show_lseek(fd, 0, SEEK_DATA, "SEEK_DATA");
        show_lseek(fd, 0, SEEK_HOLE, "SEEK_HOLE");
        show_lseek(fd, size, SEEK_DATA, "SEEK_DATA");
        off_t r64;
        CALL(r64, lseek64(fd, 4093, SEEK_SET));
        fprintf(out, "lseek64(fd, 4093, SEEK_SET)");
        res((long)r64, call_errno);
        end_line();
    }

    static const off_t offsets[] = {0, 1, 4095, 4096, 4097, -1, -2, -3};
    for (size_t i = 0; i < sizeof offsets / sizeof offsets[0]; i++) {
        /* Negative entries mean size-1, size, size+10. */
        off_t off = offsets[i] == -1   ? size - 1
                    : offsets[i] == -2 ? size
                    : offsets[i] == -3 ? size + 10
                                       : offsets[i];
        if (off < 0) continue;
        show_pread(fd, 17, off, 0);
        show_pread(fd, 8192, off, 0);
    }
    show_pread(fd, 10, -1, 0);
    show_pread(fd, 100, 4093, 1);
    if (!is_dir) show_lseek(fd, 0, SEEK_CUR, "SEEK_CUR"); /* pread must not move it */

    if (!is_dir) lseek(fd, 0, SEEK_SET);
    {
        static char a[7], b[4096], c[13];
        struct iovec iov[3] = {{a, sizeof a}, {b, sizeof b}, {c, sizeof c}};
        CALL(n, readv(fd, iov, 3));
        fprintf(out, "readv(fd, [7, 4096, 13])");
        res(n, call_errno);
        if (n > 0) {
            uint64_t h = FNV_INIT;
            size_t left = (size_t)n;
            for (int i = 0; i < 3 && left > 0; i++) {
                size_t take = left < iov[i].iov_len ? left : iov[i].iov_len;
                h = fnv1a(h, iov[i].iov_base, take);
                left -= take;
            }
            fprintf(out, " fnv=%016jx", (uintmax_t)h);
        }
        end_line();
    }

    /* Only ever map within the file: touching pages past EOF raises SIGBUS.
       An empty file thus maps length 0, which must fail with EINVAL. */
    show_mmap(fd, (size_t)size, 0);
    if (size > 4096) show_mmap(fd, (size_t)(size - 4096), 4096);

    dup_battery(fd, is_dir);

    CALL(r, close(fd));
    fprintf(out, "close(fd)");
    res(r, call_errno);
    end_line();
    CALL(r, close(fd));
    fprintf(out, "close(fd) again");
    res(r, call_errno);
    end_line();
}

static void fopen_battery(const char* p) {
    static const char* const modes[] = {"r", "rb", "re"};
    static char buf[CHUNK];
    for (int use64 = 0; use64 < 2; use64++) {
        for (size_t i = 0; i < 3; i++) {
            FILE* f;
            CALL(f, use64 ? fopen64(p, modes[i]) : fopen(p, modes[i]));
            fprintf(out, "%s(%s, \"%s\")", use64 ? "fopen64" : "fopen", q(p), modes[i]);
            if (!f) {
                fprintf(out, " = NULL %s\n", errname(call_errno));
                continue;
            }
            fprintf(out, " = FILE fileno%s", fileno(f) >= 0 ? ">=0" : "<0!");
            print_fd_flags(fileno(f));
            struct read_summary s = {0, 0, FNV_INIT, 0};
            for (;;) {
                size_t got;
                CALL(got, fread(buf, 1, sizeof buf, f));
                if (got > 0) {
                    s.calls++;
                    s.bytes += (long long)got;
                    s.hash = fnv1a(s.hash, buf, got);
                }
                if (got < sizeof buf) {
                    if (ferror(f)) s.err = call_errno;
                    break;
                }
            }
            print_read_summary("fread", s);
            fprintf(out, " feof=%d ferror=%d", feof(f) != 0, ferror(f) != 0);
            clearerr(f);
            int r;
            CALL(r, fseek(f, 0, SEEK_END));
            fprintf(out, " fseek(END)");
            res(r, call_errno);
            long pos;
            CALL(pos, ftell(f));
            fprintf(out, " ftell");
            res(pos, call_errno);
            rewind(f);
            char* line = NULL;
            size_t cap = 0;
            ssize_t len;
            CALL(len, getline(&line, &cap, f));
            fprintf(out, " getline");
            res(len, call_errno);
            if (len > 0) fprintf(out, " fnv=%016jx", (uintmax_t)fnv1a(FNV_INIT, line, (size_t)len));
            free(line);
            CALL(r, fclose(f));
            fprintf(out, " fclose");
            res(r, call_errno);
            end_line();
        }
    }
}

struct dent {
    char name[256];
    unsigned char type;
    uint64_t ino;
};

static int dent_cmp(const void* a, const void* b) {
    return strcmp(((const struct dent*)a)->name, ((const struct dent*)b)->name);
}

/* Reads the rest of a directory stream; returns entries and the end errno. */
static struct dent* read_dir(DIR* d, int use64, size_t* count, int* end_err) {
    size_t cap = 64, n = 0;
    struct dent* v = malloc(cap * sizeof *v);
    for (;;) {
        const char* name;
        unsigned char type;
        uint64_t ino;
        errno = 0;
        if (use64) {
            struct dirent64* e = readdir64(d);
            *end_err = errno;
            if (!e) break;
            name = e->d_name, type = e->d_type, ino = e->d_ino;
        } else {
            struct dirent* e = readdir(d);
            *end_err = errno;
            if (!e) break;
            name = e->d_name, type = e->d_type, ino = e->d_ino;
        }
        if (n == cap) v = realloc(v, (cap *= 2) * sizeof *v);
        snprintf(v[n].name, sizeof v[n].name, "%s", name);
        v[n].type = type;
        v[n].ino = ino;
        n++;
    }
    *count = n;
    return v;
}

static uint64_t dents_hash(const struct dent* v, size_t n) {
    uint64_t h = FNV_INIT;
    for (size_t i = 0; i < n; i++) {
        h = fnv1a(h, v[i].name, strlen(v[i].name) + 1);
        h = fnv1a(h, &v[i].type, 1);
        h = fnv1a(h, &v[i].ino, sizeof v[i].ino);
    }
    return h;
}

static void print_dents_summary(const char* label, const struct dent* v, size_t n, int end_err) {
    fprintf(out, " %s{n=%zu fnv=%016jx end=%s}", label, n, (uintmax_t)dents_hash(v, n),
            end_err ? errname(end_err) : "0");
}

static void dir_battery(const char* p, int dfd, const char* q_, int full) {
    DIR* d;
    CALL(d, opendir(p));
    fprintf(out, "opendir(%s)", q(p));
    if (!d) {
        fprintf(out, " = NULL %s\n", errname(call_errno));
    } else {
        fputs(" = DIR\n", out);
        size_t n;
        int end_err;
        struct dent* v = read_dir(d, 0, &n, &end_err);
        if (full) {
            for (size_t i = 0; i < n; i++)
                fprintf(out, "  readdir[%zu] %s %s ino=%ju\n", i, q(v[i].name),
                        dtype_name(v[i].type), (uintmax_t)v[i].ino);
        }
        fprintf(out, "readdir");
        print_dents_summary("all", v, n, end_err);
        end_line();
        /* Sorted separately so an order-only difference is recognisable. */
        struct dent* sorted = malloc((n ? n : 1) * sizeof *sorted);
        memcpy(sorted, v, n * sizeof *v);
        qsort(sorted, n, sizeof *sorted, dent_cmp);
        if (full) {
            for (size_t i = 0; i < n; i++)
                fprintf(out, "  sorted[%zu] %s %s ino=%ju\n", i, q(sorted[i].name),
                        dtype_name(sorted[i].type), (uintmax_t)sorted[i].ino);
        }
        fprintf(out, "readdir");
        print_dents_summary("sorted", sorted, n, end_err);
        end_line();

        int dfd2 = dirfd(d);
        fprintf(out, "dirfd(DIR) = %s", dfd2 >= 0 ? "fd" : "-1");
        if (dfd2 >= 0) {
            print_fd_flags(dfd2);
            struct stat st;
            int r;
            POISON(st);
            CALL(r, fstat(dfd2, &st));
            fprintf(out, " fstat");
            res(r, call_errno);
            if (r == 0) {
                char text[STAT_TEXT_LEN];
                FORMAT_STAT_FIELDS(text, &st);
                print_stat_text(text);
            }
        }
        end_line();

        rewinddir(d);
        size_t n2;
        int end2;
        struct dent* v2 = read_dir(d, 0, &n2, &end2);
        fprintf(out, "rewinddir+readdir");
        print_dents_summary("all", v2, n2, end2);
        end_line();
        free(v2);

        /* telldir after k entries, read on, seekdir back: the same entry again. */
        rewinddir(d);
        size_t k = n < 3 ? n / 2 : 3;
        for (size_t i = 0; i < k; i++)
            readdir(d);
        long pos = telldir(d);
        struct dirent* e = readdir(d);
        char first[256];
        snprintf(first, sizeof first, "%s", e ? e->d_name : "(end)");
        while (readdir(d))
            ;
        seekdir(d, pos);
        e = readdir(d);
        fprintf(out, "telldir after %zu, readdir=%s, seekdir back, readdir=%s\n", k, q(first),
                q(e ? e->d_name : "(end)"));

        int r;
        CALL(r, closedir(d));
        fprintf(out, "closedir");
        res(r, call_errno);
        end_line();
        free(sorted);
        free(v);
    }

    CALL(d, opendir(p));
    fprintf(out, "opendir(%s)+readdir64", q(p));
    if (!d) {
        fprintf(out, " = NULL %s\n", errname(call_errno));
    } else {
        size_t n;
        int end_err;
        struct dent* v = read_dir(d, 1, &n, &end_err);
        print_dents_summary("all", v, n, end_err);
        free(v);
        int r;
        CALL(r, closedir(d));
        fprintf(out, " closedir");
        res(r, call_errno);
        end_line();
    }

    CALL(d, opendir(p));
    fprintf(out, "opendir(%s)+readdir_r+readdir64_r", q(p));
    if (!d) {
        fprintf(out, " = NULL %s\n", errname(call_errno));
    } else {
        /* Deprecated, but still exported and still interposed by the shim. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        size_t n = 0;
        int r;
        uint64_t h = FNV_INIT;
        struct dirent ent, *res_ent;
        while ((r = readdir_r(d, &ent, &res_ent)) == 0 && res_ent) {
            h = fnv1a(h, ent.d_name, strlen(ent.d_name) + 1);
            h = fnv1a(h, &ent.d_type, 1);
            n++;
        }
        fprintf(out, " readdir_r{n=%zu fnv=%016jx end=%s}", n, (uintmax_t)h, r ? errname(r) : "0");
        rewinddir(d);
        n = 0;
        h = FNV_INIT;
        struct dirent64 ent64, *res_ent64;
        while ((r = readdir64_r(d, &ent64, &res_ent64)) == 0 && res_ent64) {
            h = fnv1a(h, ent64.d_name, strlen(ent64.d_name) + 1);
            h = fnv1a(h, &ent64.d_type, 1);
            n++;
        }
#pragma GCC diagnostic pop
        fprintf(out, " rewinddir+readdir64_r{n=%zu fnv=%016jx end=%s}", n, (uintmax_t)h,
                r ? errname(r) : "0");
        CALL(r, closedir(d));
        fprintf(out, " closedir");
        res(r, call_errno);
        end_line();
    }

    int fd;
    CALL(fd, openat(dfd, q_, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    fprintf(out, "fdopendir(openat(dirfd, %s, O_RDONLY|O_DIRECTORY|O_CLOEXEC))", q(q_));
    res_fd(fd, call_errno);
    if (fd >= 0) {
        CALL(d, fdopendir(fd));
        if (!d) {
            fprintf(out, " fdopendir=NULL %s", errname(call_errno));
            close(fd);
        } else {
            size_t n;
            int end_err;
            struct dent* v = read_dir(d, 0, &n, &end_err);
            print_dents_summary("all", v, n, end_err);
            free(v);
            int r;
            CALL(r, closedir(d));
            fprintf(out, " closedir");
            res(r, call_errno);
        }
    }
    end_line();
}

/* ------------------------------------------------------------------------- */
/* Working directory                                                           */
/* ------------------------------------------------------------------------- */

static void show_getcwd(void) {
    char buf[PATH_MAX];
    char* r;
    CALL(r, getcwd(buf, sizeof buf));
    fprintf(out, "getcwd() = %s", r ? q(r) : "NULL");
    if (!r) fprintf(out, " %s", errname(call_errno));
    end_line();
}

static void show_chdir(const char* path) {
    int r;
    CALL(r, chdir(path));
    fprintf(out, "chdir(%s)", q(path));
    res(r, call_errno);
    end_line();
    show_getcwd();
}

static void cwd_section(void) {
    fprintf(out, "=== chdir / getcwd ===\n");
    show_chdir(fixture);
    show_chdir("pkg");
    show_chdir("sub/deep");
    show_chdir("../../../link_dir");
    show_chdir(fmt("%s/link_dir/sub", fixture));
    show_chdir("..//..//日本");
    show_chdir("../dir with space/.");
    show_chdir(fmt("%s/noperm_dir", fixture));
    show_chdir(fixture);
    show_chdir("file.txt");
    show_chdir("missing");
    show_chdir("dangling");
    show_chdir("loop_a");
    show_chdir("link_file");
    show_chdir("link_dir_slash");
    show_chdir(fixture);

    int fd;
    CALL(fd, open(fmt("%s/pkg/sub", fixture), O_RDONLY | O_DIRECTORY));
    fprintf(out, "open(pkg/sub, O_DIRECTORY)");
    res_fd(fd, call_errno);
    end_line();
    if (fd >= 0) {
        int r;
        CALL(r, fchdir(fd));
        fprintf(out, "fchdir(fd)");
        res(r, call_errno);
        end_line();
        show_getcwd();
        close(fd);
    }

    char small[3];
    char* r;
    CALL(r, getcwd(small, sizeof small));
    fprintf(out, "getcwd(buf, 3) = %s", r ? q(r) : "NULL");
    if (!r) fprintf(out, " %s", errname(call_errno));
    end_line();
    CALL(r, getcwd(NULL, 0));
    fprintf(out, "getcwd(NULL, 0) = %s\n", r ? q(r) : "NULL");
    free(r);
}

/* ------------------------------------------------------------------------- */

static void run_context(const struct context* c, const struct entry* list, size_t count) {
    fprintf(out, "\n=== context: %s ===\n", c->label);
    char cwd[PATH_MAX], dir[PATH_MAX];
    snprintf(cwd, sizeof cwd, "%s/%s", fixture, c->cwd);
    snprintf(dir, sizeof dir, "%s/%s", fixture, c->dfd_dir);
    int r;
    CALL(r, chdir(cwd));
    fprintf(out, "chdir(%s)", q(cwd));
    res(r, call_errno);
    end_line();
    int dfd;
    CALL(dfd, open(dir, O_RDONLY | O_DIRECTORY));
    fprintf(out, "dirfd = open(%s, O_RDONLY|O_DIRECTORY)", q(dir));
    res_fd(dfd, call_errno);
    end_line();

    for (size_t i = 0; i < count; i++) {
        const struct entry* e = &list[i];
        char p[PATH_MAX], qpath[PATH_MAX];
        make_path(p, sizeof p, c->absolute, c->cwd_prefix, e->name);
        make_path(qpath, sizeof qpath, c->absolute, c->dfd_prefix, e->name);

        reset_seen_stats();
        fprintf(out, "\n--- %s [%s] ---\n", q(e->name), c->label);
        stat_battery(p, dfd, qpath);
        access_battery(p, dfd, qpath);
        readlink_battery(p, dfd, qpath);
        realpath_battery(p);
        struct stat st;
        int is_dir = stat(p, &st) == 0 && S_ISDIR(st.st_mode);
        if (!(e->flags & NO_OPEN)) {
            open_battery(p, dfd, qpath);
            fd_battery(p, is_dir);
            fopen_battery(p);
        }
        dir_battery(p, dfd, qpath, c->full_listing);
        fflush(out);
    }
    if (dfd >= 0) close(dfd);
}

/*
 * Calls that would change the tree, each chosen so that it fails and leaves
 * the fixture untouched (a successful one would change directory times and
 * break the comparison with the next run).  The shim must forward them and
 * return libc's errno, and keep answering correctly afterwards, which the
 * re-check below verifies.
 */
static void changes_section(void) {
    fprintf(out, "\n=== failing changes (cwd=fixture dirfd=fixture) ===\n");
    int r;
    CALL(r, chdir(fixture));
    fprintf(out, "chdir(fixture)");
    res(r, call_errno);
    end_line();
    int dfd = open(fixture, O_RDONLY | O_DIRECTORY);
    struct timeval tv[2] = {{0, 0}, {0, 0}};
    struct timespec ts[2] = {{0, 0}, {0, 0}};
    struct utimbuf ub = {0, 0};

#define CHANGE(expr)                                                                               \
    do {                                                                                           \
        CALL(r, (expr));                                                                           \
        fprintf(out, "%s", #expr);                                                                 \
        res(r, call_errno);                                                                        \
        end_line();                                                                                \
        if (r >= 0 && r != 0) close(r); /* an fd from open/creat; never expected */                \
    } while (0)
    CHANGE(mkdir("pkg", 0755));
    CHANGE(mkdir("missing/sub", 0755));
    CHANGE(mkdirat(dfd, "pkg", 0755));
    CHANGE(rmdir("pkg"));
    CHANGE(rmdir("file.txt"));
    CHANGE(rmdir("missing"));
    CHANGE(unlink("pkg"));
    CHANGE(unlink("missing"));
    CHANGE(unlink("link_dir/missing"));
    CHANGE(unlinkat(dfd, "pkg", 0));
    CHANGE(unlinkat(dfd, "pkg", AT_REMOVEDIR));
    CHANGE(rename("missing", "missing2"));
    CHANGE(renameat(dfd, "missing", dfd, "missing2"));
    CHANGE(renameat2(dfd, "file.txt", dfd, "one", RENAME_NOREPLACE));
    CHANGE(link("file.txt", "one"));
    CHANGE(linkat(dfd, "file.txt", dfd, "one", 0));
    CHANGE(symlink("x", "one"));
    CHANGE(symlinkat("x", dfd, "one"));
    CHANGE(chmod("missing", 0644));
    CHANGE(chmod("dangling", 0644));
    CHANGE(fchmodat(dfd, "missing", 0644, 0));
    CHANGE(chown("missing", 0, 0));
    CHANGE(lchown("missing", 0, 0));
    CHANGE(fchownat(dfd, "missing", 0, 0, 0));
    CHANGE(utime("missing", &ub));
    CHANGE(utimes("missing", tv));
    CHANGE(lutimes("missing", tv));
    CHANGE(utimensat(dfd, "missing", ts, 0));
    CHANGE(truncate("pkg", 0));
    CHANGE(truncate64("missing", 0));
    CHANGE(mknod("one", S_IFREG | 0644, 0));
    CHANGE(mknodat(dfd, "one", S_IFIFO | 0644, 0));
    CHANGE(creat("pkg", 0644));
    CHANGE(creat64("missing/child", 0644));
    CHANGE(open("pkg", O_WRONLY | O_CREAT, 0644));
    CHANGE(open("file.txt", O_WRONLY | O_CREAT | O_EXCL, 0644));
    CHANGE(openat(dfd, "pkg/mod.py", O_RDWR | O_CREAT | O_EXCL, 0644));
#undef CHANGE

    /* Opened for writing, nothing written: succeeds as root, EACCES otherwise. */
    static const char* const writable[] = {"file.txt", "pkg/mod.py", "pkg",
                                           "link_dir/sub/__init__.py", "missing"};
    for (size_t i = 0; i < sizeof writable / sizeof writable[0]; i++) {
        int fd;
        CALL(fd, open(writable[i], O_RDWR));
        fprintf(out, "open(%s, O_RDWR)", q(writable[i]));
        res_fd(fd, call_errno);
        if (fd >= 0) {
            print_fd_flags(fd);
            fprintf(out, " %s", fd_identity(fd));
            print_read_summary("read", read_fd(fd, LLONG_MAX));
            CALL(r, close(fd));
            fprintf(out, " close");
            res(r, call_errno);
        }
        end_line();
    }
    if (dfd >= 0) close(dfd);
}

/* Re-checked after the failing changes: they must not have disturbed these. */
static const struct entry recheck_entries[] = {
    {"", 0},           {"file.txt", 0},        {"one", 0},     {"pkg", 0},
    {"pkg/mod.py", 0}, {"link_dir/mod.py", 0}, {"pkg/sub", 0}, {"pkg/sub/__init__.py", 0},
    {"missing", 0},    {"dangling", 0},
};

static const struct context recheck_context = {"after failing changes", ".", ".", 1, NULL, NULL, 1};

/*
 * NULL path arguments: libc passes them to the kernel, which answers EFAULT
 * (or, for the AT_EMPTY_PATH forms on Linux >= 6.11, uses the fd).  Last in
 * the report so that a crash here still leaves everything else to compare;
 * every line is flushed at once so that the last one names the culprit.
 */
static void null_path_section(void) {
    static const char* volatile null_path = NULL; /* hides NULL from -Wnonnull */
    const char* np = null_path;
    struct stat st;
    struct stat64 st64;
    struct statx sx;
    char buf[64];
    int r;
    ssize_t n;
    fprintf(out, "\n=== NULL paths (cwd=fixture dirfd=fixture/pkg) ===\n");
    CALL(r, chdir(fixture));
    int dfd = open(fmt("%s/pkg", fixture), O_RDONLY | O_DIRECTORY);
    flush_lines = 1;

    POISON(st);
    CALL(r, stat(np, &st));
    show_stat("stat", "NULL", r, &st);
    POISON(st);
    CALL(r, lstat(np, &st));
    show_stat("lstat", "NULL", r, &st);
    POISON(st64);
    CALL(r, stat64(np, &st64));
    show_stat64("stat64", "NULL", r, &st64);
    POISON(st);
    CALL(r, __xstat(XSTAT_VER, np, &st));
    show_stat("__xstat", "NULL", r, &st);
    POISON(st);
    CALL(r, fstatat(AT_FDCWD, np, &st, 0));
    show_stat("fstatat", "AT_FDCWD, NULL, 0", r, &st);
    POISON(st);
    CALL(r, fstatat(dfd, np, &st, AT_EMPTY_PATH));
    show_stat("fstatat", "dirfd, NULL, AT_EMPTY_PATH", r, &st);
    POISON(sx);
    CALL(r, statx(AT_FDCWD, np, 0, STATX_BASIC_STATS, &sx));
    show_statx("AT_FDCWD, NULL, 0, STATX_BASIC_STATS", r, &sx);
    POISON(sx);
    CALL(r, statx(dfd, np, AT_EMPTY_PATH, STATX_BASIC_STATS, &sx));
    show_statx("dirfd, NULL, AT_EMPTY_PATH, STATX_BASIC_STATS", r, &sx);
    CALL(r, access(np, F_OK));
    show_ret("access", "NULL, F_OK", r);
    CALL(r, faccessat(dfd, np, R_OK, 0));
    show_ret("faccessat", "dirfd, NULL, R_OK, 0", r);
    CALL(n, readlink(np, buf, sizeof buf));
    show_ret("readlink", "NULL", (long)n);
    CALL(r, open(np, O_RDONLY));
    show_fd("open", "NULL, O_RDONLY", r);
    CALL(r, openat(dfd, np, O_RDONLY));
    show_fd("openat", "dirfd, NULL, O_RDONLY", r);
    CALL(r, chdir(np));
    show_ret("chdir", "NULL", r);

    flush_lines = 0;
    if (dfd >= 0) close(dfd);
}

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s FIXTURE_DIR OUTFILE\n", argv[0]);
        return 2;
    }
    static char fixture_abs[PATH_MAX];
    if (!realpath(argv[1], fixture_abs)) {
        perror(argv[1]);
        return 2;
    }
    fixture = fixture_abs;
    const char* slash = strrchr(fixture, '/');
    fixture_base = slash ? slash + 1 : fixture;
    memset(long_name, 'a', 260);

    /* OUTFILE with "%r" replaced by this process's MPI rank. */
    const char* rank = getenv("PMI_RANK");
    if (!rank || !*rank) rank = "0";
    char outpath[PATH_MAX] = "";
    for (const char* s = argv[2]; *s; s++) {
        if (s[0] == '%' && s[1] == 'r') {
            strncat(outpath, rank, sizeof outpath - strlen(outpath) - 1);
            s++;
        } else {
            strncat(outpath, s, 1);
        }
    }
    out = fopen(outpath, "w");
    if (!out) {
        perror(outpath);
        return 2;
    }

    fprintf(out, "probe report; fixture %s\n", q(fixture));
    cwd_section();
    for (size_t i = 0; i < sizeof contexts / sizeof contexts[0]; i++)
        run_context(&contexts[i], entries, sizeof entries / sizeof entries[0]);
    changes_section();
    run_context(&recheck_context, recheck_entries,
                sizeof recheck_entries / sizeof recheck_entries[0]);
    fflush(out);
    null_path_section();
    fprintf(out, "\n=== end ===\n");
    if (fclose(out) != 0) {
        perror(outpath);
        return 2;
    }
    return 0;
}
