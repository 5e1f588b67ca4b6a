// libpyimport-audit.so: the dynamic loader's audit library (LD_AUDIT), the
// part of pyimport that runs before main. It links nothing (sys.hpp), lives
// in a namespace of its own, and decides from /proc/self: in every process
// that is not a rank's Python interpreter with libpyimport.so preloaded it
// unloads itself at la_version.
//
// Before main, per job and node, the first process to lock the job's node
// directory (the leader) loads as usual and records what each search by name
// found; at the first consistent link map it copies the libraries found in
// RPATH, RUNPATH or LD_LIBRARY_PATH directories (a shared libpython, and
// what it needs there) into the directory and writes a manifest. The other
// processes (followers) wait for the manifest and answer each search of it at
// LA_SER_ORIG with the recorded path: the copy, or the system library the
// leader found in the ld.so cache. They probe nothing and read no library
// from the shared filesystem.
//
// After main, the active preload may install a resolver (interface.hpp) for
// the searches of dlopen and of libraries' dependencies.
#include "audit/interface.hpp"
#include "audit/sys.hpp"

#include <pyimport/pyimport.h>

#include <climits>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <linux/limits.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <time.h>

using pyimport::AuditInterface;
using pyimport::AuditRole;
namespace sys = pyimport::sys;

extern "C" {
__attribute__((visibility("default")))
AuditInterface pyimport_audit = {pyimport::kAuditInterfaceVersion,
                                 AuditRole::off,
                                 0,
                                 0,
                                 0,
                                 0,
                                 {},
                                 {},
                                 nullptr,
                                 nullptr,
                                 nullptr,
                                 nullptr,
                                 0};
}

namespace {

constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
constexpr long kWaitNanoseconds = 10L * 1000 * 1000 * 1000; // for the leader's manifest
constexpr long kLeaderNanoseconds = 300L * 1000 * 1000;     // for local rank 0 to lead
constexpr const char* kLeaderMark = "leader";
constexpr const char* kLoads = "manifest.loads";
constexpr const char* kListing = "library-path";
constexpr const char* kLoadsLock = "loads.lock";
constexpr long kLoadsNanoseconds = 2L * 1000 * 1000 * 1000; // for the leader's start-up loads
constexpr int kMaxRecords = 512;
constexpr const char* kManifest = "manifest";
constexpr const char* kManifestMagic = "pyimport-ld 1\n";

// Memory from the kernel, never returned (a few pages per process).
char* arena_next = nullptr;
size_t arena_left = 0;

// The loader serialises the la_* calls, the preload's startup_loads may come
// from another thread: a spin lock (held for a few instructions, or an mmap).
int arena_lock = 0;

struct ArenaLock {
    ArenaLock() {
        while (__atomic_exchange_n(&arena_lock, 1, __ATOMIC_ACQUIRE))
            ;
    }
    ~ArenaLock() { __atomic_store_n(&arena_lock, 0, __ATOMIC_RELEASE); }
};

char* allocate(size_t n) {
    ArenaLock lock;
    n = (n + 15) & ~size_t{15};
    if (n > arena_left) {
        size_t chunk = n > (1u << 20) ? n : (1u << 20);
        long p =
            sys::sc(SYS_mmap, 0, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p < 0 && p > -4096) return nullptr;
        arena_next = reinterpret_cast<char*>(p);
        arena_left = chunk;
    }
    char* out = arena_next;
    arena_next += n;
    arena_left -= n;
    return out;
}

char* copy_string(const char* s) {
    size_t n = sys::length(s);
    char* out = allocate(n + 1);
    if (!out) return nullptr;
    for (size_t i = 0; i <= n; ++i)
        out[i] = s[i];
    return out;
}

// The whole of a small file (a /proc file, the manifest); nullptr if unreadable.
char* read_file(int dirfd, const char* path, size_t& size) {
    int fd = static_cast<int>(sys::sc(SYS_openat, dirfd, path, O_RDONLY | O_CLOEXEC));
    if (fd < 0) return nullptr;
    size_t capacity = 64 * 1024;
    char* data = allocate(capacity);
    size = 0;
    while (data) {
        if (size + 1 >= capacity) { // grow: a new chunk, the old one is left
            char* bigger = allocate(capacity * 2);
            if (bigger)
                for (size_t i = 0; i < size; ++i)
                    bigger[i] = data[i];
            data = bigger;
            capacity *= 2;
            if (!data) break;
        }
        long got = sys::sc(SYS_read, fd, data + size, capacity - size - 1);
        if (got < 0 && got == -4 /* EINTR */) continue;
        if (got <= 0) {
            if (got < 0) data = nullptr;
            break;
        }
        size += static_cast<size_t>(got);
    }
    sys::sc(SYS_close, fd);
    if (data) data[size] = 0;
    return data;
}

// The process's environment, as it was exec'ed (the loader's own view).
char* environment = nullptr;
size_t environment_size = 0;

const char* env(const char* name) {
    size_t n = sys::length(name);
    for (size_t at = 0; at < environment_size;) {
        const char* entry = environment + at;
        size_t len = sys::length(entry);
        if (len > n && entry[n] == '=' && sys::starts_with(entry, name)) return entry + n + 1;
        at += len + 1;
    }
    return nullptr;
}

bool truthy(const char* value) {
    return value && (sys::equal(value, "1") || sys::equal(value, "yes") ||
                     sys::equal(value, "true") || sys::equal(value, "on"));
}

struct Pending {
    bool active;
    char* name;
    const char* requester;
    unsigned flag; // the search step it was last tried at
};

struct Record {
    const char* requester; // its l_name ("" for the program)
    const char* name;      // as searched
    const char* path;      // what the loader opened
    unsigned flag;
    bool origin_free; // no $ORIGIN in its own RPATH/RUNPATH: a copy searches the same
};

struct State {
    bool decided;
    bool consistent;
    int pid;
    int dir_fd;     // the job's node directory, flock'ed (exclusive while leading)
    char* dir_path; // "<node dir>/pyimport-<uid>/ld-<key>"
    char* key;      // what the manifest must be for, in full
    Pending pending;
    Record records[kMaxRecords];
    int record_count;
    const char* main_cookie;
    char* manifest; // records: requester, name, path ('\0' after each)
    size_t manifest_size;
    // The preload's start-up loads (its MPI library): recorded by the leader
    // too, from begin to end, into a second manifest the followers wait for.
    bool recording_loads;
    int loads_from; // the first record of them
    int loads_fd;   // the leader's exclusive lock until it is written
    char* loads;
    size_t loads_size;
};
State state;

void set_reason(const char* a, const char* b = "") {
    sys::Text t(pyimport_audit.reason, sizeof pyimport_audit.reason);
    t.add(a).add(b);
}

void go_alone(const char* why, const char* what = "") {
    // A leader that gives up lets the others go at once: its lock turns
    // shared with no manifest, and the start-up loads' lock goes.
    if (pyimport_audit.role == AuditRole::leader) {
        if (state.dir_fd > 0) sys::sc(SYS_flock, state.dir_fd, LOCK_SH);
        if (state.loads_fd > 0) sys::sc(SYS_close, state.loads_fd);
        state.loads_fd = -1;
        state.recording_loads = false;
    }
    pyimport_audit.role = AuditRole::alone;
    set_reason(why, what);
}

// The program's path (/proc/self/exe), read once; "" if unreadable.
char executable[PATH_MAX];

const char* program_path() {
    if (!executable[0]) {
        long n =
            sys::sc(SYS_readlinkat, AT_FDCWD, "/proc/self/exe", executable, sizeof executable - 1);
        executable[n > 0 ? n : 0] = 0;
    }
    return executable;
}

// The process is an interpreter of a rank that libpyimport.so will serve.
bool is_candidate() {
    if (env(PYIMPORT_ENV_ACTIVE_PID) || truthy(env(PYIMPORT_ENV_DISABLE))) return false;
    const char* libraries = env(PYIMPORT_ENV_LIBRARIES);
    if (libraries && sys::equal(libraries, "0")) return false;
    const char* preload = env("LD_PRELOAD");
    if (!preload || !sys::contains(preload, "libpyimport")) return false;
    bool rank = env("OMPI_COMM_WORLD_RANK") || (env("PMI_RANK") && env("MPI_LOCALRANKID")) ||
                env("PMI_RANK") || env("PMIX_RANK");
    if (!rank && env("SLURM_PROCID")) rank = env("SLURM_STEP_ID") || env("SLURM_STEPID");
    if (!rank) return false;
    if (const char* pmi_fd = env("PMI_FD")) {
        long fd = 0;
        for (const char* p = pmi_fd; *p; ++p) {
            if (*p < '0' || *p > '9') return false;
            fd = fd * 10 + (*p - '0');
            if (fd > INT_MAX) return false;
        }
        if (sys::sc(SYS_fcntl, fd, F_GETFD) < 0) return false; // a subprocess that lost it
    }
    if (truthy(env(PYIMPORT_ENV_ANY_PROGRAM))) return true;
    const char* exe = program_path();
    if (!exe[0]) return false;
    const char* base = exe;
    for (const char* p = exe; *p; ++p)
        if (*p == '/') base = p + 1;
    return sys::starts_with(base, "python");
}

// The 22nd field of /proc/PID/stat: the process's start time.
bool start_time(long pid, sys::Text& out) {
    char path[64];
    sys::Text p(path, sizeof path);
    p.add("/proc/").add_number(static_cast<uint64_t>(pid)).add("/stat");
    size_t size = 0;
    char* stat = read_file(AT_FDCWD, path, size);
    if (!stat) return false;
    const char* close = nullptr;
    for (const char* c = stat; *c; ++c)
        if (*c == ')') close = c;
    if (!close) return false;
    const char* field = close + 1;
    for (int i = 0; i < 20 && *field; ++i) { // field 3 follows ") "
        while (*field == ' ')
            ++field;
        if (i == 19) break;
        while (*field && *field != ' ')
            ++field;
    }
    const char* end = field;
    while (*end >= '0' && *end <= '9')
        ++end;
    if (end == field) return false;
    out.add(field, static_cast<size_t>(end - field));
    return true;
}

// What must be equal for two processes to load the same libraries from the
// same searches: the job's processes of one node share their parent (Hydra's
// proxy, orted, slurmstepd), the program and the loader's variables.
char* job_key() {
    char* buffer = allocate(16384);
    if (!buffer) return nullptr;
    sys::Text key(buffer, 16384);
    key.add("uid=").add_number(static_cast<uint64_t>(sys::sc(SYS_getuid)));
    // The launcher's job (and step) where it says: the node's ranks share it
    // whatever runs between the launcher and Python (a wrapper script); else
    // the parent, which they share when the launcher starts them itself.
    bool job = (env("SLURM_JOB_ID") && env("SLURM_STEP_ID")) || env("PMIX_NAMESPACE") ||
               env("OMPI_MCA_ess_base_jobid");
    if (!job) {
        long ppid = sys::sc(SYS_getppid);
        key.add("\nparent=").add_number(static_cast<uint64_t>(ppid)).add(" started ");
        if (!start_time(ppid, key)) return nullptr;
    }
    const char* exe = program_path();
    if (!exe[0]) return nullptr;
    struct statx stx {};
    if (sys::sc(SYS_statx, AT_FDCWD, "/proc/self/exe", 0, STATX_INO | STATX_MTIME, &stx) != 0)
        return nullptr;
    key.add("\nexe=").add(exe).add(" ").add_number(stx.stx_dev_major).add(":");
    key.add_number(stx.stx_dev_minor).add(" ").add_number(stx.stx_ino).add(" ");
    key.add_number(static_cast<uint64_t>(stx.stx_mtime.tv_sec)).add(".");
    key.add_number(stx.stx_mtime.tv_nsec);
    static const char* const kKeyVariables[] = {
        "LD_LIBRARY_PATH",         "LD_PRELOAD",     "LD_AUDIT",      "LD_BIND_NOW",
        PYIMPORT_ENV_NODE_DIR,     "SLURM_JOB_ID",   "SLURM_STEP_ID", "PMIX_NAMESPACE",
        "OMPI_MCA_ess_base_jobid", "GLIBC_TUNABLES", "LD_HWCAP_MASK"};
    for (const char* name : kKeyVariables) {
        const char* value = env(name);
        key.add("\n").add(name).add(value ? "=" : " unset").add(value ? value : "");
    }
    key.add("\n");
    return key.ok ? buffer : nullptr;
}

uint64_t fnv1a(const char* s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; ++s)
        h = (h ^ static_cast<unsigned char>(*s)) * 1099511628211ull;
    return h;
}

// A directory of the user's own, private; -1 otherwise.
int open_private(int dirfd, const char* name) {
    int fd = static_cast<int>(sys::sc(SYS_openat, dirfd, name, kDirFlags));
    if (fd < 0) return -1;
    struct stat st {};
    if (sys::sc(SYS_fstat, fd, &st) != 0 || !S_ISDIR(st.st_mode) ||
        st.st_uid != static_cast<uid_t>(sys::sc(SYS_getuid)) || (st.st_mode & 077)) {
        sys::sc(SYS_close, fd);
        return -1;
    }
    return fd;
}

long now_ns() {
    struct timespec ts {};
    sys::sc(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

void sleep_ns(long ns) {
    struct timespec ts {
        ns / 1000000000L, ns % 1000000000L
    };
    sys::sc(SYS_nanosleep, &ts, 0);
}

bool load_manifest(const char* name, char*& records, size_t& records_size) {
    size_t size = 0;
    char* data = read_file(state.dir_fd, name, size);
    if (!data) return false;
    size_t magic = sys::length(kManifestMagic), key = sys::length(state.key);
    for (size_t i = 0; i < magic + key; ++i)
        if (i >= size || data[i] != (i < magic ? kManifestMagic[i] : state.key[i - magic]))
            return false; // another job's, through a hash collision: share nothing
    records = data + magic + key;
    records_size = size - magic - key;
    return true;
}

bool load_manifest() {
    return load_manifest(kManifest, state.manifest, state.manifest_size);
}

// Leader or follower, at la_version.
void take_role() {
    const char* base = env(PYIMPORT_ENV_NODE_DIR);
    if (!base || !*base) base = "/dev/shm";
    state.key = job_key();
    if (!state.key) return go_alone("could not read this process's identity in /proc");
    char user[64];
    sys::Text u(user, sizeof user);
    u.add("pyimport-").add_number(static_cast<uint64_t>(sys::sc(SYS_getuid)));
    int base_fd = static_cast<int>(sys::sc(SYS_openat, AT_FDCWD, base, kDirFlags & ~O_NOFOLLOW));
    if (base_fd < 0) return go_alone("cannot open PYIMPORT_NODE_DIR ", base);
    sys::sc(SYS_mkdirat, base_fd, user, 0700);
    int user_fd = open_private(base_fd, user);
    sys::sc(SYS_close, base_fd);
    if (user_fd < 0) return go_alone("not a private directory of this user: ", user);
    char name[32];
    sys::Text n(name, sizeof name);
    n.add("ld-").add_number(fnv1a(state.key), 16);
    sys::sc(SYS_mkdirat, user_fd, name, 0700);
    state.dir_fd = open_private(user_fd, name);
    sys::sc(SYS_close, user_fd);
    if (state.dir_fd < 0) return go_alone("cannot make the node directory ", name);
    size_t path_size = sys::length(base) + sys::length(user) + sys::length(name) + 3;
    state.dir_path = allocate(path_size);
    if (!state.dir_path) return go_alone("out of memory");
    sys::Text(state.dir_path, path_size).add(base).add("/").add(user).add("/").add(name);
    if (!sys::Text(pyimport_audit.root, sizeof pyimport_audit.root)
             .add(state.dir_path)
             .add("/root")
             .ok) {
        pyimport_audit.root[0] = 0;
        return go_alone("PYIMPORT_NODE_DIR is too long: ", base);
    }
    // Copies in a directory mounted noexec cannot be mapped executable.
    struct statfs fs {};
    if (sys::sc(SYS_fstatfs, state.dir_fd, &fs) == 0 && (fs.f_flags & ST_NOEXEC))
        return go_alone("PYIMPORT_NODE_DIR is mounted noexec: ", base);

    // The node's local rank 0 leads (rank 0 on its node); the others wait a
    // moment for it, then the first to take the lock leads (local rank 0 may
    // run another program, or none may be told).
    static const char* const kLocalRank[] = {"MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK",
                                             "SLURM_LOCALID", "PMIX_LOCAL_RANK"};
    const char* local = nullptr;
    for (const char* name : kLocalRank)
        if (!local) local = env(name);
    bool first = local && sys::equal(local, "0");
    long now = now_ns();
    long leader_wait = local && !first ? now + kLeaderNanoseconds : now;
    long deadline = now + kWaitNanoseconds;
    for (long pause = 200000;; pause = pause < 16000000 ? pause * 2 : pause) {
        if (load_manifest()) {
            while (sys::sc(SYS_flock, state.dir_fd, LOCK_SH | LOCK_NB) != 0 && now_ns() < deadline)
                sleep_ns(1000000);
            pyimport_audit.role = AuditRole::follower;
            return;
        }
        now = now_ns();
        bool arrived = sys::sc(SYS_faccessat, state.dir_fd, kLeaderMark, F_OK, 0) == 0;
        if (!arrived && now >= leader_wait &&
            sys::sc(SYS_flock, state.dir_fd, LOCK_EX | LOCK_NB) == 0) {
            if (load_manifest()) { // finished meanwhile
                sys::sc(SYS_flock, state.dir_fd, LOCK_SH);
                pyimport_audit.role = AuditRole::follower;
                return;
            }
            int mark = static_cast<int>(sys::sc(SYS_openat, state.dir_fd, kLeaderMark,
                                                O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
            if (mark >= 0) sys::sc(SYS_close, mark);
            state.loads_fd = static_cast<int>(sys::sc(SYS_openat, state.dir_fd, kLoadsLock,
                                                      O_RDONLY | O_CREAT | O_CLOEXEC, 0600));
            if (state.loads_fd >= 0) sys::sc(SYS_flock, state.loads_fd, LOCK_EX | LOCK_NB);
            pyimport_audit.role = AuditRole::leader;
            return;
        }
        // The leader has come and gone without a manifest: nothing to share.
        if (arrived && sys::sc(SYS_flock, state.dir_fd, LOCK_SH | LOCK_NB) == 0) {
            if (load_manifest()) {
                pyimport_audit.role = AuditRole::follower;
                return;
            }
            return go_alone("the node's first process of the job recorded no libraries");
        }
        if (now >= deadline) break;
        sleep_ns(pause);
    }
    go_alone("waited 10 s for the node's first process of the job to record its libraries");
}

const char* records_lookup(const char* records, size_t size, const char* name,
                           const char* requester) {
    for (size_t at = 0; at < size;) {
        const char* fields[3];
        for (auto& f : fields) {
            f = records + at;
            at += sys::length(f) + 1;
            if (at > size) return nullptr;
        }
        if (sys::equal(fields[0], requester) && sys::equal(fields[1], name)) return fields[2];
    }
    return nullptr;
}

// The path a follower's search is answered with, or nullptr.
const char* manifest_lookup(const char* name, const char* requester) {
    size_t root = sys::length(pyimport_audit.root);
    if (root && sys::starts_with(requester, pyimport_audit.root) && requester[root] == '/')
        requester += root; // a copy asks as its original did
    const char* path = records_lookup(state.manifest, state.manifest_size, name, requester);
    return path ? path : records_lookup(state.loads, state.loads_size, name, requester);
}

// A follower's copy of the library at `path` (as the leader loaded it), or
// nullptr: a dlopen of the original by that path gets the loaded copy, as a
// dlopen of a loaded library gets it without the copies.
const char* manifest_copy_of(const char* path) {
    size_t root = sys::length(pyimport_audit.root);
    for (size_t at = 0; at < state.manifest_size;) {
        const char* served = nullptr;
        for (int i = 0; i < 3; ++i) {
            served = state.manifest + at;
            at += sys::length(served) + 1;
            if (at > state.manifest_size) return nullptr;
        }
        if (root && sys::starts_with(served, pyimport_audit.root) && served[root] == '/' &&
            sys::equal(served + root, path))
            return served;
    }
    return nullptr;
}

// The object's own RPATH and RUNPATH name no $ORIGIN (read from its dynamic
// section in memory, which the loader may have relocated).
bool origin_free(const struct link_map* map) {
    const ElfW(Dyn)* dyn = map->l_ld;
    if (!dyn) return false;
    uintptr_t strtab = 0;
    uintptr_t paths[2] = {0, 0};
    int count = 0;
    for (; dyn->d_tag != DT_NULL; ++dyn) {
        if (dyn->d_tag == DT_STRTAB) strtab = dyn->d_un.d_ptr;
        if ((dyn->d_tag == DT_RPATH || dyn->d_tag == DT_RUNPATH) && count < 2)
            paths[count++] = dyn->d_un.d_val;
    }
    if (!count) return true;
    if (!strtab) return false;
    if (strtab < map->l_addr) strtab += map->l_addr;
    for (int i = 0; i < count; ++i)
        if (sys::contains(reinterpret_cast<const char*>(strtab + paths[i]), "ORIGIN")) return false;
    return true;
}

// Makes the directories of `path` below root/ in the node directory and opens
// the copy's file for writing.
int create_copy(const char* path, mode_t mode) {
    char buffer[PATH_MAX + 8];
    sys::Text rel(buffer, sizeof buffer);
    rel.add("root").add(path);
    if (!rel.ok) return -1;
    for (size_t i = 4; i < rel.size; ++i) { // "root" first
        if (buffer[i] != '/') continue;
        buffer[i] = 0;
        long made = sys::sc(SYS_mkdirat, state.dir_fd, buffer, 0700);
        buffer[i] = '/';
        if (made != 0 && made != -17 /* EEXIST */) return -1;
    }
    return static_cast<int>(
        sys::sc(SYS_openat, state.dir_fd, buffer, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
}

bool copy_library(const char* path, uint64_t& bytes) {
    int in = static_cast<int>(sys::sc(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC));
    if (in < 0) return false;
    struct stat st {};
    bool ok = sys::sc(SYS_fstat, in, &st) == 0 && S_ISREG(st.st_mode);
    int out = ok ? create_copy(path, 0500) : -1;
    ok = out >= 0;
    long long left = st.st_size;
    while (ok && left > 0) {
        long sent = sys::sc(SYS_sendfile, out, in, 0, left > (1 << 30) ? (1 << 30) : left);
        if (sent == -4 /* EINTR */) continue;
        if (sent <= 0)
            ok = false;
        else
            left -= sent;
    }
    if (out >= 0) sys::sc(SYS_close, out);
    sys::sc(SYS_close, in);
    if (ok) bytes += static_cast<uint64_t>(st.st_size);
    return ok;
}

bool write_all(int fd, const char* data, size_t size) {
    while (size) {
        long put = sys::sc(SYS_write, fd, data, size);
        if (put == -4) continue;
        if (put <= 0) return false;
        data += put;
        size -= static_cast<size_t>(put);
    }
    return true;
}

// The leader, at its first consistent link map: the copies, then the manifest.
bool write_manifest(const char* file, int from, bool copies) {
    size_t capacity = sys::length(kManifestMagic) + sys::length(state.key) + 1;
    for (int i = from; i < state.record_count; ++i)
        capacity += sys::length(state.records[i].requester) + sys::length(state.records[i].name) +
                    sys::length(state.records[i].path) + sys::length(pyimport_audit.root) + 3;
    char* buffer = allocate(capacity);
    if (!buffer) return go_alone("out of memory"), false;
    sys::Text manifest(buffer, capacity);
    manifest.add(kManifestMagic).add(state.key);
    for (int i = from; i < state.record_count; ++i) {
        const Record& r = state.records[i];
        bool searched = r.flag == LA_SER_RUNPATH || r.flag == LA_SER_LIBPATH;
        bool copy = copies && searched && r.path[0] == '/' && r.origin_free;
        if (copy && !copy_library(r.path, pyimport_audit.copied_bytes))
            return go_alone("could not copy ", r.path), false;
        if (copy) ++pyimport_audit.copied;
        manifest.add(r.requester).add_char(0).add(r.name).add_char(0);
        if (copy) manifest.add(pyimport_audit.root);
        manifest.add(r.path).add_char(0);
    }
    int fd = static_cast<int>(sys::sc(SYS_openat, state.dir_fd, "manifest.new",
                                      O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    bool ok = fd >= 0 && manifest.ok && write_all(fd, buffer, manifest.size);
    if (fd >= 0) sys::sc(SYS_close, fd);
    if (!ok || sys::sc(SYS_renameat, state.dir_fd, "manifest.new", state.dir_fd, file) != 0)
        return go_alone("could not write the manifest in ", state.dir_path), false;
    return true;
}

// The names in each LD_LIBRARY_PATH directory, for the preload's searches
// before it has the snapshot (interface.hpp): per entry "D<dir>" and its
// names as "N<name>", "A<dir>" (absent), or "?<entry>" (not followed: relative,
// a token, unreadable); each '\0'-terminated.
bool list_library_path() {
    const char* value = env("LD_LIBRARY_PATH");
    if (!value || !*value) return true;
    size_t capacity = 8u << 20; // pages are only touched as used
    char* buffer = allocate(capacity);
    if (!buffer) return false;
    sys::Text t(buffer, capacity);
    char dir[PATH_MAX];
    for (const char* at = value;;) {
        const char* end = at;
        while (*end && *end != ':' && *end != ';')
            ++end;
        size_t n = static_cast<size_t>(end - at);
        bool plain = n > 0 && n < sizeof dir && at[0] == '/';
        for (size_t i = 0; plain && i < n; ++i)
            plain = at[i] != '$';
        int fd = -1;
        if (plain) {
            for (size_t i = 0; i < n; ++i)
                dir[i] = at[i];
            dir[n] = 0;
            fd = static_cast<int>(
                sys::sc(SYS_openat, AT_FDCWD, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        }
        if (!plain || (fd < 0 && fd != -2 /* ENOENT */ && fd != -20 /* ENOTDIR */)) {
            t.add("?").add(at, n).add_char(0);
        } else if (fd < 0) {
            t.add("A").add(dir).add_char(0);
        } else {
            t.add("D").add(dir).add_char(0);
            alignas(8) char entries[4096];
            long got;
            while ((got = sys::sc(SYS_getdents64, fd, entries, sizeof entries)) > 0) {
                for (long off = 0; off < got;) {
                    const char* name = entries + off + 19; // d_name in linux_dirent64
                    off += *reinterpret_cast<const unsigned short*>(entries + off + 16);
                    if (!sys::equal(name, ".") && !sys::equal(name, ".."))
                        t.add("N").add(name).add_char(0);
                }
            }
            sys::sc(SYS_close, fd);
            if (got < 0) return false;
        }
        if (!*end) break;
        at = end + 1;
    }
    if (!t.ok) return false;
    int fd = static_cast<int>(sys::sc(SYS_openat, state.dir_fd, "library-path.new",
                                      O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    bool ok = fd >= 0 && write_all(fd, buffer, t.size);
    if (fd >= 0) sys::sc(SYS_close, fd);
    if (!ok || sys::sc(SYS_renameat, state.dir_fd, "library-path.new", state.dir_fd, kListing) != 0)
        return false;
    pyimport_audit.library_path_listing = buffer;
    pyimport_audit.library_path_listing_size = t.size;
    return true;
}

void load_listing() {
    size_t size = 0;
    char* data = read_file(state.dir_fd, kListing, size);
    if (!data) return;
    pyimport_audit.library_path_listing = data;
    pyimport_audit.library_path_listing_size = size;
}

// The followers wait for the exclusive lock to go: with a manifest they use
// it, without one they load as usual.
void publish() {
    bool listed = list_library_path();
    if (!listed) go_alone("could not list the LD_LIBRARY_PATH directories");
    bool ok = listed && write_manifest(kManifest, 0, true);
    if (!ok && state.loads_fd >= 0) { // nothing to wait for at the start-up loads either
        sys::sc(SYS_close, state.loads_fd);
        state.loads_fd = -1;
    }
    sys::sc(SYS_flock, state.dir_fd, LOCK_SH);
}

// The preload's start-up loads (interface.hpp). Copies are not made of them:
// an MPI library finds its own parts from where it was loaded.
void startup_loads(uint32_t step) {
    if (sys::sc(SYS_getpid) != state.pid) return;
    AuditRole role = pyimport_audit.role;
    if (role == AuditRole::leader) {
        if (step == pyimport::kLoadsBegin && state.loads_fd > 0) {
            state.loads_from = state.record_count;
            state.recording_loads = true;
        } else if (step != pyimport::kLoadsBegin && state.loads_fd > 0) {
            if (state.recording_loads && step == pyimport::kLoadsEnd)
                write_manifest(kLoads, state.loads_from, false);
            state.recording_loads = false;
            sys::sc(SYS_close, state.loads_fd); // the lock goes
            state.loads_fd = -1;
        }
        return;
    }
    if (role != AuditRole::follower || step != pyimport::kLoadsBegin || state.loads) return;
    int lock =
        static_cast<int>(sys::sc(SYS_openat, state.dir_fd, kLoadsLock, O_RDONLY | O_CLOEXEC));
    long deadline = now_ns() + kLoadsNanoseconds;
    for (long pause = 200000;; pause = pause < 8000000 ? pause * 2 : pause) {
        if (load_manifest(kLoads, state.loads, state.loads_size)) break;
        // The leader is done (or gone) without them; or never said.
        if (lock < 0 || sys::sc(SYS_flock, lock, LOCK_SH | LOCK_NB) == 0 || now_ns() >= deadline)
            break;
        sleep_ns(pause);
    }
    if (lock >= 0) sys::sc(SYS_close, lock);
}

// Removes what the open directory holds (the copies and the manifest).
void remove_entries(int fd, int depth) {
    alignas(8) char buffer[2048];
    for (bool removed = true; removed;) { // again from the start while entries went
        removed = false;
        sys::sc(SYS_lseek, fd, 0, SEEK_SET);
        long got;
        while ((got = sys::sc(SYS_getdents64, fd, buffer, sizeof buffer)) > 0)
            for (long at = 0; at < got;) {
                struct Dirent {
                    uint64_t ino;
                    int64_t off;
                    unsigned short reclen;
                    unsigned char type;
                    char name[1];
                };
                const auto* d = reinterpret_cast<const Dirent*>(buffer + at);
                at += d->reclen;
                const char* n = d->name;
                if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0))) continue;
                if (sys::sc(SYS_unlinkat, fd, n, 0) == 0) {
                    removed = true;
                    continue;
                }
                int sub = depth < 64 ? static_cast<int>(sys::sc(SYS_openat, fd, n, kDirFlags)) : -1;
                if (sub < 0) continue;
                remove_entries(sub, depth + 1);
                sys::sc(SYS_close, sub);
                removed = sys::sc(SYS_unlinkat, fd, n, AT_REMOVEDIR) == 0 || removed;
            }
    }
}

// At the process's end: the node's last process of the job removes the
// directory (a killed job's is removed by the next job's preload).
void leave() {
    if (state.dir_fd <= 0) return; // a fork child too: it holds the lock as well
    sys::sc(SYS_close, state.dir_fd);
    state.dir_fd = -1;
    int fd = static_cast<int>(sys::sc(SYS_openat, AT_FDCWD, state.dir_path, kDirFlags));
    if (fd < 0) return;
    if (sys::sc(SYS_flock, fd, LOCK_EX | LOCK_NB) == 0) {
        remove_entries(fd, 0);
        sys::sc(SYS_unlinkat, AT_FDCWD, state.dir_path, AT_REMOVEDIR);
    }
    sys::sc(SYS_close, fd);
}

} // namespace

extern "C" {

__attribute__((visibility("default"))) unsigned la_version(unsigned version) {
    if (state.decided) return version < LAV_CURRENT ? version : LAV_CURRENT;
    state.decided = true;
    state.pid = static_cast<int>(sys::sc(SYS_getpid));
    environment = read_file(AT_FDCWD, "/proc/self/environ", environment_size);
    if (!environment || !is_candidate()) return 0; // unloaded: costs nothing more
    pyimport_audit.pid = state.pid;
    pyimport_audit.startup_loads = &startup_loads;
    take_role();
    if (pyimport_audit.role == AuditRole::follower) load_listing();
    return version < LAV_CURRENT ? version : LAV_CURRENT;
}

__attribute__((visibility("default"))) unsigned la_objopen(struct link_map* map, Lmid_t lmid,
                                                           uintptr_t* cookie) {
    *cookie = reinterpret_cast<uintptr_t>(map);
    if (!state.main_cookie && map->l_name && !map->l_name[0])
        state.main_cookie = reinterpret_cast<const char*>(map);
    bool recording = !state.consistent || state.recording_loads;
    if (pyimport_audit.role == AuditRole::leader && recording && lmid == LM_ID_BASE &&
        state.pending.active) {
        state.pending.active = false;
        if (state.record_count == kMaxRecords) {
            go_alone("more libraries than one manifest holds");
            return 0;
        }
        Record& r = state.records[state.record_count];
        r = {state.pending.requester, state.pending.name, copy_string(map->l_name),
             state.pending.flag, origin_free(map)};
        // A relative name (an empty or relative search entry: the working
        // directory) is not the same file for another process.
        if (r.path && r.path[0] == '/') ++state.record_count;
    }
    return 0;
}

__attribute__((visibility("default"))) char* la_objsearch(const char* name, uintptr_t* cookie,
                                                          unsigned int flag) {
    const auto* requester =
        cookie && *cookie ? reinterpret_cast<const link_map*>(*cookie) : nullptr;
    const char* requester_name = requester && requester->l_name ? requester->l_name : "";
    AuditRole role = pyimport_audit.role;
    if (flag == LA_SER_ORIG) state.pending.active = false; // a new search
    if (flag == LA_SER_ORIG && !sys::has_slash(name)) {
        if (role == AuditRole::follower && sys::sc(SYS_getpid) == state.pid) {
            if (const char* path = manifest_lookup(name, requester_name)) {
                ++pyimport_audit.served;
                return const_cast<char*>(path);
            }
        }
        if (auto resolve = pyimport_audit.resolve)
            if (const char* path = resolve(name, requester, pyimport_audit.resolve_context))
                return const_cast<char*>(path);
    }
    // Also in fork children: they have the copies loaded too.
    if (flag == LA_SER_ORIG && role == AuditRole::follower && name[0] == '/')
        if (const char* copy = manifest_copy_of(name)) return const_cast<char*>(copy);
    if (role == AuditRole::leader && (!state.consistent || state.recording_loads)) {
        if (flag == LA_SER_ORIG) {
            state.pending.active = !sys::has_slash(name);
            state.pending.name = copy_string(name);
            state.pending.requester = copy_string(requester_name);
            state.pending.flag = flag;
            if (!state.pending.name || !state.pending.requester) state.pending.active = false;
        } else {
            state.pending.flag = flag;
        }
    }
    return const_cast<char*>(name);
}

__attribute__((visibility("default"))) void la_activity(uintptr_t*, unsigned int flag) {
    if (flag != LA_ACT_CONSISTENT || state.consistent) return;
    state.consistent = true;
    if (pyimport_audit.role == AuditRole::leader) publish();
}

__attribute__((visibility("default"))) unsigned la_objclose(uintptr_t* cookie) {
    if (cookie && reinterpret_cast<const char*>(*cookie) == state.main_cookie) leave();
    return 0;
}

// What the compiler may call for copies and zeroing.
__attribute__((visibility("hidden"))) void* memcpy(void* to, const void* from, size_t n) {
    auto* d = static_cast<char*>(to);
    const auto* s = static_cast<const char*>(from);
    for (size_t i = 0; i < n; ++i)
        d[i] = s[i];
    return to;
}

__attribute__((visibility("hidden"))) void* memset(void* to, int c, size_t n) {
    auto* d = static_cast<char*>(to);
    for (size_t i = 0; i < n; ++i)
        d[i] = static_cast<char>(c);
    return to;
}

} // extern "C"
