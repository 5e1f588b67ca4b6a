// The statistics: which code asked for a forwarded path (describe_caller),
// and the summary rank 0 prints (summary_lines) from every rank's part.
#include "serve/stats.hpp"

#include <criterion/criterion.h>
#include <cstdio>
#include <cstdlib>
#include <dlfcn.h>
#include <search.h>
#include <string>
#include <vector>

using namespace pyimport;

// An fopen of this program's own, as the preloaded library has one: the
// core, linked into this program, then binds `fopen` (a call or `&fopen`)
// to it, not to libc's, as it does in libpyimport.so. It forwards to libc's.
extern "C" __attribute__((visibility("default"))) FILE* fopen(const char* path, const char* mode) {
    using Fopen = FILE* (*)(const char*, const char*);
    static Fopen next = reinterpret_cast<Fopen>(dlsym(RTLD_NEXT, "fopen"));
    return next(path, mode);
}

namespace {

std::string seen_from_libc;

// Called by libc's lfind: libc's frames are on the stack between the test
// and describe_caller. (Not qsort: AddressSanitizer intercepts that one, and
// its interceptor would be the first frame outside this program and libc.)
int compare_and_describe(const void* a, const void* b) {
    seen_from_libc = describe_caller();
    int x = *static_cast<const int*>(a), y = *static_cast<const int*>(b);
    return (x > y) - (x < y);
}

} // namespace

Test(stats, the_caller_is_the_first_frame_past_this_object_and_libc) {
    // The stack: describe_caller, compare_and_describe (this program, which
    // holds the core: "this library" here), libc's lfind, this test (this
    // program), then Criterion's criterion_internal_test_main, which called
    // it: the first frame in neither.
    int values[] = {3, 1, 2};
    size_t count = 3;
    int wanted = 2;
    cr_assert_eq(lfind(&wanted, values, &count, sizeof values[0], compare_and_describe),
                 &values[2]);
    Dl_info runner{};
    cr_assert(dladdr(reinterpret_cast<void*>(&criterion_internal_test_main), &runner));
    std::string expected = std::string(runner.dli_fname) + ":criterion_internal_test_main+0x";
    cr_expect(seen_from_libc.find("libc.so") == std::string::npos, "libc named: %s",
              seen_from_libc.c_str());
    cr_expect(seen_from_libc.starts_with(expected), "%s, not %s...", seen_from_libc.c_str(),
              expected.c_str());
}

Test(stats, forwarded_paths_are_counted_with_their_caller) {
    Stats stats;
    stats.enable_paths(true);
    stats.served(CallKind::stat);
    stats.forwarded(CallKind::stat, "/b");
    stats.forwarded(CallKind::open, "/a");
    stats.forwarded(CallKind::open, "/b");
    stats.forwarded(CallKind::change, nullptr); // counted, no path
    std::vector<uint64_t> values = count_values(stats);
    const size_t kinds = static_cast<size_t>(CallKind::count);
    cr_assert_eq(values.size(), 2 * kinds);
    cr_expect_eq(values[static_cast<size_t>(CallKind::stat)], 1u);
    cr_expect_eq(values[kinds + static_cast<size_t>(CallKind::stat)], 1u);
    cr_expect_eq(values[kinds + static_cast<size_t>(CallKind::open)], 2u);
    cr_expect_eq(values[kinds + static_cast<size_t>(CallKind::change)], 1u);
    std::vector<Stats::PathRecord> top = stats.top_forwarded(10);
    cr_assert_eq(top.size(), 2u);
    cr_expect_eq(top[0].path, "/b");
    cr_expect_eq(top[0].count, 2u);
    cr_expect_eq(top[1].path, "/a");
    // This test called it, from Criterion's runner: a frame outside this
    // program and libc.
    cr_expect(top[0].caller.find("criterion_internal_test_main") != std::string::npos, "%s",
              top[0].caller.c_str());
    cr_expect_eq(top_forwarded_text(stats),
                 "2\t/b\t" + top[0].caller + "\n1\t/a\t" + top[1].caller + "\n");
}

Test(stats, the_summary_sums_the_ranks_and_merges_their_paths) {
    JobSummary s;
    s.prefixes = 3;
    s.entries = 1883;
    s.image_bytes = 40u << 20;
    s.ranks = 2;
    s.start_seconds = 0.88;
    // served stat open access readlink realpath opendir fstat dlopen change, then forwarded
    s.counts = {10, 1, 2, 3, 0, 4, 5, 6, 7, 1, 0, 0, 0, 0, 0, 0, 0, 2};
    s.tops = {"5\t/a\tcallerA\n3\t/b\tcallerB\n",
              "4\t/b\tother\n2\t/a\tx\nnot a row\n1\t/c\tcallerC"}; // last row unterminated
    std::vector<std::string> lines = summary_lines(s);
    std::vector<std::string> expected = {
        "snapshot of 3 prefixes: 1883 entries, 40.0 MiB, shared with 2 ranks in 0.880 s",
        "all ranks: 38 calls served, 3 forwarded (served/forwarded: stat 10/1 open 1/0 access "
        "2/0 readlink 3/0 realpath 0/0 opendir 4/0 fstat 5/0 dlopen 6/0 change 7/2)",
        "most forwarded paths (count, path, asked by):",
        // counts summed by path, ties by path, the first rank's caller
        "         7  /a  callerA",
        "         7  /b  callerB",
        "         1  /c  callerC",
    };
    cr_assert_eq(lines.size(), expected.size(), "%zu lines", lines.size());
    for (size_t i = 0; i < expected.size(); ++i)
        cr_expect_eq(lines[i], expected[i], "line %zu: '%s'", i, lines[i].c_str());
}

Test(stats, the_summary_tells_what_did_not_fit_in_the_budget) {
    JobSummary s;
    s.prefixes = 1;
    s.not_cached_files = 1234;
    s.not_cached_bytes = uint64_t{4567} << 20;
    std::vector<std::string> lines = summary_lines(s);
    cr_assert_geq(lines.size(), 2u);
    cr_expect_eq(lines[1], "not cached (over PYIMPORT_MAX_BYTES): 1234 files, 4567.0 MiB", "'%s'",
                 lines[1].c_str());
}

Test(stats, the_summary_shows_ten_paths_and_nothing_it_was_not_given) {
    JobSummary s;
    std::string top;
    for (int i = 0; i < 12; ++i)
        top += std::to_string(100 + i) + "\t/p" + std::to_string(i) + "\tc\n";
    s.tops = {top};
    std::vector<std::string> lines = summary_lines(s);
    cr_assert_eq(lines.size(), 2u + 1u + 10u);
    cr_expect_eq(lines[0], "snapshot of 0 prefixes: 0 entries, 0.0 MiB, shared with 0 ranks in "
                           "0.000 s");
    // No counts (or not one per kind each): nothing to sum.
    cr_expect_eq(lines[1], "all ranks: 0 calls served, 0 forwarded (served/forwarded:)");
    cr_expect_eq(lines[3], "       111  /p11  c");
    cr_expect_eq(lines[12], "       102  /p2  c");

    JobSummary quiet;
    quiet.counts = std::vector<uint64_t>(2 * static_cast<size_t>(CallKind::count), 0);
    lines = summary_lines(quiet);
    cr_assert_eq(lines.size(), 2u, "no forwarded paths: no table");
    cr_expect(lines[1].starts_with("all ranks: 0 calls served, 0 forwarded (served/forwarded: "
                                   "stat 0/0 open 0/0"),
              "%s", lines[1].c_str());
}
