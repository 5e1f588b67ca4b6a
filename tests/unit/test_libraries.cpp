// Shared libraries: reading the dynamic section, the node-local mirror, and
// the decision to load from it, against libraries gcc builds for each test.
#include "loader/elf.hpp"
#include "fixture.hpp"
#include "loader/libraries.hpp"
#include "loader/mirror.hpp"
#include "image/profile.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <sys/file.h>
#include <sys/stat.h>
#include <vector>

using namespace pyimport;

namespace {

// Builds a shared library at fx.path(rel) from `source` with extra flags.
void build(const Fixture& fx, const std::string& rel, const std::string& source,
           const std::string& flags = "") {
    std::string src = fx.path(rel) + ".c";
    fx.file(rel + ".c", source);
    std::string cmd = "cc -shared -fPIC -o '" + fx.path(rel) + "' '" + src + "' " + flags;
    cr_assert_eq(std::system(cmd.c_str()), 0, "%s", cmd.c_str());
    unlink(src.c_str());
}

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

// The layout of a wheel: an extension that finds its library through
// $ORIGIN/../pkg.libs, and that library's dependency through a soname symlink.
void make_wheel(const Fixture& fx) {
    fx.dir("pkg.libs");
    build(fx, "pkg.libs/libx.so.1.2.3", "int x(void) { return 1; }", "-Wl,-soname,libx.so.1");
    fx.link("libx.so.1.2.3", "pkg.libs/libx.so.1");
    build(fx, "pkg.libs/liby.so", "extern int x(void); int y(void) { return x(); }",
          "-Wl,-soname,liby.so -L" + fx.path("pkg.libs") +
              " -l:libx.so.1 -Wl,--enable-new-dtags,-rpath,'$ORIGIN'");
    build(fx, "pkg/ext.so", "extern int y(void); int e(void) { return y(); }",
          "-L" + fx.path("pkg.libs") +
              " -l:liby.so -Wl,--disable-new-dtags,-rpath,'$ORIGIN/../pkg.libs'");
}

BuildOptions library_options(const Fixture& fx) {
    BuildOptions o = fixture_options(fx);
    o.libraries = true;
    o.stat_suffixes = {"*"};
    return o;
}

// A mirror in a fresh node directory, removed with it.
struct Node {
    std::string base;
    std::unique_ptr<NodeMirror> mirror = std::make_unique<NodeMirror>();
    explicit Node(const Snapshot& snapshot) {
        char tmpl[] = "/tmp/pyimport-node-XXXXXX";
        base = mkdtemp(tmpl);
        std::string error;
        cr_assert(mirror->create(base, snapshot, error), "%s", error.c_str());
    }
    ~Node() {
        if (mirror) mirror->leave();
        std::string cmd = "rm -rf '" + base + "'";
        int ignored = std::system(cmd.c_str());
        (void)ignored;
    }
    std::string user_dir() const { return base + "/pyimport-" + std::to_string(geteuid()); }
};

// The wheel, with what a test adds to it, its snapshot and a mirror of it.
struct Wheel {
    Fixture fx;
    std::unique_ptr<Built> built;
    std::unique_ptr<Node> node;
    std::string root; // the mirror's

    template <typename Extra> explicit Wheel(Extra extra) {
        make_wheel(fx);
        extra(fx);
        built = std::make_unique<Built>(library_options(fx));
        node = std::make_unique<Node>(built->snapshot);
        root = node->mirror->root();
    }
    Wheel() : Wheel([](const Fixture&) {}) {}

    const Tree& tree() const { return *built->tree; }
    NodeMirror& mirror() const { return *node->mirror; }
    // The mirror handed over, as the runtime does.
    std::unique_ptr<Libraries> libraries() {
        return std::make_unique<Libraries>(tree(), std::move(node->mirror));
    }
};

} // namespace

Test(elf, reads_what_the_loader_reads) {
    Fixture fx;
    make_wheel(fx);
    std::string bytes = slurp(fx.path("pkg.libs/liby.so"));
    DynamicInfo info;
    cr_assert_eq(read_dynamic(bytes.data(), bytes.size(), info), ElfRead::Read);
    cr_expect_eq(info.soname, "liby.so");
    cr_expect_eq(info.runpath, "$ORIGIN");
    cr_expect(info.rpath.empty(), "DT_RUNPATH shadows DT_RPATH");
    bool needs_x = false;
    for (std::string_view n : info.needed)
        needs_x |= n == "libx.so.1";
    cr_expect(needs_x);
    bytes = slurp(fx.path("pkg/ext.so"));
    cr_assert_eq(read_dynamic(bytes.data(), bytes.size(), info), ElfRead::Read);
    cr_expect_eq(info.rpath, "$ORIGIN/../pkg.libs");
    cr_expect(info.runpath.empty());
    cr_expect(info.soname.empty());
}

Test(elf, refuses_what_the_loader_refuses_and_survives_truncation) {
    Fixture fx;
    make_wheel(fx);
    DynamicInfo info;
    std::string text = "INPUT(libx.so.1)\n"; // a linker script named like a library
    cr_expect_eq(read_dynamic(text.data(), text.size(), info), ElfRead::NotLoadable);
    std::string bytes = slurp(fx.path("pkg.libs/liby.so"));
    for (size_t size = 0; size < bytes.size(); size += 61) {
        // Exactly `size` bytes on the heap: a read past them is a memory error
        // (valgrind, ASan), not a read of the rest of the file.
        std::vector<char> cut(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(size));
        ElfRead read = read_dynamic(cut.data(), cut.size(), info);
        if (size < 64) cr_expect_eq(read, ElfRead::NotLoadable, "%zu bytes", size);
        // What it reads whole from a cut file is what the whole file says.
        if (read == ElfRead::Read) cr_expect_eq(info.soname, "liby.so", "%zu bytes", size);
    }
    std::string other = bytes;
    other[4] = 1; // ELFCLASS32
    cr_expect_eq(read_dynamic(other.data(), other.size(), info), ElfRead::NotLoadable);
    other = bytes;
    other[18] = 0x28; // another machine
    cr_expect_eq(read_dynamic(other.data(), other.size(), info), ElfRead::NotLoadable);
    other = bytes;
    other[54] = 0x30; // e_phentsize: a loadable object whose headers cannot be read
    cr_expect_eq(read_dynamic(other.data(), other.size(), info), ElfRead::Unreadable);
}

Test(elf, library_names) {
    for (const char* yes : {"libx.so", "libx.so.1", "libx.so.1.2.3",
                            "_m.cpython-311-x86_64-linux-gnu.so", "libgfortran-040039e1.so.5.0.0"})
        cr_expect(is_library_name(yes), "%s", yes);
    for (const char* no : {"x.py", ".so", "libx.sox", "libx.so_", "so", "x.so.py.txt"})
        cr_expect_not(is_library_name(no), "%s", no);
}

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

Test(libraries, the_mirror_reproduces_the_way_to_a_library) {
    Wheel w;
    const Fixture& fx = w.fx;
    const std::string& root = w.root;
    cr_assert_neq(w.mirror().materialise(w.tree(), fx.path("pkg/../pkg.libs/libx.so.1")), kNoEntry);
    std::string copy = root + fx.path("pkg.libs/libx.so.1.2.3");
    cr_expect_eq(slurp(copy), slurp(fx.path("pkg.libs/libx.so.1.2.3")));
    char target[64] = {};
    cr_expect_gt(readlink((root + fx.path("pkg.libs/libx.so.1")).c_str(), target, sizeof target),
                 0);
    cr_expect_str_eq(target, "libx.so.1.2.3");
    struct stat st {};
    cr_expect_eq(stat((root + fx.path("pkg")).c_str(), &st), 0, "the way there is mirrored");
    cr_expect(S_ISDIR(st.st_mode));
    // Through an absolute symlink to a directory: the link points into the mirror.
    cr_assert_neq(w.mirror().materialise(w.tree(), fx.path("abs_pkg/ext.so")), kNoEntry);
    cr_expect_eq(slurp(root + fx.path("abs_pkg/ext.so")), slurp(fx.path("pkg/ext.so")));
    // Not libraries, or not there: nothing to load from the mirror.
    for (std::string path : {fx.path("pkg/mod.py"), fx.path("pkg/none.so"), fx.path("pkg"),
                             std::string("/etc/passwd")})
        cr_expect_eq(w.mirror().materialise(w.tree(), path), kNoEntry, "%s", path.c_str());
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

Test(mirror, private_directories_only) {
    char tmpl[] = "/tmp/pyimport-node-XXXXXX";
    std::string base = mkdtemp(tmpl);
    std::string user = base + "/pyimport-" + std::to_string(geteuid());
    cr_assert_eq(mkdir(user.c_str(), 0755), 0);
    std::string error;
    cr_expect_eq(open_user_directory(base, error), -1);
    cr_expect(error.find("not a directory private to this user") != std::string::npos, "%s",
              error.c_str());
    cr_assert_eq(chmod(user.c_str(), 0700), 0);
    cr_assert_eq(chown(user.c_str(), 65534, 65534), 0); // another user's, private to them
    cr_expect_eq(open_user_directory(base, error), -1, "another user's directory");
    rmdir(user.c_str());
    cr_assert_eq(symlink("/tmp", user.c_str()), 0);
    cr_expect_eq(open_user_directory(base, error), -1, "a symlink is never followed");
    unlink(user.c_str());
    int fd = open_user_directory(base, error);
    cr_expect_geq(fd, 0, "%s", error.c_str());
    struct stat st {};
    cr_expect_eq(stat(user.c_str(), &st), 0);
    cr_expect_eq(st.st_mode & 07777, 0700u);
    close(fd);
    rmdir(user.c_str());
    rmdir(base.c_str());
}

Test(mirror, the_last_process_removes_it_and_abandoned_ones_are_removed) {
    Wheel w;
    std::string job = w.mirror().job_dir();
    NodeMirror second;
    std::string error;
    cr_assert(second.join(job, error), "%s", error.c_str());
    w.mirror().leave();
    struct stat st {};
    cr_expect_eq(stat(job.c_str(), &st), 0, "another process still holds it");
    second.leave();
    cr_expect_neq(stat(job.c_str(), &st), 0, "the last one removed it");

    // Jobs left behind: one nobody holds (killed), one held, one being made.
    std::string user = w.node->user_dir();
    for (const char* name : {"job-1-dead", "job-2-alive", "new-3-young"})
        cr_assert_eq(mkdir((user + "/" + name).c_str(), 0700), 0);
    int held = open((user + "/job-2-alive").c_str(), O_RDONLY | O_DIRECTORY);
    cr_assert_eq(flock(held, LOCK_SH), 0);
    int user_fd = open(user.c_str(), O_RDONLY | O_DIRECTORY);
    cr_expect_eq(remove_abandoned_jobs(user_fd), 1);
    cr_expect_neq(stat((user + "/job-1-dead").c_str(), &st), 0);
    cr_expect_eq(stat((user + "/job-2-alive").c_str(), &st), 0);
    cr_expect_eq(stat((user + "/new-3-young").c_str(), &st), 0);
    close(held);
    close(user_fd);
}

Test(libraries, the_mirror_never_leads_out_of_itself) {
    // One more ".." than the path has: "/.." is "/" on the filesystem, but in
    // the mirror it is the job directory's parent, which others can write to.
    auto too_far = [](const Fixture& fx) {
        std::string up;
        for (size_t i = 0, n = std::count(fx.root.begin(), fx.root.end(), '/'); i <= n + 1; ++i)
            up += "../";
        return up;
    };
    Wheel w([&](const Fixture& fx) {
        std::string up = too_far(fx);
        build(fx, "pkg/esc.so", "int q(void) { return 1; }",
              "-Wl,-rpath,'$ORIGIN/" + up + "pkg.libs'");
        fx.link(up + fx.root.substr(1) + "/pkg.libs/libx.so.1.2.3", "pkg/libout.so");
    });
    const Fixture& fx = w.fx;
    cr_expect_eq(w.mirror().materialise(w.tree(), fx.path("pkg/libout.so")), kNoEntry);
    cr_expect_eq(w.mirror().materialise(w.tree(), "/.." + fx.path("pkg/ext.so")), kNoEntry);
    cr_expect_not(w.mirror().contained(w.tree(), fx.path("pkg/" + too_far(fx))));
    cr_expect(w.mirror().contained(w.tree(), fx.path("pkg/../pkg.libs")));
    auto libraries = w.libraries();
    cr_expect_not(libraries->prepare(fx.path("pkg/esc.so")));
    libraries->close();
}

Test(libraries, one_copy_per_file_and_none_of_what_the_filesystem_gave) {
    Wheel w([](const Fixture& fx) {
        cr_assert_eq(
            ::link(fx.path("pkg.libs/liby.so").c_str(), fx.path("pkg.libs/liby2.so").c_str()), 0);
    });
    const Fixture& fx = w.fx;
    const std::string& root = w.root;
    cr_assert_neq(w.mirror().materialise(w.tree(), fx.path("pkg.libs/liby.so")), kNoEntry);
    cr_assert_neq(w.mirror().materialise(w.tree(), fx.path("pkg.libs/liby2.so")), kNoEntry);
    struct stat a {
    }, b{};
    cr_assert_eq(stat((root + fx.path("pkg.libs/liby.so")).c_str(), &a), 0);
    cr_assert_eq(stat((root + fx.path("pkg.libs/liby2.so")).c_str(), &b), 0);
    cr_expect_eq(a.st_ino, b.st_ino, "hard links share one copy");

    // libx loaded from the filesystem, through a path outside the prefixes:
    // neither it nor what needs it may come from the mirror.
    char tmpl[] = "/tmp/pyimport-alias-XXXXXX";
    std::string alias = std::string(mkdtemp(tmpl)) + "/libs";
    cr_assert_eq(symlink(fx.path("pkg.libs").c_str(), alias.c_str()), 0);
    auto libraries = w.libraries();
    void* handle = dlopen((alias + "/libx.so.1.2.3").c_str(), RTLD_NOW);
    cr_assert(handle, "%s", dlerror());
    std::string local;
    cr_expect_not(libraries->redirect(fx.path("pkg.libs/libx.so.1").c_str(), RTLD_NOW, local));
    cr_expect_not(libraries->prepare(fx.path("pkg/ext.so")));
    dlclose(handle);
    libraries->close();
    unlink(alias.c_str());
    rmdir(alias.substr(0, alias.size() - 5).c_str());
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
    uint32_t dropped = 0;
    options.libraries_over_budget = &dropped;
    Built built(options);
    cr_expect_eq(dropped, 1u);
    pyimport::Resolution lib = built.resolve(fx.path("big/libbig.so"));
    cr_assert_eq(lib.kind, pyimport::Resolution::Found);
    cr_expect_not(built.snapshot.entry(lib.entry).flags & kHasContent);
    pyimport::Resolution mod = built.resolve(fx.path("big/m49.py"));
    cr_assert_eq(mod.kind, pyimport::Resolution::Found);
    cr_expect(built.snapshot.entry(mod.entry).flags & kHasContent);
    cr_expect_eq(std::string(built.snapshot.content(mod.entry), 8 * 1024),
                 std::string(8 * 1024, '#'));
}
