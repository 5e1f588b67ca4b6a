#include "startup/protocol.hpp"

#include <algorithm>

#include "base/log.hpp"
#include "base/text.hpp"
#include "image/walk.hpp"
#include "loader/audit_link.hpp"
#include "loader/search.hpp"
#include "serve/stats.hpp"
#include "startup/image_sharing.hpp"
#include "startup/local_filesystems.hpp"
#include "startup/node_layout.hpp"
#include "startup/runtime.hpp"

#include <chrono>
#include <cstring>
#include <memory>
#include <thread>

namespace pyimport {

// Declared in runtime.hpp; defined here so that the core (and its unit
// tests) carries it: the start-up thread sets it too.
thread_local int t_inside_shim __attribute__((tls_model("initial-exec"))) = 0;

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// A size as PYIMPORT_MAX_BYTES takes it: 64K, 20M, 1G, or bytes.
std::string size_text(uint64_t bytes) {
    for (auto [shift, suffix] : {std::pair{30, "G"}, {20, "M"}, {10, "K"}})
        if (bytes > 0 && bytes % (uint64_t{1} << shift) == 0)
            return std::to_string(bytes >> shift) + suffix;
    return std::to_string(bytes);
}

// Rank 0, at start: the program's profile, or none (walk everything).
std::unique_ptr<ProgramProfile> load_profile(const WalkInputs& inputs,
                                             const std::vector<std::string>& prefixes) {
    const std::string& dir = inputs.profile_dir;
    if (dir.empty()) return nullptr;
    if (dir[0] != '/') {
        log_error("PYIMPORT_PROFILE=%s is not an absolute directory; not using a profile",
                  dir.c_str());
        return nullptr;
    }
    auto profile = std::make_unique<ProgramProfile>();
    profile->file = profile_file(dir, inputs.executable, inputs.program, prefixes);
    std::string error;
    if (!read_profile(profile->file, profile->paths, error)) {
        log_error("%s; ignoring it (the next job rewrites it)", error.c_str());
        profile->paths.clear();
        return profile;
    }
    if (!error.empty()) PYIMPORT_LOG(LogLevel::info, "%s; walking every prefix", error.c_str());
    PYIMPORT_LOG(LogLevel::info, "profile %s: %zu paths", profile->file.c_str(),
                 profile->paths.size());
    return profile;
}

// Rank 0: the image, or false with the reason to tell every rank.
bool build_image(const Config& config, const WalkInputs& inputs, RankStart& out,
                 std::vector<char>& image, std::string& error) {
    BuildOptions options = walk_options(config, inputs);
    if (config.libraries && audit_interface()) {
        // What the loader searches outside the prefixes for their libraries:
        // only the audit library's searches use it.
        options.search_dirs = [](std::string_view path, const char* data, size_t size,
                                 std::vector<std::string>& dirs) {
            library_search_dirs(path, data, size, PYIMPORT_LOADER_LIB, dirs);
        };
        auto loaded = std::make_shared<std::vector<FileId>>(loaded_library_files());
        options.loaded = [loaded](const StatRecord& st) {
            FileId id{st.dev_major, st.dev_minor, st.ino};
            return std::find(loaded->begin(), loaded->end(), id) != loaded->end();
        };
        if (inputs.library_path)
            options.library_path = library_path_dirs(inputs.library_path->c_str(),
                                                     inputs.executable, PYIMPORT_LOADER_LIB);
    }
    options.not_cached = &out.not_cached;
    out.profile = load_profile(inputs, options.prefixes);
    if (out.profile && !out.profile->paths.empty()) options.profile = &out.profile->paths;
    size_t learned = out.profile ? add_learned_paths(out.profile->paths, options) : 0;
    for (size_t i = 0; i < options.prefixes.size(); ++i)
        PYIMPORT_LOG(LogLevel::debug, "prefix %s (%s)", options.prefixes[i].c_str(),
                     config.prefixes.empty() && i < inputs.prefix_reasons.size()
                         ? inputs.prefix_reasons[i].c_str()
                         : "PYIMPORT_PREFIX");
    if (!inputs.script_directory.empty())
        PYIMPORT_LOG(LogLevel::debug,
                     "script directory %s (sys.path[0]): modules served, data files, new "
                     "names and changed listings from the filesystem",
                     inputs.script_directory.c_str());
    PYIMPORT_LOG(LogLevel::debug,
                 "%zu single paths of the interpreter's start-up, %zu learned by earlier jobs",
                 inputs.probes.size(), learned);
    auto started = std::chrono::steady_clock::now();
    bool ok = build_snapshot(options, image, error);
    out.facts.walk_seconds = seconds_since(started);
    PYIMPORT_LOG(LogLevel::info, "built the snapshot (%zu bytes) in %.3f s", image.size(),
                 out.facts.walk_seconds);
    const NotCached& past = out.not_cached;
    if (ok && past.files > 0)
        log_error("%u files (%.1f MiB, %u of them libraries) did not fit in "
                  "PYIMPORT_MAX_BYTES=%s: read from the filesystem",
                  past.files, past.bytes / 1048576.0, past.libraries,
                  size_text(config.max_bytes).c_str());
    return ok;
}

// A node leader's copy of rank 0's image: whole, as rank 0 made it.
bool check_image(const char* data, uint64_t length, std::string& error) {
    Snapshot snapshot;
    return snapshot.attach(data, length, error);
}

// Steps 2 and 3: rank 0's status, then the image. The status is a 1, the
// image's size and whether the exit gathers statistics (rank 0's settings
// decide, so that every rank takes the same collectives at exit), a 0 and
// rank 0's reason, or a 2: the trees are node-local, every rank passes
// through (rank 0 alone looks: on a shared filesystem the others make no
// request for it).
constexpr char kStatusServe = 1, kStatusFailed = 0, kStatusLocal = 2;
bool share_snapshot(Transport& transport, const Config& config, const FindWalkInputs& inputs,
                    RankStart& out, PreparedImage* prepared) {
    std::string error;
    std::vector<char> image;
    constexpr size_t kStatusSize = 1 + sizeof(uint64_t) + 1;
    std::vector<char> status(kStatusSize, kStatusServe);
    if (transport.rank() == 0) {
        PreparedImage now;
        if (!prepared) prepare_image(config, inputs, now);
        PreparedImage& made = prepared ? *prepared : now;
        bool built = made.built;
        image.swap(made.image);
        error = made.error;
        out.profile = std::move(made.walked.profile);
        out.not_cached = made.walked.not_cached;
        out.facts.walk_seconds = made.walked.facts.walk_seconds;
        if (made.local) {
            status.assign(1, kStatusLocal);
            report_local_trees(config, true, made.local_kinds);
        } else if (built) {
            uint64_t length = image.size();
            std::memcpy(status.data() + 1, &length, sizeof length);
            status[kStatusSize - 1] = config.stats || !config.stats_file.empty();
        } else {
            status.assign(error.begin(), error.end());
            status.insert(status.begin(), kStatusFailed);
            image.clear();
        }
    }
    auto waiting = std::chrono::steady_clock::now();
    bool status_received = transport.broadcast(status, error);
    out.facts.status_seconds = seconds_since(waiting);
    if (!status_received) {
        log_error("%s; running uncached", error.c_str());
        return false;
    }
    if (status.size() == 1 && status[0] == kStatusLocal) {
        if (transport.rank() != 0)
            PYIMPORT_LOG(LogLevel::info, "rank 0 found the trees node-local: running uncached");
        return false;
    }
    if (status.empty() || status[0] == kStatusFailed) {
        if (transport.rank() == 0 && !status.empty())
            log_error("%.*s", static_cast<int>(status.size() - 1), &status[1]);
        return false;
    }
    if (status.size() != kStatusSize || status[0] != kStatusServe) {
        log_error("the start-up status from rank 0 is malformed; running uncached");
        return false;
    }
    uint64_t length = 0;
    std::memcpy(&length, status.data() + 1, sizeof length);
    out.gather_stats = status[kStatusSize - 1] != 0;
    auto sent = std::chrono::steady_clock::now();
    if (!share_image(transport, node_identity(config.node_dir), image, length, check_image,
                     out.image, error)) {
        log_error("%s; running uncached", error.c_str());
        return false;
    }
    out.facts.broadcast_seconds = seconds_since(sent);
    out.facts.node_leader = transport.node_rank() == 0;
    out.facts.image_bytes_held =
        !out.image.node_shared || out.facts.node_leader ? out.image.size : 0;
    PYIMPORT_LOG(LogLevel::info, "broadcast %zu bytes in %.3f s (%s)", out.image.size,
                 out.facts.broadcast_seconds,
                 out.image.node_shared ? "one copy per node" : "private copy");
    return true;
}

// Step 4. Every rank of the node takes part, also one whose copy of the
// image failed its checks (`snapshot` nullptr).
std::unique_ptr<NodeMirror> share_node_mirror(Transport& transport, const Config& config,
                                              const Snapshot* snapshot, double& copy_seconds) {
    auto mirror = std::make_unique<NodeMirror>();
    std::string dir, error = "this rank's copy of the snapshot is damaged";
    if (transport.node_rank() == 0) {
        auto written = std::chrono::steady_clock::now();
        if (snapshot && mirror->create(config.node_dir, *snapshot, error)) {
            dir = mirror->job_dir();
            copy_seconds = seconds_since(written);
            PYIMPORT_LOG(LogLevel::info, "wrote the libraries to %s in %.3f s", dir.c_str(),
                         copy_seconds);
        } else {
            log_error("cannot keep node-local copies of libraries (PYIMPORT_NODE_DIR): %s; "
                      "libraries are loaded from the filesystem",
                      error.c_str());
        }
    }
    if (!node_broadcast_text(transport, dir, error)) {
        log_error("%s; libraries are loaded from the filesystem", error.c_str());
        mirror->leave();
        return nullptr;
    }
    if (dir.empty()) return nullptr;
    bool joined = transport.node_rank() == 0 || mirror->join(dir, error);
    if (!joined) log_error("%s; libraries are loaded from the filesystem", error.c_str());
    std::string barrier_error;
    if (!transport.node_barrier(barrier_error)) {
        log_error("%s; libraries are loaded from the filesystem", barrier_error.c_str());
        mirror->leave();
        return nullptr;
    }
    if (!joined) return nullptr;
    return mirror;
}

void run_in_thread(StartupRun* run) {
    t_inside_shim = 1; // this thread's libc calls are the shim's own
    std::string error;
    RankStart result;
    // The launcher's rank 0 walks while MPI initialises (the walk needs no
    // MPI); should MPI number it otherwise, the walk is dropped.
    PreparedImage prepared;
    std::thread walker;
    if (run->launcher_rank == 0) {
        set_log_rank(0);
        try {
            // The inputs (the environment, the command line) are read here:
            // MPI's start in this thread may set variables meanwhile.
            auto inputs = std::make_shared<WalkInputs>(run->inputs(run->config));
            walker = std::thread([run, &prepared, inputs] {
                t_inside_shim = 1;
                prepare_image(
                    run->config, [inputs](const Config&) { return *inputs; }, prepared);
            });
        } catch (...) {
            // No thread: rank 0 walks after MPI's start, as it would.
        }
    }
    auto connecting = std::chrono::steady_clock::now();
    try {
        result.connected = run->transport->connect(error);
    } catch (...) {
        result.connected = false;
        error = "unexpected failure while starting MPI";
    }
    result.facts.mpi_init_seconds = seconds_since(connecting);
    bool walker_started = walker.joinable();
    if (walker_started) walker.join();
    bool walked_ahead = walker_started && result.connected && run->transport->rank() == 0;
    if (result.connected && run->launcher_ranks > 1 && run->transport->size() == 1) {
        if (run->launcher_rank <= 0)
            log_error("the launcher started %d ranks but the MPI library sees a world of 1 (it "
                      "does not speak the launcher's process manager interface: e.g. MPICH "
                      "under srun --mpi=pmix; use --mpi=pmi2, or an MPI built for it, or "
                      "PYIMPORT_MPI_LIBRARY); running uncached",
                      run->launcher_ranks);
    } else if (result.connected) {
        set_log_rank(run->transport->rank());
        try {
            start_rank(*run->transport, run->config, run->inputs, result,
                       walked_ahead ? &prepared : nullptr);
        } catch (...) {
            log_error("unexpected failure in the start-up step; running uncached");
            result.shared = result.attached = false;
        }
    } else {
        log_error("%s; running uncached", error.c_str());
    }
    std::lock_guard lock(run->mutex);
    // If the waiter stopped waiting, nobody will use the mirror: leave now.
    if (run->gave_up) result.mirror.reset();
    run->result = std::move(result);
    if (run->completed) run->completed(*run, run->result.connected);
    run->done = true;
    run->done_at = std::chrono::steady_clock::now();
    run->finished.notify_all();
}

} // namespace

bool node_broadcast_text(Transport& transport, std::string& text, std::string& error) {
    uint64_t length = text.size();
    if (!transport.node_broadcast(&length, sizeof length, error)) return false;
    text.resize(length);
    return transport.node_broadcast(text.data(), length, error);
}

void report_local_trees(const Config& config, bool speaks, const std::string& kinds) {
    // Asked for statistics, the job is told why there are none (once).
    if ((config.stats || !config.stats_file.empty()) && speaks)
        log_error("the trees are on node-local filesystems (%s): running uncached, no "
                  "statistics (PYIMPORT_SERVE_LOCAL=1 serves them)",
                  kinds.c_str());
    else
        PYIMPORT_LOG(LogLevel::info,
                     "the trees are on node-local filesystems (%s): running uncached",
                     kinds.c_str());
}

void prepare_image(const Config& config, const FindWalkInputs& inputs, PreparedImage& prepared) {
    try {
        WalkInputs walk_inputs = inputs(config);
        if (!config.serve_local) {
            std::vector<std::string> trees = walked_trees(walk_options(config, walk_inputs));
            if (on_local_filesystems(trees, prepared.local_kinds)) {
                prepared.local = true;
                return;
            }
        }
        prepared.built =
            build_image(config, walk_inputs, prepared.walked, prepared.image, prepared.error);
    } catch (...) {
        // Still a status: the other ranks wait for one.
        prepared.built = false;
        try {
            prepared.error = "unexpected failure while preparing the snapshot; running uncached";
        } catch (...) {
            prepared.error.clear(); // (no memory for the reason)
        }
    }
}

void start_rank(Transport& transport, const Config& config, const FindWalkInputs& inputs,
                RankStart& out, PreparedImage* prepared) {
    out.shared = share_snapshot(transport, config, inputs, out, prepared);
    out.attached = false;
    if (out.shared) {
        std::string error;
        out.attached =
            out.snapshot.attach(out.image.data, out.image.size, error, out.image.checked);
        if (!out.attached) log_error("%s; running uncached", error.c_str());
    }
    if (out.shared && config.libraries) {
        try {
            auto started = std::chrono::steady_clock::now();
            out.mirror = share_node_mirror(
                transport, config, out.attached ? &out.snapshot : nullptr, out.facts.copy_seconds);
            out.facts.node_seconds = seconds_since(started);
            if (out.mirror) out.facts.library_bytes = out.mirror->written_bytes();
        } catch (...) {
            log_error("unexpected failure while copying libraries to the node; libraries are "
                      "loaded from the filesystem");
        }
    }
}

bool run_start_up(StartupRun& run, int timeout_seconds) {
    std::thread(run_in_thread, &run).detach();
    std::unique_lock lock(run.mutex);
    if (run.finished.wait_for(lock, std::chrono::seconds(timeout_seconds),
                              [&] { return run.done; }))
        return true;
    run.gave_up = true;
    log_error("the start-up broadcast did not complete within PYIMPORT_TIMEOUT=%d s "
              "(do all ranks of the job run Python with the same PYIMPORT_ settings?); "
              "running uncached",
              timeout_seconds);
    return false;
}

namespace {
// Rank 0's part of the statistics; the ranks' parts are added from the gather.
JobSummary job_summary(const RankExit& rank) {
    const Snapshot& s = rank.core->tree().snapshot();
    JobSummary summary;
    summary.prefixes = s.root_count();
    summary.entries = s.entry_count();
    summary.image_bytes = s.size();
    summary.ranks = rank.ranks;
    summary.start_seconds = rank.start_seconds;
    summary.not_cached_files = rank.not_cached.files;
    summary.not_cached_bytes = rank.not_cached.bytes;
    summary.job_id = rank.job_id;
    summary.host = rank.host;
    summary.executable = rank.executable;
    summary.start = rank.facts;
    for (uint32_t i = 0; i < s.root_count(); ++i)
        if (S_ISDIR(s.entry(i).st.mode) && !(s.entry(i).flags & (kAbsent | kPartial)))
            summary.roots.emplace_back(s.name(i));
    return summary;
}
} // namespace

std::vector<std::string> exit_rank(Transport& transport, const RankExit& rank) {
    std::vector<std::string> lines;
    auto started = std::chrono::steady_clock::now();
    if (rank.gather_stats) {
        const Stats* stats = rank.core ? &rank.core->stats() : nullptr;
        std::vector<uint64_t> values = exit_values(stats, rank.facts);
        std::vector<std::string> texts;
        bool gathered = transport.gather_at_exit(values, exit_text(stats), texts);
        if (gathered && transport.rank() == 0 && rank.core) {
            JobSummary summary = job_summary(rank);
            add_exit_values(summary, values, texts);
            if (rank.print_stats) lines = summary_lines(summary);
            std::string error;
            if (!rank.stats_file.empty() &&
                !write_file_atomically(rank.stats_file, summary_json(summary), error))
                log_error("cannot write the job's statistics (PYIMPORT_STATS_FILE): %s",
                          error.c_str());
        }
    }
    double statistics_seconds = seconds_since(started);
    auto profiled = std::chrono::steady_clock::now();
    if (rank.core && rank.profile && transport.rank() == 0) {
        Tree& tree = rank.core->tree();
        PathSet used = tree.used_paths();
        tree.record_use(false); // asking the snapshot below is not a use
        auto still_there = [&](const std::string& path) {
            return tree.resolve(Position{}, path, false).kind != Resolution::Failed;
        };
        std::string error;
        if (!update_profile(*rank.profile, std::move(used), still_there, error))
            PYIMPORT_LOG(LogLevel::info, "%s; the profile is not updated", error.c_str());
    }
    double profile_seconds = seconds_since(profiled);
    auto closing = std::chrono::steady_clock::now();
    if (rank.libraries) rank.libraries->close();
    double node_seconds = seconds_since(closing);
    auto finishing = std::chrono::steady_clock::now();
    transport.finish();
    PYIMPORT_LOG(LogLevel::info,
                 "exit phases: statistics %.3f s, profile %.3f s, node directory %.3f s, MPI's "
                 "end %.3f s",
                 statistics_seconds, profile_seconds, node_seconds, seconds_since(finishing));
    return lines;
}

BuildOptions walk_options(const Config& config, const WalkInputs& inputs) {
    BuildOptions options;
    options.prefixes = config.prefixes.empty() ? inputs.default_prefixes : config.prefixes;
    options.prefixes_required = !config.prefixes.empty();
    options.content_suffixes = config.content_suffixes;
    options.stat_suffixes = config.stat_suffixes;
    options.exclude = config.exclude;
    options.max_bytes = config.max_bytes;
    options.cache_tag = inputs.cache_tag;
    options.libraries = config.libraries;
    options.probes = inputs.probes;
    if (!inputs.script_directory.empty()) options.live_roots.push_back(inputs.script_directory);
    return options;
}

std::vector<std::string> walked_trees(const BuildOptions& options) {
    std::vector<std::string> trees = options.prefixes;
    trees.insert(trees.end(), options.live_roots.begin(), options.live_roots.end());
    return trees;
}

size_t add_learned_paths(const PathSet& profile, BuildOptions& options) {
    size_t computed = options.probes.size();
    size_t script_roots = options.live_roots.size();
    size_t learned = 0;
    for (const std::string& path : profile) {
        // Inside a prefix the walk's; inside the script's directory its own.
        bool inside = std::any_of(options.prefixes.begin(), options.prefixes.end(),
                                  [&](const std::string& p) { return path_within(path, p); }) ||
                      std::any_of(options.live_roots.begin(),
                                  options.live_roots.begin() + static_cast<ptrdiff_t>(script_roots),
                                  [&](const std::string& p) { return path_within(path, p); });
        if (inside || !learnable_outside(path, true)) continue;
        if (import_file_name(path)) {
            if (options.probes.size() - computed >= kMaxLearnedProbes) continue;
            ++learned;
            options.probes.push_back({path, true});
            continue;
        }
        ++learned;
        // A directory holding a prefix or one of the interpreter's own probes
        // (/usr/lib, a venv's bin/) stays partial: as a live root it would
        // forward the absent names the probes answer.
        bool holds_known =
            std::any_of(options.prefixes.begin(), options.prefixes.end(),
                        [&](const std::string& p) { return path_within(p, path); }) ||
            std::any_of(options.probes.begin(), options.probes.begin() + computed,
                        [&](const BuildOptions::Probe& p) { return path_within(p.path, path); });
        if (!holds_known && options.live_roots.size() < kMaxLearnedDirectories)
            options.live_roots.push_back(path);
    }
    return learned;
}

} // namespace pyimport
