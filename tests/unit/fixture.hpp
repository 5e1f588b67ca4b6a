// A small directory tree built in a fresh temporary directory, for unit tests
// that compare the snapshot with the real filesystem.
#pragma once

#include "image/image.hpp"
#include "image/walk.hpp"
#include "serve/tree.hpp"

#include <cerrno>
#include <criterion/criterion.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

struct Fixture {
    std::string root;

    Fixture() {
        char tmpl[] = "/tmp/pyimport-unit-XXXXXX";
        root = mkdtemp(tmpl);
        dir("pkg");
        dir("pkg/sub");
        dir("pkg/__pycache__");
        file("pkg/__init__.py", "x = 1\n");
        file("pkg/__pycache__/__init__.cpython-311.pyc", "bytecode");
        file("pkg/mod.py", "y = 2\n");
        file("pkg/data.bin", "binary");
        file("pkg/empty.py", "");
        file("pkg/sub/deep.py", "z = 3\n");
        link("sub", "pkg/to_sub");
        link("../mod.py", "pkg/sub/up");
        link("missing", "pkg/dangling");
        link("mod.py/", "pkg/lslash"); // a target ending in a slash
        link("sub/../sub/../sub", "pkg/lwalk");
        link("loop_b", "pkg/loop_a");
        link("loop_a", "pkg/loop_b");
        link(root + "/pkg", "abs_pkg");
    }
    ~Fixture() {
        std::string cmd = "rm -rf '" + root + "'";
        int ignored = std::system(cmd.c_str());
        (void)ignored;
    }
    std::string path(const std::string& rel) const { return rel.empty() ? root : root + "/" + rel; }
    void dir(const std::string& rel) const { mkdir(path(rel).c_str(), 0755); }
    void file(const std::string& rel, const std::string& text) const {
        FILE* f = std::fopen(path(rel).c_str(), "w");
        std::fwrite(text.data(), 1, text.size(), f);
        std::fclose(f);
    }
    void link(const std::string& target, const std::string& rel) const {
        int ignored = symlink(target.c_str(), path(rel).c_str());
        (void)ignored;
    }
};

// Options that snapshot the fixture (its root, required; 1 MiB budget).
inline pyimport::BuildOptions fixture_options(const Fixture& fx) {
    pyimport::BuildOptions o;
    o.prefixes = {fx.root};
    o.prefixes_required = true;
    o.max_bytes = 1 << 20;
    return o;
}

// A snapshot built with `options`, attached and indexed (asserting each step).
struct Built {
    std::vector<char> image;
    pyimport::Snapshot snapshot;
    std::unique_ptr<pyimport::Tree> tree;
    explicit Built(const pyimport::BuildOptions& options) {
        std::string error;
        cr_assert(pyimport::build_snapshot(options, image, error), "%s", error.c_str());
        cr_assert(snapshot.attach(image.data(), image.size(), error), "%s", error.c_str());
        tree = std::make_unique<pyimport::Tree>(snapshot);
    }
    pyimport::Resolution resolve(const std::string& path, bool follow = true) const {
        return tree->resolve(pyimport::Position{}, path, follow);
    }
    // Resolves `path` from `base` like stat (`follow`) or lstat and compares
    // the answer with the kernel's on `real_path`: found with the same inode
    // and mode, or failed with the same errno; never forwarded.
    void expect_like_kernel(const pyimport::Position& base, const std::string& path, bool follow,
                            const std::string& real_path) const {
        pyimport::Resolution r = tree->resolve(base, path, follow);
        struct stat st {};
        int rc = follow ? stat(real_path.c_str(), &st) : lstat(real_path.c_str(), &st);
        int e = errno;
        cr_assert_neq(r.kind, pyimport::Resolution::Forward, "%s was forwarded", path.c_str());
        if (rc == 0) {
            cr_expect_eq(r.kind, pyimport::Resolution::Found, "%s: kernel found it (error %d)",
                         path.c_str(), r.error);
            if (r.kind != pyimport::Resolution::Found) return;
            const pyimport::StatRecord& rec =
                r.followed ? snapshot.followed(r.entry) : snapshot.entry(r.entry).st;
            cr_expect_eq(rec.ino, st.st_ino, "%s: other inode", path.c_str());
            cr_expect_eq(rec.mode, st.st_mode, "%s: other mode", path.c_str());
        } else {
            cr_expect_eq(r.kind, pyimport::Resolution::Failed, "%s: kernel said %s", path.c_str(),
                         strerror(e));
            cr_expect_eq(r.error, e, "%s: %s vs kernel %s", path.c_str(), strerror(r.error),
                         strerror(e));
        }
    }
    void expect_like_kernel(const std::string& path, bool follow) const {
        expect_like_kernel(pyimport::Position{}, path, follow, path);
    }
    // The listing item named `name` in directory `path`, or nullptr.
    const pyimport::ListingItem* listed(const std::string& path, std::string_view name) const {
        pyimport::Resolution dir = resolve(path);
        cr_assert_eq(dir.kind, pyimport::Resolution::Found, "%s", path.c_str());
        for (uint32_t i = 0; i < snapshot.entry(dir.entry).listing_count; ++i) {
            const pyimport::ListingItem& item = snapshot.listing(dir.entry)[i];
            if (item.entry != pyimport::kNoEntry && snapshot.name(item.entry) == name) return &item;
        }
        return nullptr;
    }
};
