// Start-up and exit of the shim in a process, as orchestration: decide
// (activation.hpp), take part in the one start-up step (protocol.hpp), serve;
// at exit or exec, the exit step. The state below is the process's only.
#include "startup/runtime.hpp"

#include "base/config.hpp"
#include "base/log.hpp"
#include "base/real.hpp"
#include "image/profile.hpp"
#include "loader/audit_link.hpp"
#include "loader/search.hpp"
#include "serve/stats.hpp"
#include "startup/activation.hpp"
#include "startup/local_filesystems.hpp"
#include "startup/protocol.hpp"
#include "startup/transport.hpp"

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <mutex>
#include <thread>
#include <unistd.h>

namespace pyimport {

namespace {
// Never freed: static destructors run before the library's destructor, and
// the wrappers serve until the very end.
std::atomic<Core*> g_core{nullptr};
std::atomic<Libraries*> g_libraries{nullptr};
pid_t g_active_pid = 0;
// Set once the start-up step's collectives are done: this rank then takes
// part in the exit step.
std::atomic<Transport*> g_transport{nullptr};
std::atomic<bool> g_gather_stats{false}; // the same on every rank
std::atomic<int> g_ranks{0};
std::atomic<bool> g_shut_down{false};
int g_exit_timeout = 0; // seconds; 0: the exit waits as MPI_Finalize does
double g_start_seconds = 0;
NotCached g_not_cached;   // rank 0's, for the summary
StartFacts g_start_facts; // published with the transport
double g_started_at = 0;  // wall clock at activation
// Only constant-initialised globals: the constructor below may run before
// this file's dynamic initialisers.
const std::string* g_stats_file = nullptr; // PYIMPORT_STATS_FILE, not expanded
bool g_print_stats = false;                // PYIMPORT_STATS
const ProgramProfile* g_profile = nullptr; // rank 0's

double seconds_between(std::chrono::steady_clock::time_point from,
                       std::chrono::steady_clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
}

const char* getenv_raw(const char* name) {
    return getenv(name);
}

void publish_transport(StartupRun& run, bool connected) {
    if (!connected) return;
    g_ranks.store(run.transport->size(), std::memory_order_relaxed);
    g_start_facts = run.result.facts;
    // Rank 0's decision, as every rank received it: a rank whose copy of the
    // image failed still takes part (with zeros).
    g_gather_stats.store(run.result.gather_stats, std::memory_order_relaxed);
    g_transport.store(run.transport.release(), std::memory_order_release);
}

// Rank 0: what this interpreter searches and which program it runs.
WalkInputs interpreter_inputs(const Config& config) {
    WalkInputs inputs;
    std::vector<std::string> command_line = own_command_line(); // read once for both
    SearchPlan plan = default_search_plan(command_line);
    if (config.prefixes.empty()) {
        inputs.default_prefixes = std::move(plan.prefixes);
        inputs.prefix_reasons = std::move(plan.reasons);
    }
    inputs.probes = std::move(plan.probes);
    inputs.script_directory = std::move(plan.script_directory);
    inputs.cache_tag = python_cache_tag();
    if (const char* value = getenv_raw("LD_LIBRARY_PATH")) inputs.library_path = value;
    inputs.profile_dir = profile_directory(config.profile, getenv_raw);
    if (!inputs.profile_dir.empty()) {
        inputs.executable = executable_path();
        if (!command_line.empty()) command_line.erase(command_line.begin()); // argv[0]
        inputs.program = program_identity(command_line);
    }
    return inputs;
}

bool descriptor_open(int fd) {
    return REAL(fcntl)(fd, F_GETFD) >= 0;
}

// The first of the candidate MPI libraries that loads.
std::unique_ptr<Transport> open_transport(const Config& config, const Launch& launch,
                                          std::string& error) {
    std::string tried;
    for (const std::string& library : mpi_library_candidates(config, launch)) {
        std::string why;
        if (auto transport = open_mpi_transport(library, config.mpi_sessions, why))
            return transport;
        tried += (tried.empty() ? "" : "; ") + why;
    }
    error = tried + " (PYIMPORT_MPI_LIBRARY names the MPI library)";
    return nullptr;
}

// Tells the audit library (if loaded) about the start-up's own loads.
void startup_loads(uint32_t step) {
    AuditInterface* audit = audit_interface();
    if (audit && audit->startup_loads) audit->startup_loads(step);
}

// What the loader searches in LD_LIBRARY_PATH before the snapshot arrives
// (the MPI library's own loads at its initialisation), from the node's listing.
SearchSettings search_settings(const std::string& lib) {
    SearchSettings settings;
    const char* library_path = getenv_raw("LD_LIBRARY_PATH");
    settings.library_path_set = library_path != nullptr;
    settings.library_path = library_path ? library_path : "";
    settings.executable = executable_path();
    settings.lib = lib;
    return settings;
}

void connect_early_search() {
    AuditInterface* audit = audit_interface();
    if (!audit || !audit->library_path_listing) return;
    LdCache cache;
    if (!cache.load()) return;
    auto* early = new EarlySearch(
        std::string_view(audit->library_path_listing, audit->library_path_listing_size),
        search_settings(PYIMPORT_LOADER_LIB), std::move(cache), audit->root);
    connect_audit_early(*audit, early, static_cast<int>(getpid()));
}

void activate() {
    std::string why_not;
    Launch launch;
    if (!launched_as_rank(getenv_raw, descriptor_open, launch, why_not)) return;
    Config config;
    std::string error;
    switch (decide_activation(getenv_raw, is_python, config, error)) {
    case Activation::Inert:
        startup_loads(kLoadsNone);
        return;
    case Activation::Misconfigured:
        startup_loads(kLoadsNone);
        set_log_level(config.log);
        log_error("%s", error.c_str());
        return;
    case Activation::Active:
        set_log_level(config.log);
        break;
    }
    // Mark before anything can start a child: descendants stay inert.
    char pid[32];
    std::snprintf(pid, sizeof pid, "%d", static_cast<int>(getpid()));
    setenv(kActiveMarker, pid, 1);
    if (!config.serve_local && may_decide_alone(launch)) {
        // Node-local trees, as this rank can tell without asking a shared
        // filesystem, and every rank on this node (they see what it sees):
        // pass through before MPI. Otherwise rank 0 looks, for everyone.
        char cwd[PATH_MAX];
        std::string here = getcwd(cwd, sizeof cwd) ? cwd : "";
        std::string kinds;
        if (on_local_filesystems(
                likely_trees(getenv_raw, own_command_line(), executable_path(), here), kinds)) {
            startup_loads(kLoadsNone);
            report_local_trees(config, launch.rank <= 0, kinds);
            return;
        }
    }

    auto start = std::chrono::steady_clock::now();
    // The MPI library and what it needs: the node's first process records
    // their searches, the others answer theirs from that record.
    startup_loads(kLoadsBegin);
    connect_early_search();
    // Without the snapshot's search at the end, the early one stops.
    struct EarlyUntilFull {
        bool full = false;
        ~EarlyUntilFull() {
            if (!full) disconnect_audit_early();
        }
    } early;
    auto loading = std::chrono::steady_clock::now();
    std::unique_ptr<Transport> transport = open_transport(config, launch, error);
    double mpi_load_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - loading).count();
    startup_loads(kLoadsEnd);
    if (!transport) {
        log_error("%s; running uncached", error.c_str());
        return;
    }
    g_active_pid = getpid();
    if (launcher_keeps_going(launch)) g_exit_timeout = config.exit_timeout;
    g_started_at =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    if (!config.stats_file.empty()) {
        // Relative to where the job started, not where the program is at exit.
        char cwd[PATH_MAX];
        std::string file = config.stats_file;
        if (file[0] != '/' && getcwd(cwd, sizeof cwd)) {
            std::string dir;
            for (const char* p = cwd; *p; ++p)
                dir += *p == '%' ? "%%" : std::string(1, *p); // a '%' of the directory's own
            file = dir + "/" + file;
        }
        g_stats_file = new std::string(std::move(file));
    }
    g_print_stats = config.stats;

    auto* run = new StartupRun;
    run->config = config;
    run->inputs = interpreter_inputs;
    run->transport = std::move(transport);
    run->launcher_ranks = launch.ranks;
    run->launcher_rank = launch.rank;
    run->completed = publish_transport;
    if (!run_start_up(*run, config.timeout)) return;

    std::unique_lock lock(run->mutex);
    RankStart& result = run->result;
    g_start_facts.mpi_load_seconds = mpi_load_seconds;
    if (!result.shared || !result.attached) return;
    g_start_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (result.snapshot.header().groups_hash != credentials_hash()) {
        PYIMPORT_LOG(LogLevel::info, "credentials differ from rank 0's; running uncached");
        return;
    }
    auto* core = new Core(config, std::move(result.image), result.snapshot);
    g_not_cached = result.not_cached;
    if (result.profile) {
        g_profile = result.profile.release();
        core->tree().record_use(true); // rank 0 keeps a profile
    }
    if (result.mirror) {
        auto* libraries = new Libraries(core->tree(), std::move(result.mirror));
        core->stats().name_mirrored_callers(libraries->root());
        g_libraries.store(libraries, std::memory_order_release);
    }
    if (AuditInterface* audit = audit_interface()) {
        std::string summary = audit_summary(*audit);
        if (audit->role == AuditRole::alone && launch.rank <= 0) // one line for the job
            log_error("%s; libraries load before main as without it", summary.c_str());
        else
            PYIMPORT_LOG(LogLevel::info, "%s", summary.c_str());
        if (Libraries* libraries = g_libraries.load(std::memory_order_acquire)) {
            libraries->set_copies_root(audit->root);
            SearchSettings settings = search_settings(libraries->loader_lib());
            LdCache cache;
            if (!cache.load()) PYIMPORT_LOG(LogLevel::info, "no ld.so cache read");
            auto* search = new LibrarySearch(*libraries, std::move(settings), std::move(cache));
            connect_audit(*audit, search, static_cast<int>(getpid()));
            early.full = true;
        }
    }
    PYIMPORT_LOG(LogLevel::info, "serving %u entries, %zu bytes, from %u prefixes",
                 result.snapshot.entry_count(), core->tree().snapshot().size(),
                 result.snapshot.root_count());
    StartFacts& f = g_start_facts;
    f.hand_over_seconds = seconds_between(run->done_at, std::chrono::steady_clock::now());
    PYIMPORT_LOG(LogLevel::info,
                 "start-up phases: MPI library %.3f s, MPI initialisation %.3f s, walk %.3f s, "
                 "rank 0's status %.3f s, image %.3f s, node libraries %.3f s (copies %.3f s), "
                 "hand-over %.3f s; %.3f s in all",
                 f.mpi_load_seconds, f.mpi_init_seconds, f.walk_seconds, f.status_seconds,
                 f.broadcast_seconds, f.node_seconds, f.copy_seconds, f.hand_over_seconds,
                 seconds_between(start, std::chrono::steady_clock::now()));
    g_core.store(core, std::memory_order_release);
}

} // namespace

Core* current_core() {
    Core* core = g_core.load(std::memory_order_acquire);
    if (!core) return nullptr;
    // getpid is a system call (glibc caches nothing since 2.25): a fork or
    // vfork child sees its own pid and goes inert.
    return getpid() == g_active_pid ? core : nullptr;
}

Libraries* inherited_libraries() {
    return g_libraries.load(std::memory_order_acquire);
}

bool shutdown_pending() {
    return g_transport.load(std::memory_order_acquire) && getpid() == g_active_pid &&
           !g_shut_down.load(std::memory_order_acquire);
}

namespace {

// The exit step in a thread of its own, which the exiting thread waits for
// only so long: a rank that died never arrives, and the thread then stays
// behind, blocked in MPI, until the process ends.
struct BoundedExit {
    std::mutex mutex;
    std::condition_variable done_changed;
    bool done = false;
    std::vector<std::string> lines;
};

// Rank 0: where the job's statistics go, and what names the job there.
void statistics_file(RankExit& rank) {
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "unknown");
    rank.host = host;
    rank.job_id = job_id_from(getenv_raw);
    if (rank.job_id.empty()) rank.job_id = std::to_string(getpid()); // as %j expands
    rank.executable = executable_path();
    if (!g_stats_file) return;
    std::string error;
    if (!expand_stats_path(*g_stats_file, rank.job_id, rank.host, static_cast<int>(getpid()),
                           rank.stats_file, error)) {
        log_error("%s; the job's statistics are not written", error.c_str());
        rank.stats_file.clear();
    }
}

std::vector<std::string> run_exit_step(Transport& transport, const RankExit& rank) {
    try {
        return exit_rank(transport, rank);
    } catch (...) {
        log_error("unexpected failure at exit");
        return {};
    }
}

} // namespace

void shutdown_at_exit(ExitPath path) {
    Transport* transport = g_transport.load(std::memory_order_acquire);
    if (!transport || getpid() != g_active_pid) return;
    if (g_shut_down.exchange(true)) return;
    int saved_inside = t_inside_shim;
    t_inside_shim = 1;
    RankExit rank;
    rank.gather_stats = g_gather_stats.load(std::memory_order_relaxed);
    rank.core = g_core.load(std::memory_order_acquire);
    rank.libraries = g_libraries.load(std::memory_order_acquire);
    rank.profile = g_profile;
    rank.ranks = g_ranks.load(std::memory_order_relaxed);
    rank.start_seconds = g_start_seconds;
    rank.not_cached = g_not_cached;
    rank.facts = g_start_facts;
    rank.facts.started_at = g_started_at;
    // What the loader's audit library copied before main, on the node's leader.
    if (AuditInterface* audit = audit_interface(); audit && audit->role == AuditRole::leader)
        rank.facts.library_bytes += audit->copied_bytes;
    rank.print_stats = g_print_stats;
    try {
        if (rank.gather_stats && transport->rank() == 0) statistics_file(rank);
    } catch (...) {
        rank.stats_file.clear(); // the exit's collectives still follow
    }
    std::vector<std::string> lines;
    // Called from _exit and exec too: nothing may leave through them.
    try {
        if (path == ExitPath::application_finalize || g_exit_timeout <= 0) {
            lines = run_exit_step(*transport, rank);
        } else {
            auto bounded = std::make_shared<BoundedExit>();
            std::thread([bounded, transport, rank] {
                t_inside_shim = 1;
                std::vector<std::string> out = run_exit_step(*transport, rank);
                std::lock_guard lock(bounded->mutex);
                bounded->lines = std::move(out);
                bounded->done = true;
                bounded->done_changed.notify_all();
            }).detach();
            std::unique_lock lock(bounded->mutex);
            if (bounded->done_changed.wait_for(lock, std::chrono::seconds(g_exit_timeout),
                                               [&] { return bounded->done; }))
                lines = std::move(bounded->lines);
            else
                PYIMPORT_LOG(LogLevel::info,
                             "the other ranks did not reach the exit within "
                             "PYIMPORT_EXIT_TIMEOUT=%d s (a rank was lost?); leaving without them",
                             g_exit_timeout);
        }
        for (const std::string& line : lines)
            log_line("%s", line.c_str());
    } catch (...) {
        log_error("unexpected failure at exit");
    }
    t_inside_shim = saved_inside;
}

} // namespace pyimport

__attribute__((constructor)) static void pyimport_start() {
    using namespace pyimport;
    int saved = errno;
    t_inside_shim = 1;
    real::resolve_all();
    try {
        remember_audit_interface();
        activate();
    } catch (...) {
        log_error("unexpected failure at start-up; running uncached");
    }
    t_inside_shim = 0;
    errno = saved;
}

__attribute__((destructor)) static void pyimport_stop() {
    int saved = errno;
    try {
        pyimport::shutdown_at_exit();
    } catch (...) {
    }
    errno = saved;
}
