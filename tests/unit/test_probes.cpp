// Single paths outside the prefixes (partial roots: the interpreter's
// start-up probes) and the script's directory (a live root), against what the
// kernel says about the same paths.
#include "base/config.hpp"
#include "core_fixture.hpp"
#include "fixture.hpp"
#include "image/profile.hpp"
#include "serve/core.hpp"
#include "startup/protocol.hpp"

#include <algorithm>
#include <cerrno>
#include <criterion/criterion.h>
#include <cstring>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace pyimport;

namespace {

// An interpreter's layout: bin/ with a link chain, lib/python3.11 as the
// prefix, a pyvenv.cfg above bin/, no ._pth, no Modules/.
struct Interpreter : Fixture {
    Interpreter() {
        dir("bin");
        dir("lib");
        dir("lib/python3.11");
        file("lib/python3.11/os.py", "# os\n");
        file("bin/python3.11", "ELF");
        link("python3.11", "bin/python3");
        file("pyvenv.cfg", "home = /nowhere\n");
        file("lib/python311.zip", "PK\x05\x06 zip");
    }
    BuildOptions options() const {
        BuildOptions o;
        o.prefixes = {path("lib/python3.11")};
        o.max_bytes = 1 << 20;
        o.content_suffixes = {".py"};
        for (const char* p :
             {"bin/python3", "bin/python3.11", "bin/pyvenv.cfg", "pyvenv.cfg", "bin/python3._pth",
              "bin/Modules/Setup.local", "lib", "lib/python311.zip", "bin/lib/python3.11/os.py",
              "lib/python3.11/os.py"})
            o.probes.push_back({path(p), true});
        return o;
    }
};

} // namespace

// /usr/bin/pyvenv.cfg and the like: present or absent, with the kernel's
// errno, and without listing /usr/bin.
Test(probes, are_answered_like_the_kernel) {
    Interpreter fx;
    Built b(fx.options());
    for (const char* p : {"bin/python3", "bin/python3.11", "bin/pyvenv.cfg", "pyvenv.cfg",
                          "bin/python3._pth", "bin/Modules/Setup.local", "bin/Modules", "lib",
                          "lib/python311.zip", "bin/lib/python3.11/os.py", "bin/lib",
                          "lib/python3.11/os.py", "bin/python3.11/x", "bin/pyvenv.cfg/x"}) {
        b.expect_like_kernel(fx.path(p), true);
        b.expect_like_kernel(fx.path(p), false);
    }
    Resolution cfg = b.resolve(fx.path("pyvenv.cfg"));
    cr_assert_eq(cfg.kind, Resolution::Found);
    cr_expect(b.snapshot.entry(cfg.entry).flags & kHasContent, "pyvenv.cfg's bytes are cached");
    Resolution zip = b.resolve(fx.path("lib/python311.zip"));
    cr_assert_eq(zip.kind, Resolution::Found);
    cr_expect(b.snapshot.entry(zip.entry).flags & kHasContent, "the zip's bytes are cached");
    Resolution link = b.resolve(fx.path("bin/python3"), false);
    cr_assert_eq(link.kind, Resolution::Found);
    cr_expect_eq(b.snapshot.link_target(link.entry), "python3.11");
}

// A partial directory knows only the names it was asked about.
Test(probes, other_names_in_a_partial_directory_are_forwarded) {
    Interpreter fx;
    fx.file("bin/other", "x");
    Built b(fx.options());
    cr_expect_eq(b.resolve(fx.path("bin/other")).kind, Resolution::Forward);
    cr_expect_eq(b.resolve(fx.path("bin/never-there")).kind, Resolution::Forward);
    Resolution bin = b.resolve(fx.path("bin"));
    cr_assert_eq(bin.kind, Resolution::Found, "bin is a partial root");
    cr_expect_not(b.snapshot.entry(bin.entry).flags & kHasListing, "and has no listing");
}

// The prefix lies inside the partial root lib/: lookups pass through it, and a
// working directory inside the prefix is located in the prefix.
Test(probes, prefixes_inside_a_partial_directory_still_answer) {
    Interpreter fx;
    Built b(fx.options());
    b.expect_like_kernel(fx.path("lib/python3.11/os.py"), true);
    b.expect_like_kernel(fx.path("lib/python3.11/absent.py"), true);
    b.expect_like_kernel(fx.path("lib/../lib/python3.11/os.py"), true);
    Position at;
    cr_assert(b.tree->locate(fx.path("lib/python3.11"), at));
    cr_assert_neq(at.entry, kNoEntry);
    cr_expect_eq(b.snapshot.entry(at.entry).flags & kPartial, 0, "the prefix, not lib/");
    cr_expect_eq(b.tree->resolve(at, "os.py", true).kind, Resolution::Found);
}

// A probe under a walked prefix is the prefix's: no partial root for it.
Test(probes, under_a_prefix_add_nothing) {
    Interpreter fx;
    BuildOptions o = fx.options();
    o.probes = {{fx.path("lib/python3.11/os.py"), true}, {fx.path("lib/python3.11/nope"), true}};
    Built b(o);
    cr_expect_eq(b.snapshot.root_count(), 1u);
}

// The process's own writes are seen: a probed absent name it creates.
Test(probes, own_writes_are_seen) {
    Interpreter fx;
    Built b(fx.options());
    cr_assert_eq(b.resolve(fx.path("bin/pyvenv.cfg")).kind, Resolution::Failed);
    fx.file("bin/pyvenv.cfg", "home = /x\n");
    b.tree->invalidate(Position{}, fx.path("bin/pyvenv.cfg"), true);
    cr_expect_eq(b.resolve(fx.path("bin/pyvenv.cfg")).kind, Resolution::Forward);
}

namespace {
// The script's directory: the script, a local module, packages, data.
struct ScriptDir : Fixture {
    ScriptDir() {
        file("app.py", "import helper\n");
        file("helper.py", "x = 1\n");
        file("input.dat", "data");
        dir("pkg");
        file("pkg/__init__.py", "");
        file("pkg/m.py", "");
        file("pkg/table.csv", "1,2");
        dir("results");
        file("results/out.py", "");
        dir("not-a-package");
    }
    BuildOptions options() const {
        BuildOptions o;
        o.live_roots = {root};
        o.max_bytes = 1 << 20;
        o.content_suffixes = {".py"};
        return o;
    }
};
} // namespace

// Modules and packages are served; data files, directories that are not
// packages and names not in the directory go to the filesystem (another rank
// may have created or rewritten them).
Test(live, modules_served_data_and_new_names_forwarded) {
    ScriptDir fx;
    Built b(fx.options());
    for (const char* p : {"app.py", "helper.py", "pkg", "pkg/__init__.py", "pkg/m.py"}) {
        Resolution r = b.resolve(fx.path(p));
        cr_expect_eq(r.kind, Resolution::Found, "%s is served", p);
    }
    cr_expect(b.snapshot.entry(b.resolve(fx.path("helper.py")).entry).flags & kHasContent);
    Resolution absent = b.resolve(fx.path("pkg/new.py"));
    cr_expect_eq(absent.kind, Resolution::Failed, "packages are answered like a prefix's");
    for (const char* p :
         {"input.dat", "new.py", "pkg/table.csv", "results", "results/out.py", "not-a-package/x"}) {
        Resolution r = b.resolve(fx.path(p));
        cr_expect_eq(r.kind, Resolution::Forward, "%s is forwarded (%d)", p, r.kind);
    }
}

// The live root's listing is served while the directory is as it was, and
// from the filesystem once another process has changed it: then the
// directory's own stat is the filesystem's too.
Test(live, listing_served_only_while_unchanged) {
    ScriptDir fx;
    auto core = make_core(fx.options());
    int error = 0;
    bool served = false;
    DIR* dir = core->open_dir(fx.root.c_str(), error, served);
    cr_assert(served && dir, "unchanged: the listing is served");
    int names = 0;
    while (struct dirent64* d = dir_read(dir))
        names += d->d_name[0] != '.';
    dir_close(dir);
    int real_names = 0;
    DIR* real = opendir(fx.root.c_str());
    while (struct dirent64* d = readdir64(real))
        real_names += d->d_name[0] != '.';
    closedir(real);
    cr_expect_eq(names, real_names, "%d names, the kernel %d", names, real_names);
    struct stat st {};
    cr_expect(core->stat_at(AT_FDCWD, fx.root.c_str(), 0, &st).served, "the stat is served");

    fx.file("written-by-rank-0.dat", "new"); // as another rank would
    dir = core->open_dir(fx.root.c_str(), error, served);
    cr_expect_not(served, "changed: the listing comes from the filesystem");
    cr_expect_null(dir);
    cr_expect_not(core->stat_at(AT_FDCWD, fx.root.c_str(), 0, &st).served,
                  "and so does the directory's stat");
    cr_expect(core->stat_at(AT_FDCWD, fx.path("helper.py").c_str(), 0, &st).served,
              "modules are still served");
}

// A prefix inside the live directory (an editable install's source tree in
// the working directory) stays a root of its own, reached through it.
Test(live, a_prefix_inside_the_live_directory_is_reached_through_it) {
    ScriptDir fx;
    BuildOptions o = fx.options();
    o.prefixes = {fx.path("results")}; // not a package: kNoStat in the live walk
    Built b(o);
    cr_expect_eq(b.snapshot.root_count(), 2u);
    for (const char* p : {"helper.py", "results", "results/out.py", "results/../helper.py"})
        cr_expect_eq(b.resolve(fx.path(p)).kind, Resolution::Found, "%s is served", p);
    Resolution absent = b.resolve(fx.path("results/absent.py"));
    cr_expect_eq(absent.kind, Resolution::Failed, "the prefix answers absent names");
    cr_expect_eq(absent.error, ENOENT);
    BuildOptions inside = fx.options();
    inside.prefixes = {fx.root};
    inside.live_roots = {fx.path("pkg")};
    Built c(inside);
    cr_expect_eq(c.snapshot.root_count(), 1u, "a live directory inside a prefix is the prefix's");
    cr_expect_eq(c.snapshot.entry(0).flags & kLive, 0);
}

// What rank 0 looked at outside the prefixes is learned for the profile:
// import-related names and listed directories, never pseudo-filesystems,
// and only while the tree records.
Test(learned, paths_outside_the_prefixes) {
    cr_expect(learnable_outside("/opt/ext/mod.py", false));
    cr_expect(learnable_outside("/opt/ext/_c.cpython-311-x86_64-linux-gnu.so", false));
    cr_expect(learnable_outside("/opt/venv/pyvenv.cfg", false));
    cr_expect(learnable_outside("/opt/ext", true), "a listed directory");
    cr_expect_not(learnable_outside("/opt/ext/results.csv", false), "a data file");
    cr_expect_not(learnable_outside("/proc/self/maps.py", false));
    cr_expect_not(learnable_outside("/dev/shm/x.so", false));
    cr_expect_not(learnable_outside("relative.py", false));
    cr_expect(import_file_name("/a/b.zip"));
    cr_expect_not(import_file_name("/a/ext"));

    Interpreter fx;
    fx.dir("ext");
    fx.file("ext/mod.py", "");
    auto core = make_core(fx.options());
    struct stat st {};
    cr_expect_not(core->stat_at(AT_FDCWD, fx.path("ext/mod.py").c_str(), 0, &st).served);
    cr_expect(core->tree().learned_paths().empty(), "not recording: nothing learned");
    core->tree().record_use(true);
    cr_expect_not(core->stat_at(AT_FDCWD, fx.path("ext/mod.py").c_str(), 0, &st).served);
    cr_expect_not(core->stat_at(AT_FDCWD, fx.path("ext/../ext/x.py").c_str(), 0, &st).served);
    int error = 0;
    bool served = false;
    cr_expect_null(core->open_dir(fx.path("ext").c_str(), error, served));
    std::vector<std::string> learned = core->tree().learned_paths();
    std::sort(learned.begin(), learned.end());
    cr_assert_eq(learned.size(), 2u, "%zu learned", learned.size());
    cr_expect_eq(learned[0], fx.path("ext"));
    cr_expect_eq(learned[1], fx.path("ext/mod.py"));
}

// The next job answers them: files as single paths, directories as live roots.
Test(learned, are_served_by_the_next_job) {
    Interpreter fx;
    fx.dir("ext");
    fx.file("ext/mod.py", "x = 1\n");
    fx.file("ext/data.csv", "1,2\n");
    BuildOptions o = fx.options();
    o.probes.push_back({fx.path("ext/other.py"), true}); // learned absent
    o.live_roots.push_back(fx.path("ext"));
    Built b(o);
    cr_expect_eq(b.resolve(fx.path("ext/mod.py")).kind, Resolution::Found);
    cr_expect_eq(b.resolve(fx.path("ext/other.py")).kind, Resolution::Forward,
                 "a live directory forwards names it does not hold");
    cr_expect_eq(b.resolve(fx.path("ext/data.csv")).kind, Resolution::Forward);
}

// After a child process ends, a partial directory found changed answers none
// of its names, but lookups through it into a prefix still do.
Test(probes, a_changed_partial_directory_does_not_hide_the_prefix_inside) {
    Interpreter fx;
    Built b(fx.options());
    // The partial roots changed, the prefix did not.
    b.tree->set_directory_check(
        [](const Snapshot& s, uint32_t e) { return !(s.entry(e).flags & kPartial); });
    b.tree->others_may_have_changed();
    cr_expect_eq(b.resolve(fx.path("lib/python311.zip")).kind, Resolution::Forward);
    cr_expect_eq(b.resolve(fx.path("bin/pyvenv.cfg")).kind, Resolution::Forward);
    cr_expect_eq(b.resolve(fx.path("lib/python3.11/os.py")).kind, Resolution::Found);
    cr_expect_eq(b.resolve(fx.path("lib/python3.11/os.py")).kind, Resolution::Found, "again");
    cr_expect_eq(b.resolve(fx.path("lib/../lib/python3.11/os.py")).kind, Resolution::Found);
}

// Learned paths join the next job's options: names as probes, directories as
// live roots unless they hold a prefix or one of the interpreter's probes.
Test(learned, become_probes_and_live_roots) {
    BuildOptions o;
    o.prefixes = {"/opt/py/lib/python3.11"};
    o.probes = {{"/opt/py/lib/python311.zip", true}};
    PathSet profile = {"/opt/py/lib/python3.11/os.py", // inside a prefix: the walk's
                       "/opt/ext/mod.py",
                       "/opt/ext",
                       "/opt/py/lib",
                       "/opt/py",
                       "/proc/self"};
    cr_expect_eq(add_learned_paths(profile, o), 4u, "os.py and /proc are not learned");
    bool mod = false;
    for (const BuildOptions::Probe& p : o.probes)
        mod = mod || p.path == "/opt/ext/mod.py";
    cr_expect(mod, "an import-related name is a probe");
    cr_assert_eq(o.live_roots.size(), 1u, "%zu live roots", o.live_roots.size());
    cr_expect_eq(o.live_roots[0], "/opt/ext", "/opt/py/lib and /opt/py hold what is known");
}

// A change to a directory that holds roots (a partial root around a prefix)
// reaches those roots: the process sees its own rename.
Test(probes, renaming_a_directory_above_a_prefix_reaches_the_prefix) {
    Interpreter fx;
    Built b(fx.options());
    cr_assert_eq(b.resolve(fx.path("lib/python3.11/os.py")).kind, Resolution::Found);
    b.tree->invalidate(Position{}, fx.path("lib"), false);
    cr_expect_eq(b.resolve(fx.path("lib/python3.11/os.py")).kind, Resolution::Forward);
}

// A link in the script's directory to data elsewhere is followed to the
// filesystem (others may rewrite the data), and a path through a data file
// there is the filesystem's too (another rank may have replaced it).
Test(live, links_out_and_paths_through_data_files_are_forwarded) {
    ScriptDir fx;
    Fixture other;
    other.file("big.dat", "12345");
    fx.link(other.path("big.dat"), "linked.dat");
    Built b(fx.options());
    cr_expect_eq(b.resolve(fx.path("linked.dat"), true).kind, Resolution::Forward);
    cr_expect_eq(b.resolve(fx.path("input.dat/x")).kind, Resolution::Forward);
}

// A venv inside the working directory: its start-up probes are answered
// through the live root.
Test(live, probes_inside_the_live_directory_are_answered) {
    ScriptDir fx;
    fx.dir("venv");
    fx.dir("venv/bin");
    fx.file("venv/pyvenv.cfg", "home = /usr/bin\n");
    fx.file("venv/bin/python", "ELF");
    BuildOptions o = fx.options();
    o.probes = {{fx.path("venv/pyvenv.cfg"), true},
                {fx.path("venv/bin/pyvenv.cfg"), true},
                {fx.path("venv/bin/python"), false}};
    Built b(o);
    cr_expect_eq(b.resolve(fx.path("venv/pyvenv.cfg")).kind, Resolution::Found);
    cr_expect_eq(b.resolve(fx.path("venv/bin/python")).kind, Resolution::Found);
    Resolution absent = b.resolve(fx.path("venv/bin/pyvenv.cfg"));
    cr_expect_eq(absent.kind, Resolution::Failed);
    cr_expect_eq(absent.error, ENOENT);
    cr_expect_eq(b.resolve(fx.path("helper.py")).kind, Resolution::Found);
}
