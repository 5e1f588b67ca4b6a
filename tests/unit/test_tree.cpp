// The index and path resolution, against what the kernel says about the
// same paths.
#include "fixture.hpp"
#include "serve/tree.hpp"

#include <cerrno>
#include <criterion/criterion.h>
#include <cstring>
#include <dirent.h>
#include <sys/stat.h>

using namespace pyimport;

namespace {
BuildOptions python_options(const Fixture& fx) {
    BuildOptions o = fixture_options(fx);
    o.content_suffixes = {".py"};
    return o;
}

struct Loaded {
    Fixture fx;
    Built built{python_options(fx)};
    Snapshot& snapshot = built.snapshot;
    std::unique_ptr<Tree>& tree = built.tree;
};

// Resolves like stat/lstat and checks the answer against the kernel's.
void expect_like_kernel(Loaded& l, const Position& base, const std::string& path, bool follow,
                        const char* real_path) {
    l.built.expect_like_kernel(base, path, follow, real_path);
}
} // namespace

Test(tree, absolute_paths_like_the_kernel) {
    Loaded l;
    const std::string R = l.fx.root;
    for (std::string rel : {"pkg",
                            "pkg/",
                            "pkg/mod.py",
                            "pkg//mod.py",
                            "pkg/./mod.py",
                            "pkg/sub/../mod.py",
                            "pkg/mod.py/",
                            "pkg/mod.py/x",
                            "pkg/mod.py/.",
                            "pkg/absent",
                            "pkg/absent/x",
                            "pkg/to_sub",
                            "pkg/to_sub/",
                            "pkg/to_sub/deep.py",
                            "pkg/to_sub/../mod.py",
                            "pkg/sub/up",
                            "pkg/dangling",
                            "pkg/dangling/",
                            "pkg/loop_a",
                            "pkg/loop_a/x",
                            "abs_pkg/mod.py",
                            "abs_pkg/to_sub/deep.py",
                            "pkg/empty.py",
                            ".",
                            "./pkg/../pkg",
                            "pkg/lslash",
                            "pkg/lslash/",
                            "pkg/lwalk/deep.py"}) {
        std::string p = R + "/" + rel;
        expect_like_kernel(l, Position{}, p, true, p.c_str());
        expect_like_kernel(l, Position{}, p, false, p.c_str());
    }
}

Test(tree, relative_paths_from_a_directory) {
    Loaded l;
    Position base;
    cr_assert(l.tree->locate(l.fx.path("pkg/sub"), base));
    cr_assert_neq(base.entry, kNoEntry);
    cr_assert_eq(chdir(l.fx.path("pkg/sub").c_str()), 0);
    for (std::string rel : {"deep.py", "up", "../mod.py", "../../pkg/sub/deep.py", "./nothing",
                            "../to_sub/deep.py", "deep.py/"})
        expect_like_kernel(l, base, rel, true, rel.c_str());
    cr_assert_eq(chdir("/"), 0);
}

Test(tree, outside_the_roots_is_forwarded) {
    Loaded l;
    cr_expect_eq(l.tree->resolve(Position{}, "/etc/passwd", true).kind, Resolution::Forward);
    cr_expect_eq(l.tree->resolve(Position{}, l.fx.root + "/..", true).kind, Resolution::Forward);
    cr_expect_eq(l.tree->resolve(Position{}, l.fx.root + "/../x", true).kind, Resolution::Forward);
    // Back into the root from its parent is still answered.
    std::string base = l.fx.root.substr(l.fx.root.rfind('/') + 1);
    Resolution r = l.tree->resolve(Position{}, l.fx.root + "/../" + base + "/pkg/mod.py", true);
    cr_expect_eq(r.kind, Resolution::Found);
    Position pos;
    cr_expect(!l.tree->locate("/etc", pos));
    cr_expect(l.tree->locate("/tmp", pos)); // an ancestor of the root
    cr_expect_eq(pos.entry, kNoEntry);
}

Test(tree, long_expansions_are_not_too_long) {
    // The kernel limits the caller's string, not what symlinks expand to.
    Loaded l;
    std::string p = l.fx.path("pkg/lwalk/");
    while (p.size() < 4060)
        p += "./";
    p += "deep.py";
    expect_like_kernel(l, Position{}, p, true, p.c_str());
}

Test(tree, errors_for_long_names) {
    Loaded l;
    std::string long_name(300, 'a');
    Resolution r = l.tree->resolve(Position{}, l.fx.path("pkg/") + long_name, true);
    cr_expect_eq(r.kind, Resolution::Failed);
    cr_expect_eq(r.error, ENAMETOOLONG);
    cr_expect_eq(l.tree->resolve(Position{}, "", true).error, ENOENT);
}

Test(tree, changes_are_answered_by_the_filesystem) {
    Loaded l;
    std::string mod = l.fx.path("pkg/mod.py");
    std::string fresh = l.fx.path("pkg/fresh.py");
    cr_expect_eq(l.tree->resolve(Position{}, fresh, true).error, ENOENT);
    l.tree->invalidate(Position{}, fresh, true); // created
    cr_expect_eq(l.tree->resolve(Position{}, fresh, true).kind, Resolution::Forward);
    cr_expect_eq(l.tree->resolve(Position{}, l.fx.path("pkg"), true).kind, Resolution::Forward,
                 "the directory's listing and times changed");
    cr_expect_eq(l.tree->resolve(Position{}, mod, true).kind, Resolution::Found,
                 "siblings are still served");
    l.tree->invalidate(Position{}, mod, true); // rewritten
    cr_expect_eq(l.tree->resolve(Position{}, mod, true).kind, Resolution::Forward);
    // Renaming a directory drops everything below it.
    l.tree->invalidate(Position{}, l.fx.path("pkg/sub"), false);
    cr_expect_eq(l.tree->resolve(Position{}, l.fx.path("pkg/sub/deep.py"), true).kind,
                 Resolution::Forward);
    cr_expect_eq(l.tree->resolve(Position{}, l.fx.path("pkg/to_sub/deep.py"), true).kind,
                 Resolution::Forward);
    // A change of a prefix itself (its parent is outside the snapshot).
    cr_expect(l.tree->invalidate(Position{}, l.fx.root, false));
    cr_expect_eq(l.tree->resolve(Position{}, l.fx.root, true).kind, Resolution::Forward);
    // Outside the roots: nothing to mark, and the caller is told so.
    cr_expect(!l.tree->invalidate(Position{}, "/etc/hostname-pyimport-test", false));
    // Writing through a symlink changes its target.
    Loaded m;
    m.tree->invalidate(Position{}, m.fx.path("pkg/sub/up"), true);
    cr_expect_eq(m.tree->resolve(Position{}, m.fx.path("pkg/mod.py"), true).kind,
                 Resolution::Forward);
}

// A file that is not a module (PYIMPORT_STAT) is listed but not stat'ed: its
// calls are forwarded, and a path through it fails as the kernel's does.
Test(tree, data_files_are_listed_but_forwarded) {
    Loaded l;
    const std::string R = l.fx.root;
    Resolution r = l.tree->resolve(Position{}, R + "/pkg/data.bin", true);
    cr_expect_eq(r.kind, Resolution::Forward);
    for (std::string rel : {"pkg/data.bin/", "pkg/data.bin/x", "pkg/data.bin/."})
        expect_like_kernel(l, Position{}, R + "/" + rel, true, (R + "/" + rel).c_str());
    const ListingItem* item = l.built.listed(R + "/pkg", "data.bin");
    cr_assert(item, "data.bin missing from the listing");
    cr_expect(l.snapshot.entry(item->entry).flags & kNoStat);
    cr_expect_eq(item->type, DT_REG);
}

Test(tree, star_caches_every_stat) {
    Fixture fx;
    BuildOptions o = fixture_options(fx);
    o.stat_suffixes = {"*"};
    Built b(o);
    const Snapshot& s = b.snapshot;
    Resolution r = b.resolve(fx.path("pkg/data.bin"));
    cr_assert_eq(r.kind, Resolution::Found);
    struct stat st {};
    cr_assert_eq(stat((fx.root + "/pkg/data.bin").c_str(), &st), 0);
    cr_expect_eq(s.entry(r.entry).st.ino, st.st_ino);
    cr_expect_eq(s.entry(r.entry).st.size, static_cast<uint64_t>(st.st_size));
}

// An excluded directory (PYIMPORT_EXCLUDE) is listed in its parent but not
// walked: it and everything under it go to the filesystem.
Test(tree, excluded_directories_are_forwarded) {
    Fixture fx;
    BuildOptions o = python_options(fx);
    o.exclude = {"sub"};
    Built b(o);
    const Tree& tree = *b.tree;
    for (std::string rel : {"pkg/sub", "pkg/sub/", "pkg/sub/deep.py", "pkg/sub/absent",
                            "pkg/to_sub/deep.py", "pkg/sub/up"})
        cr_expect_eq(tree.resolve(Position{}, fx.root + "/" + rel, true).kind, Resolution::Forward,
                     "%s was answered", rel.c_str());
    Resolution mod = tree.resolve(Position{}, fx.root + "/pkg/mod.py", true);
    cr_expect_eq(mod.kind, Resolution::Found);
    const ListingItem* item = b.listed(fx.path("pkg"), "sub");
    cr_assert(item, "sub missing from the listing");
    cr_expect_eq(item->type, DT_DIR);
}
