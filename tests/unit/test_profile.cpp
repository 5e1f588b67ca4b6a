// The profile: its file, and a snapshot built from it (only what an earlier
// job used is stat'ed and read; the rest is known by name and forwarded).
#include "fixture.hpp"
#include "image/profile.hpp"
#include "serve/tree.hpp"

#include <cerrno>
#include <criterion/criterion.h>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sys/stat.h>

using namespace pyimport;

Test(profile, program_identity_ignores_options_and_arguments) {
    cr_expect_eq(program_identity({"-c", "import numpy", "x"}), "-c import numpy");
    cr_expect_eq(program_identity({"-cimport numpy"}), "-c import numpy");
    cr_expect_eq(program_identity({"-u", "-m", "pkg.main", "--flag"}), "-m pkg.main");
    cr_expect_eq(program_identity({"-X", "dev", "-W", "error", "/no/such/app.py", "in.dat"}),
                 "/no/such/app.py");
    cr_expect_eq(program_identity({"-O", "/tmp/../tmp"}), "/tmp"); // resolved when it exists
    cr_expect_eq(program_identity({}), "(interactive)");
    cr_expect_eq(program_identity({"-u", "--", "/tmp/../tmp", "-c"}), "/tmp");
    cr_expect_eq(program_identity({"-"}), "-");
    cr_expect_neq(program_identity({"a.py"}), program_identity({"b.py"}));
}

Test(profile, file_names_differ_by_program_and_prefixes) {
    std::string a = profile_file("/d", "/usr/bin/python3.11", "/x/app.py", {"/p"});
    cr_expect(a.starts_with("/d/") && a.ends_with(".profile"), "%s", a.c_str());
    cr_expect_eq(a, profile_file("/d", "/usr/bin/python3.11", "/x/app.py", {"/p"}));
    cr_expect_neq(a, profile_file("/d", "/usr/bin/python3.11", "/x/other.py", {"/p"}));
    cr_expect_neq(a, profile_file("/d", "/usr/bin/python3.11", "/x/app.py", {"/p", "/q"}));
    cr_expect_neq(a, profile_file("/d", "/usr/bin/python3.12", "/x/app.py", {"/p"}));
}

Test(profile, tidy_paths) {
    cr_expect_eq(lexically_tidy("/a//b/./c/"), "/a/b/c");
    cr_expect_eq(lexically_tidy("/a/b/../c"), "/a/b");
    cr_expect_eq(lexically_tidy("/"), "/");
}

Test(profile, round_trip_missing_and_corrupt) {
    Fixture fx;
    std::string file = fx.root + "/cache/pyimport/x.profile";
    PathSet paths;
    std::string error;
    cr_expect(read_profile(file, paths, error), "a missing profile is an empty one");
    cr_expect(paths.empty());
    PathSet written = {"/a/b.py", "/a/c", "/z"};
    cr_assert(write_profile(file, written, error), "%s", error.c_str());
    struct stat st {};
    cr_assert_eq(stat((fx.root + "/cache/pyimport").c_str(), &st), 0);
    cr_expect_eq(st.st_mode & 0777, 0700u, "created directories are private");
    cr_assert(read_profile(file, paths, error), "%s", error.c_str());
    cr_expect(paths == written);

    for (const char* bad : {"garbage\n", "pyimport-profile 1\nrelative/path\n",
                            "pyimport-profile 1\n/cut/short", "pyimport-profile 2\n/a\n"}) {
        std::ofstream(file, std::ios::trunc) << bad;
        error.clear();
        cr_expect_not(read_profile(file, paths, error), "accepted %s", bad);
        cr_expect(error.find(file) != std::string::npos, "reason names the file: %s",
                  error.c_str());
        cr_expect(paths.empty());
    }
}

Test(profile, unreadable_is_empty_with_a_reason) {
    Fixture fx;
    PathSet paths = {"/stale"};
    std::string error;
    // Under a regular file: ENOTDIR, even for root.
    cr_expect(read_profile(fx.path("pkg/mod.py/x.profile"), paths, error));
    cr_expect(paths.empty());
    cr_expect(error.find("Not a directory") != std::string::npos, "%s", error.c_str());
}

Test(profile, old_profiles_are_removed_when_one_is_written) {
    Fixture fx;
    std::string dir = fx.path("profiles");
    PathSet paths = {"/a"};
    std::string error;
    cr_assert(write_profile(dir + "/old.profile", paths, error), "%s", error.c_str());
    fx.file("profiles/notes.txt", "kept");
    struct timespec old[2] = {{time(nullptr) - (kProfileMaxAgeDays + 1) * 86400L, 0},
                              {time(nullptr) - (kProfileMaxAgeDays + 1) * 86400L, 0}};
    cr_assert_eq(utimensat(AT_FDCWD, (dir + "/old.profile").c_str(), old, 0), 0);
    cr_assert_eq(utimensat(AT_FDCWD, (dir + "/notes.txt").c_str(), old, 0), 0);
    cr_assert(write_profile(dir + "/new.profile", paths, error), "%s", error.c_str());
    struct stat st {};
    cr_expect_neq(stat((dir + "/old.profile").c_str(), &st), 0, "an old profile was kept");
    cr_expect_eq(stat((dir + "/new.profile").c_str(), &st), 0);
    cr_expect_eq(stat((dir + "/notes.txt").c_str(), &st), 0, "a file not ours was removed");
}

Test(profile, unwritable_directory_is_reported) {
    PathSet paths = {"/a"};
    std::string error;
    cr_expect_not(write_profile("/proc/pyimport-test/x.profile", paths, error));
    cr_expect(!error.empty());
}

namespace {
BuildOptions profiled(const Fixture& fx, const PathSet& profile) {
    BuildOptions o = fixture_options(fx);
    o.content_suffixes = {".py", ".pyc"};
    o.profile = &profile;
    return o;
}

PathSet paths_in(const Fixture& fx, std::initializer_list<const char*> used) {
    PathSet paths;
    for (const char* rel : used)
        paths.insert(fx.path(rel));
    return paths;
}

struct Partial {
    Fixture fx;
    PathSet profile;
    Built built;
    Snapshot& snapshot = built.snapshot;
    std::unique_ptr<Tree>& tree = built.tree;
    explicit Partial(std::initializer_list<const char*> used)
        : profile(paths_in(fx, used)), built(profiled(fx, profile)) {}
    Resolution resolve(const char* rel) { return built.resolve(fx.path(rel)); }
};
} // namespace

Test(profile, snapshot_holds_only_what_was_used) {
    Partial p({"pkg/mod.py"});
    Resolution mod = p.resolve("pkg/mod.py");
    cr_assert_eq(mod.kind, Resolution::Found);
    cr_expect(p.snapshot.entry(mod.entry).flags & kHasContent);
    struct stat st {};
    cr_assert_eq(stat(p.fx.path("pkg/mod.py").c_str(), &st), 0);
    cr_expect_eq(p.snapshot.entry(mod.entry).st.ino, st.st_ino);
    // Its directory is listed: absent names are answered.
    Resolution absent = p.resolve("pkg/absent.py");
    cr_expect_eq(absent.kind, Resolution::Failed);
    cr_expect_eq(absent.error, ENOENT);
    // What was not used is forwarded, but a path through a file still fails.
    cr_expect_eq(p.resolve("pkg/__init__.py").kind, Resolution::Forward);
    cr_expect_eq(p.resolve("pkg/sub/deep.py").kind, Resolution::Forward);
    Resolution through = p.resolve("pkg/__init__.py/x");
    cr_expect_eq(through.kind, Resolution::Failed);
    cr_expect_eq(through.error, ENOTDIR);
    // Symlinks are always recorded, with their targets.
    Resolution link = p.tree->resolve(Position{}, p.fx.path("pkg/to_sub"), false);
    cr_assert_eq(link.kind, Resolution::Found);
    cr_expect_eq(p.snapshot.link_target(link.entry), "sub");
    cr_expect_eq(p.tree->resolve(Position{}, p.fx.path("pkg/dangling"), false).kind,
                 Resolution::Found);
}

Test(profile, nothing_is_recorded_unless_asked) {
    Partial p({"pkg/mod.py"});
    uint32_t mod = p.resolve("pkg/mod.py").entry;
    cr_expect_eq(p.resolve("pkg/sub/deep.py").kind, Resolution::Forward);
    cr_expect_not(p.tree->was_used(mod));
    cr_expect(p.tree->learned_paths().empty());
}

Test(profile, a_job_learns_what_it_used) {
    Partial p({"pkg/mod.py"});
    p.tree->record_use(true);
    cr_expect(p.tree->was_used(p.resolve("pkg/mod.py").entry));
    cr_expect_eq(p.resolve("pkg/sub/deep.py").kind, Resolution::Forward);
    cr_expect_eq(p.resolve("pkg/__init__.py").kind, Resolution::Forward);
    std::vector<std::string> learned = p.tree->learned_paths();
    auto has = [&](const std::string& s) {
        return std::find(learned.begin(), learned.end(), s) != learned.end();
    };
    cr_expect(has(p.fx.path("pkg/sub/deep.py")), "path under an unused directory not learned");
    cr_expect(has(p.fx.path("pkg/__init__.py")), "unused file not learned");

    // The next job's snapshot, from the union, answers both.
    PathSet next = p.profile;
    for (const std::string& s : learned)
        next.insert(s);
    Built b(profiled(p.fx, next));
    cr_expect_eq(b.resolve(p.fx.path("pkg/sub/deep.py")).kind, Resolution::Found);
    cr_expect_eq(b.resolve(p.fx.path("pkg/__init__.py")).kind, Resolution::Found);
    cr_expect_eq(b.resolve(p.fx.path("pkg/sub/absent")).kind, Resolution::Failed);
}

// A profile of no paths (written when every earlier path had gone and the job
// used nothing) once threw out of the parser; found by fuzz_profile.
Test(profile, a_profile_of_no_paths_is_empty_not_malformed) {
    pyimport::PathSet paths{"/stale"};
    std::string error;
    cr_expect(pyimport::parse_profile("pyimport-profile 1\n", "p", paths, error), "%s",
              error.c_str());
    cr_expect(paths.empty() && error.empty());
    cr_expect_not(pyimport::parse_profile("pyimport-profile 1", "p", paths, error));
}
