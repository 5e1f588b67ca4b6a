// Start-up and exit of the shim in a process: decide, take part in the one
// broadcast, serve; at exit, the summary and the end of the MPI session.
#include "runtime.hpp"

#include "activation.hpp"
#include "config.hpp"
#include "libraries.hpp"
#include "log.hpp"
#include "mirror.hpp"
#include "profile.hpp"
#include "real.hpp"
#include "transport.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <unistd.h>
#include <unordered_map>

namespace pyimport {

thread_local int t_inside_shim __attribute__((tls_model("initial-exec"))) = 0;

namespace {
std::atomic<Core*> g_core{nullptr};
pid_t g_active_pid = 0;
std::atomic<Transport*> g_transport{nullptr};
std::atomic<bool> g_shut_down{false};
double g_broadcast_seconds = 0;
int g_ranks = 0;
bool g_gather_stats = false; // the same on every rank: decided by shared facts
// Rank 0's profile: where it lives and what it held when the job started.
// Never freed: static destructors run before the library's destructor.
struct Profile {
    std::string file;
    PathSet paths;
};
Profile* g_profile = nullptr;

// The profile's directory from PYIMPORT_PROFILE, or "" when off.
std::string profile_directory(const std::string& setting) {
    if (setting == "off") return "";
    if (setting != "auto") return setting;
    const char* cache = getenv("XDG_CACHE_HOME");
    if (cache && cache[0] == '/') return std::string(cache) + "/pyimport";
    const char* home = getenv("HOME");
    if (home && home[0] == '/') return std::string(home) + "/.cache/pyimport";
    return "";
}

// Rank 0, at start: which profile, and its paths (none: walk everything).
void load_profile(const Config& config, BuildOptions& options) {
    std::string dir = profile_directory(config.profile);
    if (dir.empty()) return;
    if (dir[0] != '/') {
        log_error("PYIMPORT_PROFILE=%s is not an absolute directory; not using a profile",
                  dir.c_str());
        return;
    }
    g_profile = new Profile;
    g_profile->file =
        profile_file(dir, executable_path(), program_identity(own_arguments()), options.prefixes);
    std::string error;
    if (!read_profile(g_profile->file, g_profile->paths, error)) {
        log_error("%s; ignoring it (the next job rewrites it)", error.c_str());
        g_profile->paths.clear();
        return;
    }
    if (!error.empty()) PYIMPORT_LOG(LogLevel::info, "%s; walking every prefix", error.c_str());
    PYIMPORT_LOG(LogLevel::info, "profile %s: %zu paths", g_profile->file.c_str(),
                 g_profile->paths.size());
    if (!g_profile->paths.empty()) options.profile = &g_profile->paths;
}

// Rank 0, at exit: what this job used, added to the profile.
void save_profile(Core& core) {
    if (!g_profile) return;
    Tree& tree = core.tree();
    const Snapshot& snapshot = tree.snapshot();
    PathSet used;
    for (uint32_t i = snapshot.root_count(); i < snapshot.entry_count(); ++i)
        if (tree.was_used(i)) used.insert(snapshot.path(i));
    for (std::string& p : tree.learned_paths())
        used.insert(std::move(p));
    // Earlier jobs' paths stay unless this snapshot shows them gone (asking
    // it is not a use).
    tree.record_use(false);
    PathSet paths;
    for (const std::string& p : g_profile->paths)
        if (tree.resolve(Position{}, p, false).kind != Resolution::Failed) paths.insert(p);
    size_t kept = paths.size();
    paths.merge(used);
    if (kept == g_profile->paths.size() && paths.size() == kept) return; // nothing new
    std::string error;
    if (!write_profile(g_profile->file, paths, error))
        PYIMPORT_LOG(LogLevel::info, "%s; the profile is not updated", error.c_str());
}

const char* getenv_raw(const char* name) {
    return getenv(name);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Rank 0 builds the image; the status travels first so that every rank
// learns of a failure from the same broadcast and nobody waits for data.
bool share_snapshot(Transport& transport, const Config& config, SharedImage& shared) {
    std::string error;
    std::vector<char> image;
    std::vector<char> status(1, 1);
    if (transport.rank() == 0) {
        BuildOptions options;
        options.prefixes = config.prefixes.empty() ? default_prefixes() : config.prefixes;
        options.prefixes_required = !config.prefixes.empty();
        options.content_suffixes = config.content_suffixes;
        options.stat_suffixes = config.stat_suffixes;
        options.exclude = config.exclude;
        options.max_bytes = config.max_bytes;
        options.cache_tag = python_cache_tag();
        options.libraries = config.libraries;
        uint32_t libraries_over_budget = 0;
        options.libraries_over_budget = &libraries_over_budget;
        load_profile(config, options);
        for (const std::string& prefix : options.prefixes)
            PYIMPORT_LOG(LogLevel::debug, "prefix %s", prefix.c_str());
        auto built = std::chrono::steady_clock::now();
        bool ok = build_snapshot(options, image, error);
        PYIMPORT_LOG(LogLevel::info, "built the snapshot (%zu bytes) in %.3f s", image.size(),
                     seconds_since(built));
        if (ok && libraries_over_budget > 0)
            PYIMPORT_LOG(LogLevel::info,
                         "%u libraries past PYIMPORT_MAX_BYTES are loaded from the filesystem",
                         libraries_over_budget);
        if (!ok) {
            status.assign(error.begin(), error.end());
            status.insert(status.begin(), 0);
            image.clear();
        }
    }
    if (!transport.broadcast(status, error)) {
        log_error("%s; running uncached", error.c_str());
        return false;
    }
    if (status.empty() || status[0] == 0) {
        if (transport.rank() == 0)
            log_error("%.*s", static_cast<int>(status.size() - 1), &status[1]);
        return false;
    }
    auto sent = std::chrono::steady_clock::now();
    if (!transport.share_image(image, shared, error)) {
        log_error("%s; running uncached", error.c_str());
        return false;
    }
    PYIMPORT_LOG(LogLevel::info, "broadcast %zu bytes in %.3f s (%s)", shared.size,
                 seconds_since(sent), shared.node_shared ? "one copy per node" : "private copy");
    return true;
}

// The node's first rank writes the libraries into a private node-local
// directory; then every rank of the node joins it (the last step at start).
// Every rank of the node takes part, also one whose copy of the snapshot
// failed its checksum (`snapshot` nullptr).
std::unique_ptr<NodeMirror> share_node_mirror(Transport& transport, const Config& config,
                                              const Snapshot* snapshot) {
    auto mirror = std::make_unique<NodeMirror>();
    std::string dir, error = "this rank's copy of the snapshot is damaged";
    if (transport.node_rank() == 0) {
        auto written = std::chrono::steady_clock::now();
        if (snapshot && mirror->create(config.node_dir, *snapshot, error)) {
            dir = mirror->job_dir();
            PYIMPORT_LOG(LogLevel::info, "wrote the libraries to %s in %.3f s", dir.c_str(),
                         seconds_since(written));
        } else {
            log_error("cannot keep node-local copies of libraries (PYIMPORT_NODE_DIR): %s; "
                      "libraries are loaded from the filesystem",
                      error.c_str());
        }
    }
    if (!transport.node_broadcast(dir, error)) {
        log_error("%s; libraries are loaded from the filesystem", error.c_str());
        mirror->leave();
        return nullptr;
    }
    if (dir.empty()) return nullptr;
    bool joined = transport.node_rank() == 0 || mirror->join(dir, error);
    if (!joined) log_error("%s; libraries are loaded from the filesystem", error.c_str());
    // No rank may leave (and so perhaps remove the directory) before every
    // rank of the node has joined.
    transport.node_barrier();
    return joined ? std::move(mirror) : nullptr;
}

struct Startup {
    std::mutex mutex;
    std::condition_variable finished;
    bool done = false;
    bool shared = false;
    bool gave_up = false; // the constructor stopped waiting
    Config config;
    std::unique_ptr<Transport> transport;
    SharedImage image;
    Snapshot snapshot; // attached to `image` (checksum verified) when `attached`
    bool attached = false;
    std::unique_ptr<NodeMirror> mirror;
};

void run_start_up_collective(Startup* startup) {
    t_inside_shim = 1; // this thread's libc calls are the shim's own
    std::string error;
    Transport* transport = startup->transport.get();
    bool shared = false;
    if (transport->connect(error)) {
        set_log_rank(transport->rank());
        shared = share_snapshot(*transport, startup->config, startup->image);
        bool attached = false;
        if (shared) {
            attached = startup->snapshot.attach(startup->image.data, startup->image.size, error);
            if (!attached) log_error("%s; running uncached", error.c_str());
        }
        std::unique_ptr<NodeMirror> mirror;
        if (shared && startup->config.libraries) {
            try {
                mirror = share_node_mirror(*transport, startup->config,
                                           attached ? &startup->snapshot : nullptr);
            } catch (...) {
                log_error("unexpected failure while copying libraries to the node; libraries "
                          "are loaded from the filesystem");
            }
        }
        std::lock_guard lock(startup->mutex);
        startup->attached = attached;
        // If the constructor stopped waiting, nobody will use it: leave now.
        if (!startup->gave_up) startup->mirror = std::move(mirror);
        mirror.reset();
        // Published even if the waiting thread gave up: the session must be
        // ended at exit, and every rank that completed the broadcast takes
        // part in the exit summary.
        g_ranks = transport->size();
        g_gather_stats = shared && startup->config.stats;
        g_transport.store(startup->transport.release(), std::memory_order_release);
    } else {
        log_error("%s; running uncached", error.c_str());
    }
    std::lock_guard lock(startup->mutex);
    startup->shared = shared;
    startup->done = true;
    startup->finished.notify_all();
}

void activate() {
    std::string why_not;
    if (!launched_as_rank(why_not)) return;
    bool any_program = false;
    if (const char* v = getenv("PYIMPORT_ANY_PROGRAM")) parse_bool(v, any_program);
    if (!any_program && !is_python()) return;

    Config config;
    std::string error;
    bool config_ok = parse_config(getenv_raw, config, error);
    if (config.disable) return;
    set_log_level(config.log);
    if (!config_ok) {
        log_error("%s", error.c_str());
        return;
    }
    // Mark before anything can start a child: descendants stay inert.
    char pid[32];
    std::snprintf(pid, sizeof pid, "%d", static_cast<int>(getpid()));
    setenv(kActiveMarker, pid, 1);

    auto start = std::chrono::steady_clock::now();
    std::unique_ptr<Transport> transport = open_mpi_transport(config.mpi_library, error);
    if (!transport) {
        log_error("%s; running uncached", error.c_str());
        return;
    }
    g_active_pid = getpid();

    // The collective step runs in a thread so that a job in which some ranks
    // never join (they did not activate) cannot hang: past the timeout this
    // rank runs uncached. The state is never freed: the thread may outlive
    // the wait.
    auto* startup = new Startup;
    startup->config = config;
    startup->transport = std::move(transport);
    std::thread(run_start_up_collective, startup).detach();
    std::unique_lock lock(startup->mutex);
    if (!startup->finished.wait_for(lock, std::chrono::seconds(config.timeout),
                                    [&] { return startup->done; })) {
        startup->gave_up = true;
        log_error("the start-up broadcast did not complete within PYIMPORT_TIMEOUT=%d s "
                  "(do all ranks of the job run Python with the same PYIMPORT_ settings?); "
                  "running uncached",
                  config.timeout);
        return;
    }
    if (!startup->shared || !startup->attached) return;
    SharedImage image = std::move(startup->image);
    Snapshot snapshot = startup->snapshot;
    std::unique_ptr<NodeMirror> mirror = std::move(startup->mirror);
    lock.unlock();
    g_broadcast_seconds = seconds_since(start);

    if (snapshot.header().groups_hash != credentials_hash()) {
        PYIMPORT_LOG(LogLevel::info, "credentials differ from rank 0's; running uncached");
        return;
    }
    auto* core = new Core(config, std::move(image), snapshot);
    if (g_profile) core->tree().record_use(true); // rank 0 keeps a profile
    if (mirror) core->set_libraries(std::make_unique<Libraries>(core->tree(), std::move(mirror)));
    PYIMPORT_LOG(LogLevel::info, "serving %u entries, %zu bytes, from %u prefixes",
                 snapshot.entry_count(), core->tree().snapshot().size(), snapshot.root_count());
    g_core.store(core, std::memory_order_release);
}

void print_summary(Core* core, std::vector<uint64_t>& counts, std::vector<std::string>& tops) {
    const Snapshot& s = core->tree().snapshot();
    log_line("snapshot of %u prefixes: %u entries, %.1f MiB, shared with %d ranks in %.3f s",
             s.root_count(), s.entry_count(), s.size() / 1048576.0, g_ranks, g_broadcast_seconds);
    const int kinds = static_cast<int>(CallKind::count);
    uint64_t served = 0, forwarded = 0;
    std::string by_kind;
    for (int k = 0; k < kinds; ++k) {
        served += counts[k];
        forwarded += counts[kinds + k];
        char part[96];
        std::snprintf(part, sizeof part, " %s %" PRIu64 "/%" PRIu64,
                      call_kind_name(static_cast<CallKind>(k)), counts[k], counts[kinds + k]);
        by_kind += part;
    }
    log_line("all ranks: %" PRIu64 " calls served, %" PRIu64 " forwarded (served/forwarded:%s)",
             served, forwarded, by_kind.c_str());
    // Every rank sent "count\tpath\tcaller" lines; merge by path.
    struct Row {
        uint64_t count;
        std::string caller;
    };
    std::unordered_map<std::string, Row> rows;
    for (const std::string& text : tops) {
        size_t pos = 0;
        while (pos < text.size()) {
            size_t end = text.find('\n', pos);
            if (end == std::string::npos) end = text.size();
            std::string line = text.substr(pos, end - pos);
            pos = end + 1;
            size_t t1 = line.find('\t'), t2 = line.find('\t', t1 + 1);
            if (t1 == std::string::npos || t2 == std::string::npos) continue;
            Row& r = rows[line.substr(t1 + 1, t2 - t1 - 1)];
            r.count += std::strtoull(line.c_str(), nullptr, 10);
            if (r.caller.empty()) r.caller = line.substr(t2 + 1);
        }
    }
    std::vector<std::pair<std::string, Row>> sorted(rows.begin(), rows.end());
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
        return a.second.count != b.second.count ? a.second.count > b.second.count
                                                : a.first < b.first;
    });
    if (!sorted.empty()) log_line("most forwarded paths (count, path, asked by):");
    for (size_t i = 0; i < sorted.size() && i < 10; ++i)
        log_line("  %8" PRIu64 "  %s  %s", sorted[i].second.count, sorted[i].first.c_str(),
                 sorted[i].second.caller.c_str());
}

} // namespace

Core* inherited_core() {
    return g_core.load(std::memory_order_acquire);
}

Core* current_core() {
    Core* core = g_core.load(std::memory_order_acquire);
    if (!core) return nullptr;
    // getpid is a system call (glibc caches nothing since 2.25): a fork or
    // vfork child sees its own pid and goes inert.
    return getpid() == g_active_pid ? core : nullptr;
}

void shutdown_at_exit() {
    Transport* transport = g_transport.load(std::memory_order_acquire);
    if (!transport || getpid() != g_active_pid) return;
    if (g_shut_down.exchange(true)) return;
    t_inside_shim = 1;
    Core* core = g_core.load(std::memory_order_acquire);
    // Every rank that received the snapshot takes part, served or not (a rank
    // that rejected it contributes zeros), so the collective always matches.
    if (g_gather_stats) {
        const int kinds = static_cast<int>(CallKind::count);
        std::vector<uint64_t> values(2 * kinds);
        std::string text;
        if (core) {
            CallCounts c = core->stats().counts();
            for (int k = 0; k < kinds; ++k) {
                values[k] = c.served[k];
                values[kinds + k] = c.forwarded[k];
            }
            for (const auto& r : core->stats().top_forwarded(10))
                text += std::to_string(r.count) + "\t" + r.path + "\t" + r.caller + "\n";
        }
        std::vector<std::string> texts;
        transport->gather_at_exit(values, text, texts);
        if (transport->rank() == 0 && core) print_summary(core, values, texts);
    }
    if (core && transport->rank() == 0) save_profile(*core);
    if (core && core->libraries()) core->libraries()->close();
    transport->finish();
    t_inside_shim = 0;
}

} // namespace pyimport

__attribute__((constructor)) static void pyimport_start() {
    using namespace pyimport;
    int saved = errno;
    t_inside_shim = 1;
    real::resolve_all();
    try {
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
