// The loader's search emulated over the snapshot (loader/search.hpp), the
// ld.so cache reader (loader/ld_cache.hpp) and the walk's library roots,
// against the real loader, the real ldconfig and the real files.
#include "library_fixture.hpp"
#include "loader/ld_cache.hpp"
#include "loader/search.hpp"

#include <cstdio>
#include <dlfcn.h>
#include <map>

using namespace pyimport;

namespace {

// `ldconfig -p`: the first path of every name of this machine's ABI, and the
// names with entries for hardware capabilities.
std::map<std::string, std::string> ldconfig_names() {
    std::map<std::string, std::string> names;
    FILE* p = popen("ldconfig -p", "r");
    cr_assert(p);
    char line[4096];
    while (fgets(line, sizeof line, p)) {
        std::string l(line);
        size_t open = l.find(" ("), arrow = l.find(") => ");
        if (l.empty() || l[0] != '\t' || open == std::string::npos || arrow == std::string::npos)
            continue;
        std::string name = l.substr(1, open - 1), what = l.substr(open + 2, arrow - open - 2);
        std::string path = l.substr(arrow + 5);
        path.erase(path.find_last_not_of("\n") + 1);
#if defined(__x86_64__)
        if (what != "libc6,x86-64") continue;
#endif
        names.emplace(name, path); // the first one
    }
    pclose(p);
    return names;
}

// A Spack-style installation: each package in a prefix of its own; an
// extension module needs libB through an absolute RUNPATH into prefix B, which
// needs libC through one into prefix C (soname symlinks in both).
struct Spack {
    Fixture fx;
    std::string a, b, c;
    Spack() {
        a = fx.path("py-ext/lib"), b = fx.path("libb/lib"), c = fx.path("libc/lib");
        fx.dir("py-ext"), fx.dir("py-ext/lib"), fx.dir("libb"), fx.dir("libb/lib");
        fx.dir("libb/lib/cmake"), fx.dir("libc"), fx.dir("libc/lib");
        build(fx, "libc/lib/libC.so.1.0", "int c(void) { return 3; }", "-Wl,-soname,libC.so.1");
        fx.link("libC.so.1.0", "libc/lib/libC.so.1");
        build(fx, "libb/lib/libB.so.1.0", "extern int c(void); int b(void) { return c(); }",
              "-Wl,-soname,libB.so.1 -L" + c + " -l:libC.so.1 -Wl,--enable-new-dtags,-rpath," + c);
        fx.link("libB.so.1.0", "libb/lib/libB.so.1");
        fx.file("libb/lib/README", "not a library");
        build(fx, "py-ext/lib/ext.so", "extern int b(void); int e(void) { return b(); }",
              "-L" + b + " -l:libB.so.1 -Wl,--enable-new-dtags,-rpath," + b);
    }
    BuildOptions options() const {
        BuildOptions o = fixture_options(fx);
        o.prefixes = {fx.path("py-ext")};
        o.libraries = true;
        o.max_bytes = 64 << 20;
        o.search_dirs = [](std::string_view path, const char* data, size_t size,
                           std::vector<std::string>& dirs) {
            library_search_dirs(path, data, size, PYIMPORT_LOADER_LIB, dirs);
        };
        return o;
    }
};

Requester requester_of(const std::string& path) {
    Requester r;
    r.origin = path.substr(0, path.rfind('/'));
    std::string bytes = slurp(path);
    cr_assert_eq(read_dynamic(bytes.data(), bytes.size(), r.dynamic), ElfRead::Read);
    static std::vector<std::string> keep; // the views point into the bytes
    keep.push_back(std::move(bytes));
    cr_assert_eq(read_dynamic(keep.back().data(), keep.back().size(), r.dynamic), ElfRead::Read);
    return r;
}

} // namespace

Test(ld_cache, answers_as_ldconfig_lists_the_cache) {
    LdCache cache;
    cr_assert(cache.load(), "/etc/ld.so.cache is read");
    auto names = ldconfig_names();
    cr_assert_gt(names.size(), 10u);
    for (const auto& [name, path] : names) {
        std::string got;
        cr_expect_eq(cache.lookup(name, got), LdCache::Answer::found, "%s", name.c_str());
        cr_expect_eq(got, path, "%s", name.c_str());
    }
    std::string got;
    cr_expect_eq(cache.lookup("libpyimport-no-such.so.7", got), LdCache::Answer::missing);
}

Test(ld_cache, refuses_what_is_not_a_whole_cache) {
    std::string bytes = slurp("/etc/ld.so.cache");
    LdCache cache;
    cr_assert(cache.parse(bytes.data(), bytes.size()));
    std::string got;
    cr_expect_not(cache.parse(bytes.data(), 47), "shorter than a header");
    cr_expect_eq(cache.lookup("libc.so.6", got), LdCache::Answer::unknown,
                 "nothing kept from a refused cache");
    std::string wrong = bytes;
    wrong[0] = 'G';
    cr_expect_not(cache.parse(wrong.data(), wrong.size()), "another magic");
    cr_expect_not(cache.parse(bytes.data(), bytes.size() / 2), "cut in the middle");
}

Test(search, steps_follow_the_loaders_order) {
    SearchSettings s;
    s.executable = "/opt/py/bin/python3";
    s.library_path_set = true;
    s.library_path = "/l1;$ORIGIN/../l2::rel";
    DynamicInfo program;
    program.rpath = "/prog-rpath";
    Requester r;
    r.origin = "/o";
    r.dynamic.rpath = "$ORIGIN/r1:/r2";
    s.system_dirs = "/sys1:/sys2";
    auto steps = search_steps(r, program, s);
    std::vector<std::string> got;
    for (const SearchStep& step : steps)
        got.push_back(step.kind == SearchStep::directory ? step.dir
                      : step.kind == SearchStep::cache   ? "[cache]"
                      : step.kind == SearchStep::system  ? "[system]" + step.dir
                                                         : "?" + step.dir);
    std::vector<std::string> want = {
        "/o/r1", "/r2",  "/prog-rpath", "/l1",           "/opt/py/bin/../l2",
        "?",     "?rel", "[cache]",     "[system]/sys1", "[system]/sys2"};
    cr_assert_eq(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
        cr_expect_eq(got[i], want[i], "step %zu", i);

    // A RUNPATH: no RPATH of anyone, after LD_LIBRARY_PATH; NODEFLIB: no cache.
    r.dynamic.rpath = "";
    r.dynamic.runpath = "/run";
    r.dynamic.nodeflib = true;
    r.rpath_elsewhere = true;
    s.library_path_set = false;
    steps = search_steps(r, program, s);
    cr_assert_eq(steps.size(), 1u, "NODEFLIB: no cache, no system directories");
    cr_expect_eq(steps[0].dir, "/run");
    // Without RUNPATH, another object's RPATH in the chain is not followed.
    r.dynamic.runpath = "";
    steps = search_steps(r, program, s);
    cr_expect_eq(steps[0].kind, SearchStep::unknown);
}

Test(search, library_roots_are_recorded_shallow) {
    Spack sp;
    Built built(sp.options());
    cr_expect_eq(built.snapshot.root_count(), 3u, "the prefix and the two library directories");
    // The listing is complete, libraries have their bytes, directories only a name.
    Resolution lib = built.resolve(sp.b + "/libB.so.1");
    cr_assert_eq(lib.kind, Resolution::Found);
    cr_expect(built.snapshot.entry(lib.entry).flags & kHasContent);
    cr_expect_eq(built.resolve(sp.b + "/nothing.so").kind, Resolution::Failed);
    cr_expect_eq(built.resolve(sp.b + "/cmake/x").kind, Resolution::Forward,
                 "subdirectories are not walked");
    cr_expect_eq(built.resolve(sp.c + "/libC.so.1").kind, Resolution::Found,
                 "the directories of libraries found there are recorded too");
}

Test(search, finds_what_the_loader_loads_in_the_mirror) {
    Spack sp;
    Built built(sp.options());
    Node node(built.snapshot);
    std::string root = node.mirror->root();
    Libraries libraries(*built.tree, std::move(node.mirror));
    LdCache cache;
    cache.load();
    SearchSettings settings;
    settings.executable = "/usr/bin/python3";
    LibrarySearch search(libraries, settings, cache);
    DynamicInfo program;

    std::string path;
    cr_assert(search.find("libB.so.1", requester_of(sp.a + "/ext.so"), program, path));
    cr_expect_eq(path, root + sp.b + "/libB.so.1", "the mirror's, by the name searched");
    cr_expect_eq(slurp(path), slurp(sp.b + "/libB.so.1.0"));
    cr_assert(search.find("libC.so.1", requester_of(sp.b + "/libB.so.1.0"), program, path));
    cr_expect_eq(path, root + sp.c + "/libC.so.1");
    // What the ld.so cache holds: its path; what nothing holds: the loader's.
    cr_assert(search.find("libc.so.6", requester_of(sp.a + "/ext.so"), program, path));
    cr_expect_eq(path.substr(path.rfind('/')), "/libc.so.6");
    // Nowhere (the system directories asked too): a path that is not there,
    // which the loader fails on as it would on the name.
    cr_assert(
        search.find("libpyimport-missing.so.1", requester_of(sp.a + "/ext.so"), program, path));
    cr_expect_eq(path, root + kMissingDirectory + std::string("libpyimport-missing.so.1"));
    cr_expect_null(dlopen(path.c_str(), RTLD_NOW));
    // The loader loads the answers: every dependency of ext is there already.
    void* c = dlopen((root + sp.c + "/libC.so.1").c_str(), RTLD_NOW);
    cr_assert(c, "%s", dlerror());
    void* b = dlopen((root + sp.b + "/libB.so.1").c_str(), RTLD_NOW);
    cr_assert(b, "%s", dlerror());
    auto fn = reinterpret_cast<int (*)()>(dlsym(b, "b"));
    cr_assert(fn);
    cr_expect_eq(fn(), 3);
    // Loaded: the name the loader knows.
    cr_assert(search.find("libC.so.1", requester_of(sp.b + "/libB.so.1.0"), program, path));
    cr_expect_eq(path, root + sp.c + "/libC.so.1");
    dlclose(b);
    dlclose(c);
    libraries.close();
}

// Whether the search of ext's libB is left to the loader over `built`.
bool left_to_loader(const Spack& sp, const BuildOptions& options) {
    Built built(options);
    Node node(built.snapshot);
    Libraries libraries(*built.tree, std::move(node.mirror));
    LibrarySearch search(libraries, SearchSettings{}, LdCache{});
    std::string path;
    bool found = search.find("libB.so.1", requester_of(sp.a + "/ext.so"), DynamicInfo{}, path);
    libraries.close();
    return !found;
}

Test(search, capability_subdirectories_leave_the_search_to_the_loader) {
    Spack sp;
    cr_expect_not(left_to_loader(sp, sp.options()), "found without them");
    sp.fx.dir("libb/lib/glibc-hwcaps");
    cr_expect(left_to_loader(sp, sp.options()));
}

Test(search, a_directory_outside_the_snapshot_leaves_the_search_to_the_loader) {
    Spack sp;
    BuildOptions o = sp.options();
    o.search_dirs = nullptr; // no library roots
    cr_expect(left_to_loader(sp, o));
}
