// Writes fuzz_image's seeds: real images (build_snapshot) of a small
// directory tree made in a fresh temporary directory, with the options that
// give the format's features (contents, stat-only and name-only entries,
// symlinks in and out of the prefixes, several roots, a profile, libraries).
//
//   make_image_seeds <output directory>
#include "image/walk.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_set>
#include <vector>

using namespace pyimport;

namespace {

std::string g_root;

void dir(const std::string& rel) {
    if (mkdir((g_root + "/" + rel).c_str(), 0755) != 0) std::perror(rel.c_str()), std::exit(1);
}
void file(const std::string& rel, const std::string& text) {
    FILE* f = std::fopen((g_root + "/" + rel).c_str(), "w");
    if (!f || std::fwrite(text.data(), 1, text.size(), f) != text.size() || std::fclose(f) != 0)
        std::perror(rel.c_str()), std::exit(1);
}
void symlink_at(const std::string& target, const std::string& rel) {
    if (symlink(target.c_str(), (g_root + "/" + rel).c_str()) != 0)
        std::perror(rel.c_str()), std::exit(1);
}

void write_seed(const std::string& out, const char* name, const BuildOptions& options) {
    std::vector<char> image;
    std::string error;
    if (!build_snapshot(options, image, error)) {
        std::fprintf(stderr, "%s: %s\n", name, error.c_str());
        std::exit(1);
    }
    std::string path = out + "/" + name;
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(image.data(), 1, image.size(), f) != image.size() || std::fclose(f) != 0)
        std::perror(path.c_str()), std::exit(1);
    std::printf("%s: %zu bytes\n", path.c_str(), image.size());
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <output directory>\n", argv[0]);
        return 2;
    }
    char tmpl[] = "/tmp/pyimport-seeds-XXXXXX";
    if (!mkdtemp(tmpl)) return std::perror("mkdtemp"), 1;
    g_root = tmpl;
    dir("a");
    dir("a/pkg");
    dir("a/pkg/__pycache__");
    dir("a/pkg/tests");
    dir("a/pkg/empty");
    file("a/pkg/__init__.py", "x = 1\n");
    file("a/pkg/__pycache__/__init__.cpython-311.pyc", "bytecode");
    file("a/pkg/mod.py", "y = 2\n");
    file("a/pkg/data.bin", "binary");
    file("a/pkg/_ext.so", "not really ELF");
    file("a/pkg/libz.so.1.2", "nor this");
    file("a/pkg/tests/test_mod.py", "");
    file("a/site.pth", "pkg\n");
    symlink_at("pkg", "a/to_pkg");
    symlink_at("../mod.py", "a/pkg/empty/up");
    symlink_at("missing", "a/pkg/dangling");
    symlink_at("mod.py/", "a/pkg/slash");
    symlink_at("loop2", "a/pkg/loop1");
    symlink_at("loop1", "a/pkg/loop2");
    symlink_at("/", "a/outside"); // followed: its target's stat is recorded
    dir("b");
    file("b/one.py", "1\n");
    symlink_at("../a/pkg", "b/into_a");

    BuildOptions o;
    o.prefixes = {g_root + "/a"};
    o.prefixes_required = true;
    o.content_suffixes = {".py", ".pyc", ".pth"};
    o.stat_suffixes = {".so"};
    o.exclude = {"tests"};
    o.max_bytes = 1 << 20;
    o.cache_tag = "cpython-311";
    write_seed(argv[1], "one-prefix.img", o);

    o.prefixes = {g_root + "/a", g_root + "/b", g_root + "/missing"};
    o.prefixes_required = false;
    o.stat_suffixes = {"*"};
    o.libraries = true;
    write_seed(argv[1], "two-prefixes-libraries.img", o);

    std::unordered_set<std::string> profile = {g_root + "/a/pkg/mod.py", g_root + "/a/pkg/gone.py",
                                               g_root + "/a/site.pth"};
    o.prefixes = {g_root + "/a"};
    o.profile = &profile;
    write_seed(argv[1], "profile.img", o);

    // Partial roots (probes present, absent, below a missing directory, a
    // directory) and a live root.
    o.profile = nullptr;
    o.prefixes = {g_root + "/a/pkg"};
    o.probes = {{g_root + "/a/site.pth", true},
                {g_root + "/a/absent.cfg", true},
                {g_root + "/a/nodir/Setup.local", false},
                {g_root + "/a/to_pkg", false},
                {g_root + "/a", false}};
    o.live_roots = {g_root + "/b"};
    write_seed(argv[1], "partial-live.img", o);
    o.probes.clear();
    o.live_roots.clear();

    o.prefixes = {g_root + "/a/pkg/empty"};
    o.content_suffixes.clear();
    write_seed(argv[1], "small.img", o);

    std::string cmd = "rm -rf '" + g_root + "'";
    return std::system(cmd.c_str()) == 0 ? 0 : 1;
}
