// The start-up step and the exit (startup/protocol.hpp) with N ranks as
// threads over the fake transport: one image per node, failures that reach
// every rank without a hang and leave nothing behind, private copies, damaged
// transfers, the node-local mirror, the timeout, and the exit's summary and
// profile.
#include "base/real.hpp"
#include "fake_transport.hpp"
#include "fixture.hpp"
#include "startup/image_sharing.hpp"
#include "startup/node_layout.hpp"
#include "startup/protocol.hpp"

#include <algorithm>
#include <dirent.h>
#include <dlfcn.h>
#include <fstream>
#include <set>
#include <sstream>
#include <sys/wait.h>
#include <thread>

using namespace pyimport;
using pyimport::testing::FakeJob;

namespace {

Config fixture_config(const Fixture& fx) {
    Config config;
    config.prefixes = {fx.root};
    config.libraries = false;
    config.serve_local = true; // the fixture is on this machine's local disk
    return config;
}

WalkInputs no_inputs(const Config&) {
    return {};
}

// Runs `body(rank, transport)` on every rank of `job`, one thread each.
template <typename Body> void run_ranks(FakeJob& job, Body body) {
    std::vector<std::unique_ptr<Transport>> transports;
    for (int r = 0; r < job.size(); ++r)
        transports.push_back(job.transport(r));
    std::vector<std::thread> threads;
    for (int r = 0; r < job.size(); ++r)
        threads.emplace_back([&, r] { body(r, *transports[r]); });
    for (std::thread& t : threads)
        t.join();
}

// Every rank connects and runs the start-up step.
std::vector<RankStart> start_all(FakeJob& job, const Config& config) {
    std::vector<RankStart> results(job.size());
    run_ranks(job, [&](int r, Transport& t) {
        std::string error;
        results[r].connected = t.connect(error);
        if (results[r].connected) start_rank(t, config, no_inputs, results[r]);
    });
    return results;
}

size_t open_descriptors() {
    size_t n = 0;
    DIR* d = opendir("/proc/self/fd");
    while (dirent* e = readdir(d))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

// The inodes of the memory files holding an image that this process maps.
std::set<std::string> image_files_mapped() {
    std::ifstream maps("/proc/self/maps");
    std::set<std::string> inodes;
    for (std::string line; std::getline(maps, line);) {
        if (line.find("memfd:pyimport-snapshot") == std::string::npos) continue;
        std::istringstream fields(line);
        std::string range, perms, offset, device, inode;
        fields >> range >> perms >> offset >> device >> inode;
        inodes.insert(inode);
    }
    return inodes;
}

std::vector<char> built_image(const Config& config) {
    BuildOptions options;
    options.prefixes = config.prefixes;
    options.max_bytes = config.max_bytes;
    std::vector<char> image;
    std::string error;
    cr_assert(build_snapshot(options, image, error), "%s", error.c_str());
    return image;
}

} // namespace

Test(startup, one_image_per_node_identical_on_every_rank) {
    Fixture fx;
    Config config = fixture_config(fx);
    FakeJob job({0, 0, 1, 1, 1});
    std::vector<RankStart> results = start_all(job, config);
    std::vector<char> expected = built_image(config);
    for (size_t r = 0; r < results.size(); ++r) {
        cr_assert(results[r].shared && results[r].attached, "rank %zu", r);
        cr_expect(results[r].image.node_shared, "rank %zu maps its node's copy", r);
        cr_expect(results[r].snapshot.entry_count() > 5);
        const Header& h = results[r].snapshot.header();
        cr_expect_eq(h.entry_count, reinterpret_cast<const Header*>(expected.data())->entry_count);
    }
    // Two nodes: two memory files, each mapped by its node's ranks.
    cr_expect_eq(image_files_mapped().size(), 2u);
    // Every copy holds the same bytes.
    for (size_t r = 1; r < results.size(); ++r)
        cr_expect(
            results[r].image.size == results[0].image.size &&
            std::memcmp(results[r].image.data, results[0].image.data, results[0].image.size) == 0);
}

Test(startup, a_failed_walk_reaches_every_rank) {
    Config config;
    config.prefixes = {"/nonexistent/pyimport-unit-prefix"};
    config.libraries = false;
    FakeJob job({0, 0, 1});
    for (const RankStart& r : start_all(job, config))
        cr_expect(r.connected && !r.shared && !r.attached && r.image.data == nullptr);
}

Test(startup, a_failed_transfer_fails_every_rank_and_leaves_nothing) {
    Fixture fx;
    Config config = fixture_config(fx);
    for (const char* call :
         {"broadcast", "split_by_node", "leaders_broadcast", "node_broadcast", "node_all"}) {
        size_t before = open_descriptors();
        {
            FakeJob job({0, 0, 1, 1});
            job.fail(call);
            for (const RankStart& r : start_all(job, config))
                cr_expect(!r.shared && r.image.data == nullptr, "%s", call);
        }
        cr_expect_eq(open_descriptors(), before, "%s leaks a descriptor", call);
        cr_expect(image_files_mapped().empty(), "%s leaves a mapping", call);
    }
}

namespace {
int (*real_open)(const char*, int, ...) = nullptr;
int refuse_proc_open(const char* path, int flags, ...) {
    if (std::strncmp(path, "/proc/", 6) == 0 && std::strstr(path, "/fd/")) {
        errno = EACCES;
        return -1;
    }
    return real_open(path, flags);
}
} // namespace

Test(startup, private_copies_where_a_rank_cannot_map_the_leaders_file) {
    Fixture fx;
    Config config = fixture_config(fx);
    real_open = reinterpret_cast<int (*)(const char*, int, ...)>(dlsym(RTLD_NEXT, "open"));
    real::substitute("open", reinterpret_cast<void*>(&refuse_proc_open));
    FakeJob job({0, 0, 0});
    std::vector<RankStart> results = start_all(job, config);
    real::substitute("open", nullptr);
    for (const RankStart& r : results) {
        cr_expect(r.shared && r.attached);
        cr_expect_not(r.image.node_shared);
    }
    cr_expect_leq(image_files_mapped().size(), 1u, "only the leader maps its memory file");
}

Test(startup, a_damaged_copy_is_rejected_by_its_node_only) {
    Fixture fx;
    Config config = fixture_config(fx);
    FakeJob job({0, 0, 1, 1});
    job.damage_leaders_broadcast(2); // node 1's leader
    std::vector<RankStart> results = start_all(job, config);
    cr_expect(results[0].attached && results[1].attached);
    // Node 1's leader finds its copy damaged before sharing it: neither of
    // node 1's ranks serves from it.
    cr_expect(!results[2].shared && !results[2].attached);
    cr_expect(!results[3].shared && !results[3].attached);
    // Node 0's member trusts its leader's sealed copy; the leader's own
    // copy is rank 0's.
    cr_expect(results[0].image.checked && results[1].image.checked);
}

Test(startup, the_node_mirror_is_shared_by_a_nodes_ranks_and_removed_by_the_last) {
    Fixture fx;
    fx.file("pkg/_ext.so", "not really ELF");
    Config config = fixture_config(fx);
    config.libraries = true;
    char tmpl[] = "/tmp/pyimport-unit-node-XXXXXX";
    config.node_dir = mkdtemp(tmpl);
    std::vector<std::string> dirs;
    {
        FakeJob job({0, 1, 0, 1});
        std::vector<RankStart> results = start_all(job, config);
        for (const RankStart& r : results) {
            cr_assert(r.attached && r.mirror && r.mirror->joined());
            dirs.push_back(r.mirror->job_dir());
        }
        cr_expect_eq(dirs[0], dirs[2]);
        cr_expect_eq(dirs[1], dirs[3]);
        cr_expect_neq(dirs[0], dirs[1]);
        struct stat st {};
        cr_expect_eq(stat((dirs[0] + "/root" + fx.path("pkg/_ext.so")).c_str(), &st), -1,
                     "copies are laid out on demand, not at start");
        cr_expect_eq(stat(dirs[0].c_str(), &st), 0);
    } // every rank leaves
    struct stat st {};
    cr_expect_eq(stat(dirs[0].c_str(), &st), -1);
    cr_expect_eq(stat(dirs[1].c_str(), &st), -1);
    std::string cmd = "rm -rf '" + config.node_dir + "'";
    cr_expect_eq(std::system(cmd.c_str()), 0);
}

namespace {
std::atomic<int> g_completed{0};
void count_completion(StartupRun&, bool connected) {
    if (connected) ++g_completed;
}
} // namespace

Test(startup, a_rank_whose_peers_never_join_gives_up_after_the_timeout) {
    Fixture fx;
    FakeJob job({0, 0});
    // Never freed in production; here it must outlive the detached thread.
    static StartupRun run;
    run.config = fixture_config(fx);
    run.config.libraries = true;
    char tmpl[] = "/tmp/pyimport-unit-node-XXXXXX";
    run.config.node_dir = mkdtemp(tmpl);
    run.inputs = no_inputs;
    run.transport = job.transport(0);
    run.completed = count_completion;
    Transport* transport = run.transport.get();
    cr_assert_not(run_start_up(run, 1), "rank 1 never connected");
    {
        std::lock_guard lock(run.mutex);
        cr_expect(run.gave_up && !run.done);
    }
    // Rank 1 arrives late: rank 0's thread completes alone and still counts
    // as connected (it must take part in the exit), but keeps no mirror.
    std::thread late([&] {
        auto t = job.transport(1);
        std::string error;
        RankStart r;
        if (t->connect(error)) start_rank(*t, run.config, no_inputs, r);
    });
    late.join();
    std::unique_lock lock(run.mutex);
    run.finished.wait(lock, [] { return run.done; });
    cr_expect_eq(g_completed.load(), 1);
    cr_expect(run.result.connected && run.result.attached);
    cr_expect(run.result.mirror == nullptr);
    cr_expect(run.transport == nullptr || run.transport.get() == transport);
    std::string cmd = "rm -rf '" + run.config.node_dir + "'";
    cr_expect_eq(std::system(cmd.c_str()), 0);
}

Test(startup, run_start_up_returns_the_ranks_result_when_all_join) {
    Fixture fx;
    FakeJob job({0, 0});
    static StartupRun runs[2];
    std::thread threads[2];
    bool ok[2] = {};
    for (int r = 0; r < 2; ++r) {
        runs[r].config = fixture_config(fx);
        runs[r].inputs = no_inputs;
        runs[r].transport = job.transport(r);
        threads[r] = std::thread([&, r] { ok[r] = run_start_up(runs[r], 60); });
    }
    for (std::thread& t : threads)
        t.join();
    for (int r = 0; r < 2; ++r) {
        cr_expect(ok[r]);
        std::lock_guard lock(runs[r].mutex);
        cr_expect(runs[r].done && runs[r].result.attached);
    }
}

// MPICH under srun --mpi=pmix: the launcher started 4, MPI sees a world of
// 1. Each rank stays uncached (no walk of its own), connected for the exit.
// (The launcher's rank 0 walks ahead while MPI starts, once for the job.)
Test(startup, ranks_that_cannot_find_each_other_do_not_walk_alone) {
    Fixture fx;
    FakeJob job({0});
    static StartupRun run;
    run.config = fixture_config(fx);
    static int walks = 0;
    run.inputs = [](const Config&) {
        ++walks;
        return WalkInputs{};
    };
    run.transport = job.transport(0);
    run.launcher_ranks = 4;
    run.launcher_rank = 2;
    cr_assert(run_start_up(run, 60));
    std::lock_guard lock(run.mutex);
    cr_expect(run.result.connected);
    cr_expect(!run.result.shared && !run.result.attached);
    cr_expect_eq(walks, 0);
}

// The same launcher saying 1 rank, or not saying: a one-rank job walks.
Test(startup, a_one_rank_job_walks) {
    Fixture fx;
    FakeJob job({0});
    static StartupRun run;
    run.config = fixture_config(fx);
    run.inputs = no_inputs;
    run.transport = job.transport(0);
    run.launcher_ranks = 1;
    cr_assert(run_start_up(run, 60));
    std::lock_guard lock(run.mutex);
    cr_expect(run.result.shared && run.result.attached);
}

// Whether the exit gathers statistics is rank 0's setting, as every rank
// received it: a rank without PYIMPORT_STATS_FILE (Open MPI without -x) must
// not leave rank 0 alone in the gather.
Test(startup, every_rank_gathers_statistics_when_rank_0_asks) {
    Fixture fx;
    for (int asked = 0; asked < 2; ++asked) {
        FakeJob job({0, 0, 1});
        bool gather[3] = {};
        run_ranks(job, [&](int r, Transport& t) {
            Config config = fixture_config(fx);
            if (r == 0 && asked) config.stats_file = fx.path("s.json");
            if (r == 2) config.stats = true; // another rank's wish does not count
            std::string error;
            RankStart start;
            cr_assert(t.connect(error));
            start_rank(t, config, no_inputs, start);
            gather[r] = start.gather_stats;
        });
        for (int r = 0; r < 3; ++r)
            cr_expect_eq(gather[r], asked == 1, "rank %d, rank 0 %s", r,
                         asked ? "asks" : "does not");
    }
}

Test(startup, exit_sums_every_ranks_counts_on_rank_0_and_ends_every_session) {
    Fixture fx;
    Config config = fixture_config(fx);
    config.stats = true;
    FakeJob job({0, 0, 1});
    std::vector<std::string> lines[3];
    run_ranks(job, [&](int r, Transport& t) {
        std::string error;
        RankStart start;
        cr_assert(t.connect(error));
        start_rank(t, config, no_inputs, start);
        cr_assert(start.attached);
        // Rank 2 received the image but does not serve (as a rank whose
        // credentials differ): it contributes zeros.
        std::unique_ptr<Core> core;
        if (r != 2) {
            core = std::make_unique<Core>(config, std::move(start.image), start.snapshot);
            for (int i = 0; i <= r; ++i)
                core->stats().served(CallKind::stat);
            core->stats().forwarded(CallKind::open, "/elsewhere/x.py");
        }
        RankExit exit;
        exit.gather_stats = true;
        exit.print_stats = true;
        exit.stats_file = fx.path("stats-" + std::to_string(r) + ".json");
        exit.core = core.get();
        exit.ranks = t.size();
        exit.facts = start.facts;
        lines[r] = exit_rank(t, exit);
    });
    // Rank 0 alone writes the document, with the job's numbers.
    std::ifstream in(fx.path("stats-0.json"));
    std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    cr_expect(access(fx.path("stats-1.json").c_str(), F_OK) != 0 &&
              access(fx.path("stats-2.json").c_str(), F_OK) != 0);
    for (const char* part :
         {"\"ranks\": 3,", "\"served_ranks\": 2,", "\"nodes\": 2", "\"served\": 3,",
          "\"forwarded\": 2,", "{\"rank\": 1, \"served\": 2, \"forwarded\": 1}",
          "{\"rank\": 2, \"served\": 0, \"forwarded\": 0}"})
        cr_expect(json.find(part) != std::string::npos, "no %s in\n%s", part, json.c_str());
    cr_expect(lines[1].empty() && lines[2].empty());
    cr_assert_geq(lines[0].size(), 4u);
    cr_expect(lines[0][0].find("shared with 3 ranks") != std::string::npos, "%s",
              lines[0][0].c_str());
    cr_expect(lines[0][1].find("all ranks: 3 calls served, 2 forwarded") == 0, "%s",
              lines[0][1].c_str());
    cr_expect(lines[0][3].find("2  /elsewhere/x.py") != std::string::npos, "%s",
              lines[0][3].c_str());
    cr_expect_eq(job.finished(), 3);
}

Test(startup, exit_writes_what_rank_0_used_to_its_profile) {
    Fixture fx;
    Config config = fixture_config(fx);
    FakeJob job({0});
    std::string file = fx.path("profiles/p.profile");
    run_ranks(job, [&](int, Transport& t) {
        std::string error;
        RankStart start;
        cr_assert(t.connect(error));
        start_rank(t, config, no_inputs, start);
        cr_assert(start.attached);
        Core core(config, std::move(start.image), start.snapshot);
        core.tree().record_use(true);
        struct stat st {};
        cr_assert(core.stat_at(AT_FDCWD, fx.path("pkg/mod.py").c_str(), 0, &st).served);
        ProgramProfile profile{file, {fx.path("gone.py")}};
        RankExit exit;
        exit.core = &core;
        exit.profile = &profile;
        exit_rank(t, exit);
    });
    PathSet paths;
    std::string error;
    cr_assert(read_profile(file, paths, error), "%s", error.c_str());
    cr_expect(paths.count(fx.path("pkg/mod.py")));
    cr_expect_not(paths.count(fx.path("gone.py")), "paths shown gone are dropped");
}

// The shim's own idea of a node (startup/node_layout.hpp).
Test(node_layout, ranks_with_one_identity_share_a_node_led_by_the_first) {
    // Ranks 0, 2, 5 on node A; 1, 4 on B; 3 alone on C.
    const std::vector<uint64_t> ids = {0xa, 0xb, 0xa, 0xc, 0xb, 0xa};
    const std::vector<int> leaders = {0, 1, 3};
    const int node_rank[] = {0, 0, 1, 0, 1, 2};
    const std::vector<std::vector<int>> members = {{0, 2, 5}, {1, 4}, {0, 2, 5},
                                                   {3},       {1, 4}, {0, 2, 5}};
    for (int rank = 0; rank < 6; ++rank) {
        NodeLayout layout = node_layout(ids, rank);
        cr_expect(layout.leaders == leaders, "rank %d", rank);
        cr_expect_eq(layout.node_rank, node_rank[rank], "rank %d", rank);
        cr_expect(layout.node_ranks == members[rank], "rank %d", rank);
        cr_expect_eq(layout.leader(), node_rank[rank] == 0);
    }
    NodeLayout alone = node_layout({42}, 0);
    cr_expect(alone.leader() && alone.leaders == std::vector<int>{0} &&
              alone.node_ranks == std::vector<int>{0});
}

Test(node_layout, the_identity_is_the_kernel_the_pid_namespace_and_the_node_directory) {
    Fixture fx;
    const std::string a = fx.path("pkg"), b = fx.path("pkg/sub");
    cr_expect_eq(node_identity(a), node_identity(a));
    // Another directory on the same filesystem is another inode: ranks that
    // name different node directories do not share one.
    cr_expect_neq(node_identity(a), node_identity(b));
    // A private /dev/shm (an emulated node) is another device.
    cr_expect_neq(node_identity("/dev/shm"), node_identity(a));
    // Seen from a child process (same kernel and namespaces), the same.
    int pipe_fds[2];
    cr_assert_eq(pipe(pipe_fds), 0);
    pid_t child = fork();
    if (child == 0) {
        uint64_t id = node_identity(a);
        _exit(write(pipe_fds[1], &id, sizeof id) == sizeof id ? 0 : 1);
    }
    uint64_t from_child = 0;
    cr_assert_eq(read(pipe_fds[0], &from_child, sizeof from_child), (ssize_t)sizeof from_child);
    waitpid(child, nullptr, 0);
    cr_expect_eq(from_child, node_identity(a));
    close(pipe_fds[0]);
    close(pipe_fds[1]);
}

// The launcher's rank 0 walks while MPI starts, and MPI's rank 0 uses that
// walk; a process the launcher numbers 0 that MPI numbers otherwise drops it.
Test(startup, the_launchers_rank_0_walks_while_mpi_starts) {
    Fixture fx;
    static int walks = 0;
    auto counted = [](const Config&) {
        ++walks;
        return WalkInputs{};
    };
    FakeJob job({0, 0});
    static StartupRun runs[2];
    for (int r = 0; r < 2; ++r) {
        runs[r].config = fixture_config(fx);
        runs[r].inputs = counted;
        runs[r].transport = job.transport(r);
        runs[r].launcher_ranks = 2;
        runs[r].launcher_rank = r;
    }
    std::thread other([] { cr_assert(run_start_up(runs[1], 60)); });
    cr_assert(run_start_up(runs[0], 60));
    other.join();
    for (int r = 0; r < 2; ++r) {
        std::lock_guard lock(runs[r].mutex);
        cr_expect(runs[r].result.attached, "rank %d", r);
    }
    cr_expect_eq(walks, 1, "one walk, ahead");
    cr_expect_gt(runs[0].result.facts.walk_seconds, 0.0);
}

// PYIMPORT_SERVE_LOCAL=0 and the fixture on this machine's local disk: rank
// 0 looks, walks nothing, and every rank passes through.
Test(startup, node_local_trees_pass_through_on_every_rank) {
    Fixture fx;
    Config config = fixture_config(fx);
    config.serve_local = false;
    FakeJob job({0, 0, 1});
    std::vector<RankStart> results = start_all(job, config);
    for (size_t r = 0; r < results.size(); ++r) {
        cr_expect(results[r].connected && !results[r].shared && !results[r].attached, "rank %zu",
                  r);
        cr_expect(!results[r].gather_stats);
    }
    cr_expect_eq(results[0].facts.walk_seconds, 0.0, "no walk");
    config.serve_local = true;
    results = start_all(job, config);
    cr_expect(results[0].attached && results[2].attached, "served when asked");
}
