// Shared by the library suites (elf, mirror, libraries): shared libraries gcc
// builds for each test, the layout of a wheel, and a node-local mirror of it.
#pragma once

#include "fixture.hpp"
#include "loader/libraries.hpp"
#include "loader/mirror.hpp"

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

// Builds a shared library at fx.path(rel) from `source` with extra flags.
inline void build(const Fixture& fx, const std::string& rel, const std::string& source,
                  const std::string& flags = "") {
    std::string src = fx.path(rel) + ".c";
    fx.file(rel + ".c", source);
    std::string cmd = "cc -shared -fPIC -o '" + fx.path(rel) + "' '" + src + "' " + flags;
    cr_assert_eq(std::system(cmd.c_str()), 0, "%s", cmd.c_str());
    unlink(src.c_str());
}

inline std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

// The layout of a wheel: an extension that finds its library through
// $ORIGIN/../pkg.libs, and that library's dependency through a soname symlink.
inline void make_wheel(const Fixture& fx) {
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

inline pyimport::BuildOptions library_options(const Fixture& fx) {
    pyimport::BuildOptions o = fixture_options(fx);
    o.libraries = true;
    o.stat_suffixes = {"*"};
    return o;
}

// A mirror in a fresh node directory, removed with it.
struct Node {
    std::string base;
    std::unique_ptr<pyimport::NodeMirror> mirror = std::make_unique<pyimport::NodeMirror>();
    explicit Node(const pyimport::Snapshot& snapshot) {
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

    const pyimport::Tree& tree() const { return *built->tree; }
    pyimport::NodeMirror& mirror() const { return *node->mirror; }
    // The mirror handed over, as the runtime does.
    std::unique_ptr<pyimport::Libraries> libraries() {
        return std::make_unique<pyimport::Libraries>(tree(), std::move(node->mirror));
    }
};
