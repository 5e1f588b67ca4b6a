// Encoding and decoding of the snapshot image, checked against the real files.
#include "fixture.hpp"
#include "image/image.hpp"

#include <criterion/criterion.h>
#include <cstring>
#include <dirent.h>
#include <sys/stat.h>
#include <vector>

using namespace pyimport;

namespace {
BuildOptions options_for(const Fixture& fx) {
    BuildOptions o = fixture_options(fx);
    o.content_suffixes = {".py", ".pyc"};
    o.cache_tag = "cpython-311";
    return o;
}

uint32_t find(const Snapshot& s, const std::string& path) {
    for (uint32_t i = 0; i < s.entry_count(); ++i)
        if (s.path(i) == path) return i;
    return kNoEntry;
}
// Builds the fixture's image and attaches a view to it (asserting both work).
void build_and_attach(const Fixture& fx, std::vector<char>& image, Snapshot& s) {
    std::string error;
    cr_assert(build_snapshot(options_for(fx), image, error), "%s", error.c_str());
    cr_assert(s.attach(image.data(), image.size(), error), "%s", error.c_str());
}
} // namespace

Test(snapshot, round_trip_matches_real_stat) {
    Fixture fx;
    std::vector<char> image;
    Snapshot s;
    build_and_attach(fx, image, s);
    cr_expect_eq(s.root_count(), 1u);
    for (const char* rel : {"", "pkg", "pkg/sub", "pkg/mod.py", "pkg/empty.py", "pkg/to_sub",
                            "pkg/dangling", "pkg/loop_a", "abs_pkg", "pkg/sub/deep.py"}) {
        uint32_t i = find(s, fx.path(rel));
        cr_assert_neq(i, kNoEntry, "missing %s", rel);
        struct stat real {
        }, served{};
        cr_assert_eq(lstat(fx.path(rel).c_str(), &real), 0);
        to_stat(s.entry(i).st, served);
        cr_expect_eq(std::memcmp(&real, &served, sizeof real), 0, "stat differs for '%s'", rel);
    }
}

Test(snapshot, listing_contents_and_links) {
    Fixture fx;
    std::vector<char> image;
    Snapshot s;
    build_and_attach(fx, image, s);
    uint32_t pkg = find(s, fx.path("pkg"));
    const Entry& e = s.entry(pkg);
    cr_assert(e.flags & kHasListing);
    // The listing holds ".", ".." and every name, in readdir order.
    DIR* d = opendir(fx.path("pkg").c_str());
    std::vector<std::string> real_names;
    while (struct dirent* de = readdir(d))
        real_names.emplace_back(de->d_name);
    closedir(d);
    cr_assert_eq(real_names.size(), e.listing_count);
    for (uint32_t k = 0; k < e.listing_count; ++k) {
        const ListingItem& item = s.listing(pkg)[k];
        std::string name = item.dots == 1   ? "."
                           : item.dots == 2 ? ".."
                                            : std::string(s.name(item.entry));
        cr_expect(name == real_names[k], "item %u: %s vs %s", k, name.c_str(),
                  real_names[k].c_str());
    }
    uint32_t mod = find(s, fx.path("pkg/mod.py"));
    cr_expect(s.entry(mod).flags & kHasContent, ".py without bytecode is cached");
    cr_expect(std::string(s.content(mod), s.entry(mod).content_len) == "y = 2\n");
    uint32_t init = find(s, fx.path("pkg/__init__.py"));
    cr_expect(!(s.entry(init).flags & kHasContent), ".py with bytecode is not read");
    uint32_t pyc = find(s, fx.path("pkg/__pycache__/__init__.cpython-311.pyc"));
    cr_expect(std::string(s.content(pyc), s.entry(pyc).content_len) == "bytecode");
    uint32_t bin = find(s, fx.path("pkg/data.bin"));
    cr_expect(!(s.entry(bin).flags & kHasContent), "other files: metadata only");
    uint32_t link = find(s, fx.path("pkg/to_sub"));
    cr_expect(s.link_target(link) == "sub");
}

Test(snapshot, corruption_is_detected) {
    Fixture fx;
    std::vector<char> image;
    std::string error;
    cr_assert(build_snapshot(options_for(fx), image, error));
    Snapshot s;
    std::vector<char> bad = image;
    bad[bad.size() / 2] ^= 1;
    cr_expect(!s.attach(bad.data(), bad.size(), error));
    cr_expect(error.find("checksum") != std::string::npos, "%s", error.c_str());
    cr_expect(!s.attach(image.data(), image.size() - 1, error));
    cr_expect(!s.attach(image.data(), 10, error));
    bad = image;
    bad[0] = 'X';
    cr_expect(!s.attach(bad.data(), bad.size(), error));
    cr_expect(error.find("magic") != std::string::npos);
}

Test(snapshot, faults_give_one_line_reasons) {
    Fixture fx;
    std::vector<char> image;
    std::string error;
    BuildOptions o = options_for(fx);
    o.prefixes = {fx.path("does-not-exist")};
    cr_expect(!build_snapshot(o, image, error));
    cr_expect(error.find("does-not-exist") != std::string::npos, "%s", error.c_str());

    o.prefixes_required = false; // default prefixes: missing ones are skipped
    o.prefixes = {fx.path("does-not-exist"), fx.path("pkg")};
    cr_expect(build_snapshot(o, image, error), "%s", error.c_str());
}

// A budget is never a fault: past it files keep their stat and only their
// bytes are left to the filesystem, the small ones cached first.
Test(snapshot, a_small_budget_caches_the_small_files_and_every_stat) {
    Fixture fx;
    fx.file("pkg/big.pyc", std::string(4000, 'b'));
    BuildOptions o = options_for(fx);
    o.max_bytes = 1000; // less than the metadata alone
    NotCached past;
    o.not_cached = &past;
    Built b(o);
    Built full(options_for(fx));
    cr_expect_eq(b.snapshot.entry_count(), full.snapshot.entry_count());
    cr_expect_eq(b.snapshot.header().listing_count, full.snapshot.header().listing_count);
    for (uint32_t i = 0; i < full.snapshot.entry_count(); ++i) {
        const Entry& e = b.snapshot.entry(i);
        const Entry& f = full.snapshot.entry(i);
        cr_expect(e.st.ino == f.st.ino && e.st.size == f.st.size && e.st.mode == f.st.mode &&
                      (e.flags & ~kHasContent) == (f.flags & ~kHasContent),
                  "%s: same metadata", b.snapshot.path(i).c_str());
    }
    Resolution big = b.resolve(fx.path("pkg/big.pyc"));
    cr_assert_eq(big.kind, Resolution::Found);
    cr_expect_not(b.snapshot.entry(big.entry).flags & kHasContent);
    cr_expect_eq(b.snapshot.entry(big.entry).st.size, 4000u);
    Resolution mod = b.resolve(fx.path("pkg/mod.py"));
    cr_assert_eq(mod.kind, Resolution::Found);
    cr_expect(b.snapshot.entry(mod.entry).flags & kHasContent, "a small file is cached");
    cr_expect_eq(past.files, 1u);
    cr_expect_eq(past.bytes, 4000u);
    cr_expect_eq(past.libraries, 0u);
}

Test(snapshot, nested_prefixes_are_walked_once) {
    Fixture fx;
    BuildOptions o = options_for(fx);
    o.prefixes = {fx.path("pkg/sub"), fx.root, fx.path("pkg")};
    cr_expect_eq(Built(o).snapshot.root_count(), 1u);
}

// More subdirectories than the walk keeps open: the rest are reopened when
// walked, and all are listed.
Test(snapshot, wide_directories_are_walked_whole) {
    Fixture fx;
    fx.dir("wide");
    for (int i = 0; i < 300; ++i) {
        std::string d = "wide/d" + std::to_string(i);
        fx.dir(d);
        fx.file(d + "/m.py", "x = 1\n");
    }
    Built b(options_for(fx));
    for (int i = 0; i < 300; i += 37) {
        std::string d = fx.path("wide/d" + std::to_string(i));
        pyimport::Resolution dir = b.resolve(d);
        cr_assert_eq(dir.kind, pyimport::Resolution::Found, "%s", d.c_str());
        cr_expect(b.snapshot.entry(dir.entry).flags & kHasListing, "%s not listed", d.c_str());
        cr_expect_eq(b.resolve(d + "/m.py").kind, pyimport::Resolution::Found);
        cr_expect_eq(b.resolve(d + "/absent.py").kind, pyimport::Resolution::Failed);
    }
}

// An image whose parents loop (damaged, then checksummed again) made
// Snapshot::path loop for ever; found by fuzz_image. attach refuses it.
Test(snapshot, parents_that_loop_are_refused) {
    Fixture fx;
    std::vector<char> image;
    std::string error;
    cr_assert(build_snapshot(options_for(fx), image, error));
    auto* header = reinterpret_cast<Header*>(image.data());
    uint32_t last = header->entry_count - 1;
    auto parent_of = [&](std::vector<char>& bytes, uint32_t i) -> uint32_t& {
        return reinterpret_cast<Entry*>(bytes.data() + header->entries_off)[i].parent;
    };
    struct Case {
        uint32_t entry, parent;
        const char* what;
    };
    const Case cases[] = {{last, last, "a non-root its own parent"},
                          {last - 1, last, "a non-root whose parent comes later"},
                          {last, kNoEntry, "a non-root without a parent"},
                          {0, last, "a root with a parent"}};
    for (const Case& c : cases) {
        std::vector<char> bad = image;
        parent_of(bad, c.entry) = c.parent;
        auto* h = reinterpret_cast<Header*>(bad.data());
        h->checksum = checksum(bad.data() + sizeof(Header), bad.size() - sizeof(Header));
        Snapshot s;
        cr_expect_not(s.attach(bad.data(), bad.size(), error), "%s", c.what);
    }
    Snapshot good;
    cr_expect(good.attach(image.data(), image.size(), error), "%s", error.c_str());
}
