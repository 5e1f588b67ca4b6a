// Shared libraries: how the loader's search entries expand, and when a load
// is served from the node-local mirror, against libraries gcc builds for each
// test.
#include "image/profile.hpp"
#include "library_fixture.hpp"
#include "loader/libraries.hpp"

#include <dlfcn.h>

using namespace pyimport;

Test(libraries, search_entries_expand_like_the_loader) {
    std::string out;
    SearchTokens tokens{"/p/pkg", "x86_64", "lib/x86_64-linux-gnu"};
    cr_expect(expand_search_entry("$ORIGIN/../lib", tokens, out));
    cr_expect_eq(out, "/p/pkg/../lib");
    cr_expect(expand_search_entry("${ORIGIN}/a:$PLATFORM", tokens, out));
    cr_expect_eq(out, "/p/pkg/a:x86_64");
    cr_expect(expand_search_entry("$ORIGIN/../$LIB", tokens, out));
    cr_expect_eq(out, "/p/pkg/../lib/x86_64-linux-gnu");
    cr_expect_not(expand_search_entry("$ORIGINAL", tokens, out));
    cr_expect_not(expand_search_entry("${ORIGIN", tokens, out));
    cr_expect_not(expand_search_entry("$PLATFORM", {"/o", "", ""}, out));
    cr_expect_not(expand_search_entry("$LIB", {"/o", "x86_64", ""}, out));
}

Test(libraries, a_load_is_served_when_its_origin_directories_are_complete) {
    Wheel w([](const Fixture& fx) {
        fx.file("pkg.libs/libscript.so", "INPUT(libx.so.1)\n"); // not ELF: mirrored, not followed
    });
    const Fixture& fx = w.fx;
    const std::string& root = w.root;
    auto libraries = w.libraries();
    cr_expect(libraries->prepare(fx.path("pkg/ext.so")));
    // Every library of $ORIGIN/../pkg.libs (ext's RPATH) and of $ORIGIN (liby's RUNPATH).
    for (const char* rel :
         {"pkg/ext.so", "pkg.libs/liby.so", "pkg.libs/libx.so.1.2.3", "pkg.libs/libscript.so"})
        cr_expect_eq(slurp(root + fx.path(rel)), slurp(fx.path(rel)), "%s", rel);
    libraries->close();
}

Test(libraries, the_loader_is_given_the_mirror_and_then_the_name_it_knows) {
    Wheel w;
    const Fixture& fx = w.fx;
    const std::string& root = w.root;
    auto libraries = w.libraries();
    std::string local;
    cr_expect_not(libraries->redirect(fx.path("pkg/ext.so").c_str(), RTLD_NOW | RTLD_NOLOAD, local),
                  "RTLD_NOLOAD of what is not loaded: the filesystem answers");
    cr_assert(libraries->redirect(fx.path("pkg/ext.so").c_str(), RTLD_NOW, local));
    cr_expect_eq(local, root + fx.path("pkg/ext.so"));
    void* handle = dlopen(local.c_str(), RTLD_NOW | RTLD_LOCAL);
    cr_assert(handle, "%s", dlerror());
    // Another way to the same file: the name the loader already knows.
    std::string again;
    cr_assert(
        libraries->redirect(fx.path("abs_pkg/ext.so").c_str(), RTLD_NOW | RTLD_NOLOAD, again));
    cr_expect_eq(again, local);
    // Its dependency, loaded by the loader from the mirror, by its own path.
    cr_assert(libraries->redirect(fx.path("pkg.libs/libx.so.1.2.3").c_str(), RTLD_NOW, again));
    cr_expect_eq(again, root + fx.path("pkg/../pkg.libs/libx.so.1"));
    cr_expect_eq(dlopen(again.c_str(), RTLD_NOW | RTLD_NOLOAD), dlopen(again.c_str(), RTLD_NOW));
    dlclose(handle);
    libraries->close();
}

Test(libraries, a_load_is_not_served_when_the_mirror_could_differ) {
    Wheel w([](const Fixture& fx) {
        fx.dir("other.libs");
        build(fx, "other.libs/libq.so", "int q(void) { return 2; }");
        fx.dir("other.libs/glibc-hwcaps"); // the loader would look there first
        build(fx, "pkg/hw.so", "int h(void) { return 3; }", "-Wl,-rpath,'$ORIGIN/../other.libs'");
        fx.dir("sys.libs");
        fx.link("/usr/lib/x86_64-linux-gnu/libm.so.6", "sys.libs/libm.so.6"); // out of the prefixes
        build(fx, "pkg/sys.so", "int s(void) { return 4; }", "-Wl,-rpath,'$ORIGIN/../sys.libs'");
        build(fx, "pkg/lib.so", "int l(void) { return 5; }", "-Wl,-rpath,'$ORIGIN/$UNKNOWN'");
    });
    const Fixture& fx = w.fx;
    {
        auto libraries = w.libraries();
        cr_expect_not(libraries->prepare(fx.path("pkg/hw.so")), "a glibc-hwcaps directory");
        cr_expect_not(libraries->prepare(fx.path("pkg/sys.so")), "a library outside the prefixes");
        cr_expect_not(libraries->prepare(fx.path("pkg/lib.so")), "a token the loader has not");
        cr_expect(libraries->prepare(fx.path("pkg/ext.so")));
        libraries->close();
    }
    // A profile without libx: it is known by name only, so ext.so is not served.
    PathSet profile = {fx.path("pkg/ext.so"), fx.path("pkg.libs/liby.so")};
    BuildOptions options = library_options(fx);
    options.profile = &profile;
    Built partial(options);
    Node node(partial.snapshot);
    Libraries libraries(*partial.tree, std::move(node.mirror));
    cr_expect_not(libraries.prepare(fx.path("pkg/ext.so")));
    libraries.close();
}

Test(libraries, a_decision_is_made_again_after_a_change) {
    Wheel w;
    auto libraries = w.libraries();
    std::string local;
    cr_expect(libraries->redirect(w.fx.path("pkg/ext.so").c_str(), RTLD_NOW, local));
    // This process rewrote a library ext.so needs: the filesystem answers now.
    w.built->tree->invalidate(pyimport::Position{}, w.fx.path("pkg.libs/libx.so.1.2.3"), false);
    cr_expect_not(libraries->redirect(w.fx.path("pkg/ext.so").c_str(), RTLD_NOW, local));
    libraries->close();
}

Test(libraries, platform_tokens_are_not_served) {
    Wheel w([](const Fixture& fx) {
        build(fx, "pkg/plat.so", "int p(void) { return 1; }", "-Wl,-rpath,'$ORIGIN/$PLATFORM'");
    });
    auto libraries = w.libraries();
    cr_expect_not(libraries->prepare(w.fx.path("pkg/plat.so")), "glibc's $PLATFORM may differ");
    libraries->close();
}

Test(snapshot, libraries_give_way_to_modules_past_the_budget) {
    Fixture fx;
    fx.dir("big");
    fx.file("big/libbig.so", std::string(600 * 1024, 'x'));
    for (int i = 0; i < 50; ++i)
        fx.file("big/m" + std::to_string(i) + ".py", std::string(8 * 1024, '#'));
    BuildOptions options = library_options(fx);
    options.content_suffixes = {".py"};
    options.max_bytes = 900 * 1024; // the library fits at first, the modules then do not
    pyimport::NotCached dropped;
    options.not_cached = &dropped;
    Built built(options);
    cr_expect_eq(dropped.files, 1u, "the library gave way, whichever was listed first");
    cr_expect_eq(dropped.libraries, 1u);
    cr_expect_eq(dropped.bytes, 600u * 1024);
    for (int i = 0; i < 50; ++i) {
        pyimport::Resolution m = built.resolve(fx.path("big/m" + std::to_string(i) + ".py"));
        cr_assert_eq(m.kind, pyimport::Resolution::Found);
        cr_expect(built.snapshot.entry(m.entry).flags & kHasContent, "m%d.py is cached", i);
    }
    cr_expect_geq(built.snapshot.header().data_size, 50u * 8 * 1024);
    cr_expect_leq(built.snapshot.header().data_size, options.max_bytes);
    pyimport::Resolution lib = built.resolve(fx.path("big/libbig.so"));
    cr_assert_eq(lib.kind, pyimport::Resolution::Found);
    cr_expect_not(built.snapshot.entry(lib.entry).flags & kHasContent);
    pyimport::Resolution mod = built.resolve(fx.path("big/m49.py"));
    cr_assert_eq(mod.kind, pyimport::Resolution::Found);
    cr_expect(built.snapshot.entry(mod.entry).flags & kHasContent);
    cr_expect_eq(std::string(built.snapshot.content(mod.entry), 8 * 1024),
                 std::string(8 * 1024, '#'));
}
