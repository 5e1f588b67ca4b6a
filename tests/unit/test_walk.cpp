// The walk's bookkeeping when it gives up a directory halfway (a statx fails
// between readdir and the end of the listing): nothing of the children made so
// far may stay in the image, and later evictions past the budget must not
// touch them. And the budget itself: metadata always, contents as far as
// PYIMPORT_MAX_BYTES goes, small files first.
#include "base/real.hpp"
#include "fixture.hpp"
#include "image/image.hpp"

#include <cerrno>
#include <criterion/criterion.h>
#include <cstring>
#include <dirent.h>
#include <dlfcn.h>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <vector>

using namespace pyimport;

namespace {

std::string failing_name; // the walk's statx of this name fails with ENOENT

int failing_statx(int dirfd, const char* path, int flags, unsigned mask, struct statx* out) {
    static auto real_statx = reinterpret_cast<real::statx_fn>(dlsym(RTLD_NEXT, "statx"));
    if (path && failing_name == path) {
        errno = ENOENT;
        return -1;
    }
    return real_statx(dirfd, path, flags, mask, out);
}

// While it lives, the walk's statx of `name` fails (as if the file vanished).
struct FailingStatx {
    explicit FailingStatx(const std::string& name) {
        failing_name = name;
        cr_assert(real::substitute("statx", reinterpret_cast<void*>(&failing_statx)));
    }
    ~FailingStatx() {
        real::substitute("statx", nullptr);
        failing_name.clear();
    }
    FailingStatx(const FailingStatx&) = delete;
    FailingStatx& operator=(const FailingStatx&) = delete;
};

std::vector<std::string> readdir_order(const std::string& dir) {
    std::vector<std::string> names;
    DIR* d = opendir(dir.c_str());
    cr_assert(d, "%s", dir.c_str());
    while (struct dirent* e = readdir(d))
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
            names.emplace_back(e->d_name);
    closedir(d);
    return names;
}

size_t position(const std::vector<std::string>& names, const std::string& name) {
    for (size_t i = 0; i < names.size(); ++i)
        if (names[i] == name) return i;
    cr_assert_fail("%s not listed", name.c_str());
    return 0;
}

// Adds symlinks to `dir` until one comes after every name of `before` in
// readdir order (which the walk follows), and returns its name. The walk
// stats a symlink by name, which is where FailingStatx strikes.
std::string link_listed_after(const Fixture& fx, const std::string& dir,
                              const std::vector<std::string>& before) {
    for (int i = 0; i < 200; ++i) {
        std::string name = "l" + std::to_string(i);
        fx.link(name, dir + "/" + name);
        std::vector<std::string> order = readdir_order(fx.path(dir));
        bool after_all = true;
        for (const std::string& b : before)
            after_all = after_all && position(order, b) < position(order, name);
        if (after_all) return name;
    }
    cr_assert_fail("no symlink listed after the others in %s", dir.c_str());
    return {};
}

std::string contents_of(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

BuildOptions options_for(const Fixture& fx, const std::vector<std::string>& roots,
                         uint64_t max_bytes) {
    BuildOptions o = fixture_options(fx);
    o.prefixes.clear();
    for (const std::string& r : roots)
        o.prefixes.push_back(fx.path(r));
    o.content_suffixes = {".py", ".pyc"};
    o.libraries = true;
    o.max_bytes = max_bytes;
    return o;
}

// The image holds nothing but what its entries refer to: each entry with
// content has exactly its file's bytes, and the data, strings and follow
// records are those of the entries and no more.
void expect_no_orphans(const Snapshot& s) {
    uint64_t content = 0, strings = 0;
    uint32_t follows = 0;
    for (uint32_t i = 0; i < s.entry_count(); ++i) {
        const Entry& e = s.entry(i);
        strings += e.name_len + e.link_len;
        if (e.follow != kNoEntry) ++follows;
        if (!(e.flags & kHasContent)) continue;
        content += e.content_len;
        cr_expect(std::string(s.content(i), e.content_len) == contents_of(s.path(i)),
                  "content of %s is not its file's", s.path(i).c_str());
    }
    cr_expect_eq(s.header().data_size, content, "data %lu bytes, entries' content %lu",
                 static_cast<unsigned long>(s.header().data_size),
                 static_cast<unsigned long>(content));
    cr_expect_eq(s.header().strings_size, strings, "strings %lu bytes, entries' %lu",
                 static_cast<unsigned long>(s.header().strings_size),
                 static_cast<unsigned long>(strings));
    cr_expect_eq(s.header().follow_count, follows);
}

// The abandoned directory `dir`: not listed, so lookups inside are forwarded.
void expect_unlisted(const Built& b, const Fixture& fx, const std::string& dir,
                     const std::vector<std::string>& children) {
    Resolution d = b.resolve(fx.path(dir));
    cr_assert_eq(d.kind, Resolution::Found, "%s", dir.c_str());
    cr_expect(!(b.snapshot.entry(d.entry).flags & kHasListing), "%s has a half listing",
              dir.c_str());
    for (const std::string& child : children)
        cr_expect_eq(b.resolve(fx.path(dir + "/" + child), false).kind, Resolution::Forward,
                     "%s/%s", dir.c_str(), child.c_str());
}

// Root "a": a cached library and a symlink out of the prefixes, then a
// symlink whose statx fails. Returns the failing name.
std::string abandoned_directory(const Fixture& fx, size_t library_bytes) {
    fx.dir("a");
    fx.file("a/libx.so", std::string(library_bytes, 'L'));
    fx.file("outside", "outside the prefixes");
    fx.link(fx.path("outside"), "a/out");
    return link_listed_after(fx, "a", {"libx.so", "out"});
}

constexpr size_t kKiB = 1024;

} // namespace

// The library's entry index, reused by root "b"'s files after "a" was given
// up, must not lose its content to an eviction meant for the library.
Test(walk, abandoned_listing_then_budget_overflow) {
    Fixture fx;
    std::string fails = abandoned_directory(fx, 200 * kKiB);
    size_t library_at = position(readdir_order(fx.path("a")), "libx.so");
    fx.dir("b");
    const int modules = 40;
    cr_assert_lt(library_at, static_cast<size_t>(modules), "the library's index is reused in b");
    for (int i = 0; i < modules; ++i)
        fx.file("b/m" + std::to_string(i) + ".pyc", "bytecode " + std::to_string(i));
    fx.dir("b/big");
    fx.file("b/big/big.pyc", std::string(300 * kKiB, 'B')); // over budget with libx.so's bytes

    NotCached over_budget;
    BuildOptions o = options_for(fx, {"a", "b"}, 400 * kKiB);
    o.not_cached = &over_budget;
    FailingStatx fault(fails);
    Built b(o);
    expect_no_orphans(b.snapshot);
    expect_unlisted(b, fx, "a", {"libx.so", "out", fails});
    for (int i = 0; i < modules; ++i) {
        std::string m = fx.path("b/m" + std::to_string(i) + ".pyc");
        Resolution r = b.resolve(m);
        cr_assert_eq(r.kind, Resolution::Found, "%s", m.c_str());
        cr_expect(b.snapshot.entry(r.entry).flags & kHasContent, "%s lost its content", m.c_str());
    }
    Resolution big = b.resolve(fx.path("b/big/big.pyc"));
    cr_assert_eq(big.kind, Resolution::Found);
    cr_expect(b.snapshot.entry(big.entry).flags & kHasContent);
    cr_expect_eq(over_budget.files, 0u, "the only library was forgotten with its directory");
}

// The same with the library's index past the end of the entries when the
// libraries are dropped (an abort under _GLIBCXX_ASSERTIONS, a write out of
// bounds otherwise, if it were remembered).
Test(walk, abandoned_listing_then_budget_overflow_past_the_end) {
    Fixture fx;
    fx.dir("a");
    fx.file("a/libx.so", std::string(200 * kKiB, 'L'));
    for (int i = 0; i < 30; ++i)
        fx.link("x", "a/f" + std::to_string(i));
    std::string fails = link_listed_after(fx, "a", readdir_order(fx.path("a")));
    fx.dir("b");
    fx.file("b/big.pyc", std::string(300 * kKiB, 'B'));

    FailingStatx fault(fails);
    Built b(options_for(fx, {"a", "b"}, 400 * kKiB));
    expect_no_orphans(b.snapshot);
    expect_unlisted(b, fx, "a", {"libx.so", "f0", fails});
}

// Without an overflow: the image has no bytes, names or follow records of
// the abandoned directory's children.
Test(walk, abandoned_listing_leaves_nothing_behind) {
    Fixture fx;
    std::string fails = abandoned_directory(fx, 20 * kKiB);
    fx.dir("b");
    fx.file("b/m.pyc", "bytecode");
    fx.file("b/n.py", "n = 1\n");

    FailingStatx fault(fails);
    Built b(options_for(fx, {"a", "b"}, 1 << 20));
    expect_no_orphans(b.snapshot);
    expect_unlisted(b, fx, "a", {"libx.so", "out", fails});
    cr_expect_eq(b.snapshot.header().data_size, std::string("bytecode"
                                                            "n = 1\n")
                                                    .size());
    cr_expect_eq(b.snapshot.header().follow_count, 0u);
}

// An eviction strikes while the directory is being listed (its big file
// evicts the library of root "a2", and the evicted bytes, more than the
// budget, are compacted away), and then the listing is given up: what is cut
// must be that directory's bytes after compaction.
Test(walk, abandoned_listing_after_an_eviction_inside_it) {
    Fixture fx;
    fx.dir("a1");
    fx.file("a1/libx.so", std::string(90 * kKiB, 'X'));
    fx.dir("a2");
    fx.file("a2/liby.so", std::string(80 * kKiB, 'Y')); // evicts libx.so
    fx.file("a2/keep.pyc", "kept");
    fx.dir("b");
    std::vector<std::string> before = {"big.pyc"};
    for (int i = 0; i < 8; ++i) {
        fx.file("b/p" + std::to_string(i) + ".pyc", "small " + std::to_string(i));
        before.push_back("p" + std::to_string(i) + ".pyc");
    }
    fx.file("b/big.pyc", std::string(70 * kKiB, 'B')); // evicts liby.so: 170 KiB evicted
    std::string fails = link_listed_after(fx, "b", before);
    fx.dir("c");
    for (int i = 0; i < 8; ++i)
        fx.file("c/q" + std::to_string(i) + ".pyc", "later " + std::to_string(i));

    NotCached over_budget;
    BuildOptions o = options_for(fx, {"a1", "a2", "b", "c"}, 100 * kKiB);
    o.not_cached = &over_budget;
    FailingStatx fault(fails);
    Built b(o);
    expect_no_orphans(b.snapshot);
    expect_unlisted(b, fx, "b", {"big.pyc", "p0.pyc", fails});
    cr_expect_eq(over_budget.files, 2u, "libx.so and liby.so were evicted");
    cr_expect_eq(over_budget.libraries, 2u);
    cr_expect_eq(over_budget.bytes, 170 * kKiB);
    for (const char* lib : {"a1/libx.so", "a2/liby.so"}) {
        Resolution r = b.resolve(fx.path(lib));
        cr_assert_eq(r.kind, Resolution::Found, "%s", lib);
        cr_expect_not(b.snapshot.entry(r.entry).flags & kHasContent, "%s", lib);
        cr_expect_eq(b.snapshot.entry(r.entry).st.size, contents_of(fx.path(lib)).size(),
                     "%s keeps its stat", lib);
    }
    std::string expected_data = "kept";
    for (int i = 0; i < 8; ++i) {
        std::string q = fx.path("c/q" + std::to_string(i) + ".pyc");
        Resolution r = b.resolve(q);
        cr_assert_eq(r.kind, Resolution::Found, "%s", q.c_str());
        cr_expect(b.snapshot.entry(r.entry).flags & kHasContent, "%s", q.c_str());
        expected_data += contents_of(q);
    }
    cr_expect_eq(b.snapshot.header().data_size, expected_data.size());
}

// A budget smaller than the metadata alone: the snapshot is still built,
// with every stat, listing and link of the walk, and no file's bytes.
Test(walk, a_budget_below_the_metadata_still_serves_every_stat) {
    Fixture fx;
    fx.dir("t");
    for (int i = 0; i < 200; ++i)
        fx.file("t/m" + std::to_string(i) + ".pyc", std::string(100, 'm'));
    fx.link("m0.pyc", "t/link");
    NotCached past;
    BuildOptions o = options_for(fx, {"t"}, 64);
    o.not_cached = &past;
    Built b(o);
    cr_expect_gt(b.snapshot.size(), 200 * sizeof(Entry), "more metadata than the budget");
    cr_expect_eq(b.snapshot.header().data_size, 0u);
    cr_expect_eq(past.files, 200u);
    cr_expect_eq(past.bytes, 200u * 100u);
    cr_expect_eq(past.libraries, 0u);
    for (int i = 0; i < 200; ++i) {
        std::string m = fx.path("t/m" + std::to_string(i) + ".pyc");
        Resolution r = b.resolve(m);
        cr_assert_eq(r.kind, Resolution::Found, "%s", m.c_str());
        const Entry& e = b.snapshot.entry(r.entry);
        struct stat st {};
        cr_assert_eq(lstat(m.c_str(), &st), 0);
        cr_expect_not(e.flags & (kHasContent | kNoStat), "%s", m.c_str());
        cr_expect(e.st.ino == st.st_ino && e.st.size == static_cast<uint64_t>(st.st_size) &&
                      e.st.mode == st.st_mode,
                  "%s: its stat is recorded", m.c_str());
    }
    cr_expect(b.snapshot.entry(b.resolve(fx.path("t")).entry).flags & kHasListing);
    cr_expect_eq(b.resolve(fx.path("t/link"), false).kind, Resolution::Found);
    Resolution nothing = b.resolve(fx.path("t/nothing.pyc"));
    cr_expect(nothing.kind == Resolution::Failed && nothing.error == ENOENT,
              "absent, from the listing");
}

// A budget that holds the small files or the big one, walked first: the
// small ones are cached, the big one evicted (many opens served rather than
// one).
Test(walk, small_files_go_before_a_big_one_walked_first) {
    Fixture fx;
    const int small = 40;
    fx.dir("a");
    fx.file("a/big.pyc", std::string(30 * kKiB, 'B')); // fits alone, walked first
    fx.dir("b");
    for (int i = 0; i < small; ++i)
        fx.file("b/m" + std::to_string(i) + ".pyc", std::string(kKiB, 'a' + i % 26));
    NotCached past;
    BuildOptions o = options_for(fx, {"a", "b"}, 40 * kKiB);
    o.not_cached = &past;
    Built b(o);
    expect_no_orphans(b.snapshot);
    Resolution big = b.resolve(fx.path("a/big.pyc"));
    cr_assert_eq(big.kind, Resolution::Found);
    cr_expect_not(b.snapshot.entry(big.entry).flags & kHasContent);
    cr_expect_eq(b.snapshot.entry(big.entry).st.size, 30 * kKiB, "its stat is fstat's");
    for (int i = 0; i < small; ++i) {
        std::string m = fx.path("b/m" + std::to_string(i) + ".pyc");
        Resolution r = b.resolve(m);
        cr_assert_eq(r.kind, Resolution::Found, "%s", m.c_str());
        cr_expect(b.snapshot.entry(r.entry).flags & kHasContent, "%s is cached", m.c_str());
    }
    cr_expect_eq(b.snapshot.header().data_size, small * kKiB);
    cr_expect_eq(past.files, 1u);
    cr_expect_eq(past.bytes, 30 * kKiB);
}

// Each file evicts the one before it (larger): the evicted bytes, past the
// budget, are compacted away during the walk, and the image holds only the
// last one's.
Test(walk, evicted_bytes_are_compacted) {
    Fixture fx;
    std::vector<std::string> roots;
    for (int i = 0; i < 5; ++i) {
        std::string r = "r" + std::to_string(i);
        fx.dir(r);
        fx.file(r + "/lib" + std::to_string(i) + ".so",
                std::string((90 - 10 * i) * kKiB, static_cast<char>('0' + i)));
        roots.push_back(r);
    }
    NotCached past;
    BuildOptions o = options_for(fx, roots, 100 * kKiB);
    o.not_cached = &past;
    Built b(o);
    expect_no_orphans(b.snapshot);
    cr_expect_eq(b.snapshot.header().data_size, 50 * kKiB);
    Resolution last = b.resolve(fx.path("r4/lib4.so"));
    cr_assert_eq(last.kind, Resolution::Found);
    cr_expect(b.snapshot.entry(last.entry).flags & kHasContent);
    cr_expect_eq(past.files, 4u);
    cr_expect_eq(past.libraries, 4u);
    cr_expect_eq(past.bytes, (90 + 80 + 70 + 60) * kKiB);
}

// Nothing abandoned, nothing followed: an image whose follow records (and
// perhaps listing or data) are empty still encodes (no copy from an empty
// vector's null data()).
Test(walk, empty_sections_encode) {
    Fixture fx;
    fx.dir("e");
    Built b(options_for(fx, {"e"}, 1 << 20));
    cr_expect_eq(b.snapshot.header().data_size, 0u);
    cr_expect_eq(b.snapshot.header().follow_count, 0u);
    cr_expect(b.snapshot.entry(0).flags & kHasListing);
}
