// The statistics: which code asked for a forwarded path (describe_caller),
// and the summary rank 0 prints (summary_lines) from every rank's part.
#include "serve/stats.hpp"

#include <clocale>
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

// The JSON document (PYIMPORT_STATS_FILE): what every rank sends, taken
// apart on rank 0, and written as docs/statistics.md says.
Test(stats, exit_values_and_texts_come_apart_into_the_summary) {
    const size_t kinds = static_cast<size_t>(CallKind::count);
    StartFacts leader, other;
    leader.node_leader = true;
    leader.image_bytes_held = 1000;
    leader.library_bytes = 300;
    other.image_bytes_held = 0; // maps its leader's copy
    std::vector<uint64_t> a = exit_values(nullptr, leader), b = exit_values(nullptr, other);
    cr_assert_eq(a.size(), b.size());
    cr_assert_gt(a.size(), 2 * kinds, "the facts follow the counts");
    for (size_t i = 0; i < a.size(); ++i)
        a[i] += b[i]; // what the reduction does
    a[0] = 7;         // stat served, from some rank
    a[kinds + 1] = 2; // open forwarded
    JobSummary s;
    add_exit_values(s, a, {"5 1\n3\t/x\tc\n", "2 1\n", exit_text(nullptr)});
    cr_expect_eq(s.nodes, 1u);
    cr_expect_eq(s.served_ranks, 0u, "neither rank served (stats null)");
    cr_expect_eq(s.image_bytes_on_nodes, 1000u);
    cr_expect_eq(s.library_bytes_on_nodes, 300u);
    cr_assert_eq(s.counts.size(), 2 * kinds);
    cr_expect_eq(s.counts[0], 7u);
    cr_expect_eq(s.counts[kinds + 1], 2u);
    cr_assert_eq(s.rank_calls.size(), 3u);
    cr_expect(s.rank_calls[0] == std::make_pair(uint64_t{5}, uint64_t{1}));
    cr_expect(s.rank_calls[2] == std::make_pair(uint64_t{0}, uint64_t{0}));
    cr_assert_eq(s.tops.size(), 3u);
    cr_expect_eq(s.tops[0], "3\t/x\tc\n", "the totals line is not a path row");
    // The summary lines still come out of it.
    cr_expect_eq(summary_lines(s).back(), "         3  /x  c");
}

Test(stats, json_strings_are_escaped_and_non_utf8_bytes_kept_recoverable) {
    cr_expect_eq(json_string("plain /a/b.py"), "\"plain /a/b.py\"");
    cr_expect_eq(json_string("q\"b\\n\nt\t\x01\x7f"), "\"q\\\"b\\\\n\\nt\\t\\u0001\\u007f\"");
    cr_expect_eq(json_string("\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80"),
                 "\"\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80\"", "well-formed UTF-8 is copied");
    // A lone byte, an overlong form, a surrogate, a truncated sequence: each
    // byte as U+DC80 + byte - 0x80 (Python's surrogateescape).
    cr_expect_eq(json_string("a\xff"), "\"a\\udcff\"");
    cr_expect_eq(json_string("\xc0\xaf"), "\"\\udcc0\\udcaf\"");
    cr_expect_eq(json_string("\xed\xa0\x80"), "\"\\udced\\udca0\\udc80\"");
    cr_expect_eq(json_string("\xe6\x97"), "\"\\udce6\\udc97\"");
    cr_expect_eq(json_string("\xf4\x90\x80\x80"), "\"\\udcf4\\udc90\\udc80\\udc80\"");
    cr_expect_eq(json_string("\xe0\x80\xaf"), "\"\\udce0\\udc80\\udcaf\"", "overlong, 3 bytes");
    cr_expect_eq(json_string("\xf0\x80\x80\xaf"), "\"\\udcf0\\udc80\\udc80\\udcaf\"",
                 "overlong, 4 bytes");
}

Test(stats, the_document_holds_every_section_in_order) {
    const size_t kinds = static_cast<size_t>(CallKind::count);
    JobSummary s;
    s.ranks = 2;
    s.job_id = "42.0";
    s.host = "node\"1";
    s.roots = {"/usr/lib/python3.11"};
    s.counts.assign(2 * kinds, 0);
    s.counts[0] = 10;
    s.counts[kinds] = 3;
    s.nodes = 2;
    s.image_bytes_on_nodes = 100;
    s.library_bytes_on_nodes = 50;
    s.rank_calls = {{6, 1}, {4, 2}};
    s.tops = {"2\t/etc/x\tlib.so:f+0x1\n", "1\t/etc/x\tother\n"};
    std::string json = summary_json(s);
    std::vector<std::string> in_order = {
        "\"schema\": \"pyimport-stats/1\"",
        "\"pyimport_version\": \"" PYIMPORT_VERSION "\"",
        "\"id\": \"42.0\"",
        "\"host\": \"node\\\"1\"",
        "\"ranks\": 2,",
        "\"nodes\": 2",
        "\"directories\": [\n      \"/usr/lib/python3.11\"\n    ]",
        "\"start_up\": 0.000000,\n    \"mpi_load\": 0.000000,\n    \"mpi_init\": 0.000000,\n    "
        "\"walk\": 0.000000,\n    \"status\": 0.000000,\n    \"broadcast\": 0.000000,\n    "
        "\"node_sharing\": 0.000000,\n    \"library_copies\": 0.000000,\n    \"hand_over\": "
        "0.000000\n  }",
        "\"served\": 10,",
        "\"forwarded\": 3,",
        "\"served_by_kind\": {\n      \"stat\": 10,",
        "\"forwarded_by_kind\": {\n      \"stat\": 3,",
        "\"per_node_bytes\": 75",
        "{\"rank\": 0, \"served\": 6, \"forwarded\": 1},\n    {\"rank\": 1, \"served\": 4, "
        "\"forwarded\": 2}\n  ]",
        "{\"path\": \"/etc/x\", \"count\": 3, \"asked_by\": \"lib.so:f+0x1\"}\n  ]\n}\n",
    };
    size_t at = 0;
    for (const std::string& part : in_order) {
        size_t found = json.find(part, at);
        cr_expect_neq(found, std::string::npos, "missing or out of order: %s\nin\n%s", part.c_str(),
                      json.c_str());
        if (found != std::string::npos) at = found + part.size();
    }
}

Test(stats, the_file_pattern_expands_and_bad_ones_are_refused) {
    std::string path, error;
    cr_expect(expand_stats_path("/s/%j-%h-%p%%.json", "7.1", "n1", 99, path, error));
    cr_expect_eq(path, "/s/7.1-n1-99%.json");
    cr_expect(expand_stats_path("/s/%j.json", "", "n1", 99, path, error));
    cr_expect_eq(path, "/s/99.json", "no job id: rank 0's pid");
    cr_expect(!expand_stats_path("/s/%x", "", "n1", 1, path, error));
    cr_expect(error.find("%j, %h, %p or %%") != std::string::npos, "%s", error.c_str());
    cr_expect(!expand_stats_path("/s/%", "", "n1", 1, path, error));
    cr_expect(!expand_stats_path("/s/%j", "a/b", "n1", 1, path, error), "a '/' in the id");
}

Test(stats, the_job_id_is_the_batch_systems_first) {
    static const char* const env[][2] = {
        {"SLURM_JOB_ID", "12"}, {"SLURM_STEP_ID", "3"}, {"PMIX_NAMESPACE", "slurm.pmix.12.3"}};
    auto lookup = [](const char* name) -> const char* {
        for (const auto& pair : env)
            if (std::string(pair[0]) == name) return pair[1];
        return nullptr;
    };
    cr_expect_eq(job_id_from(lookup), "12.3");
    auto pmix_only = [](const char* name) -> const char* {
        return std::string(name) == "PMIX_NAMESPACE" ? "prterun-vm-1@1" : nullptr;
    };
    cr_expect_eq(job_id_from(pmix_only), "prterun-vm-1@1");
    cr_expect_eq(job_id_from([](const char*) -> const char* { return nullptr; }), "");
}

Test(stats, the_document_replaces_the_file_whole) {
    char dir[] = "/tmp/pyimport-stats-XXXXXX";
    cr_assert(mkdtemp(dir));
    std::string path = std::string(dir) + "/s.json", error;
    cr_assert(write_file_atomically(path, "old\n", error), "%s", error.c_str());
    cr_assert(write_file_atomically(path, "{}\n", error), "%s", error.c_str());
    FILE* f = std::fopen(path.c_str(), "r");
    cr_assert(f);
    char buf[16] = {};
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    cr_expect_eq(std::string(buf, n), "{}\n");
    cr_expect(!write_file_atomically(std::string(dir) + "/missing/s.json", "x", error));
    cr_expect(error.find("No such file or directory") != std::string::npos, "%s", error.c_str());
    std::remove(path.c_str());
    std::remove(dir);
}

Test(stats, paths_with_tabs_and_newlines_survive_the_rows) {
    Stats stats;
    stats.enable_paths(true);
    const std::string odd = "/x/tab\there\nnext\\back";
    for (int i = 0; i < 3; ++i)
        stats.forwarded(CallKind::stat, odd.c_str());
    stats.forwarded(CallKind::open, "/plain");
    JobSummary s;
    add_exit_values(s, exit_values(&stats, StartFacts{}), {exit_text(&stats), exit_text(&stats)});
    cr_expect(s.rank_calls[0] == std::make_pair(uint64_t{0}, uint64_t{4}));
    std::string json = summary_json(s);
    cr_expect(json.find("{\"path\": \"/x/tab\\there\\nnext\\\\back\", \"count\": 6,") !=
                  std::string::npos,
              "%s", json.c_str());
    // The text summary keeps one line per path.
    std::vector<std::string> lines = summary_lines(s);
    cr_expect(lines[3].find("/x/tab\\there\\nnext\\\\back") != std::string::npos, "%s",
              lines[3].c_str());
}

Test(stats, the_seconds_are_json_numbers_in_any_locale) {
    // A locale whose decimal point is a comma, as a program may set
    // (locale.setlocale): made here, from the package locales' sources.
    char dir[] = "/tmp/pyimport-locale-XXXXXX";
    cr_assert(mkdtemp(dir));
    std::string make = std::string("localedef -i de_DE -f UTF-8 ") + dir + "/de_DE.UTF-8 2>&1";
    int made = std::system(make.c_str());
    setenv("LOCPATH", dir, 1);
    cr_assert(setlocale(LC_NUMERIC, "de_DE.UTF-8"), "localedef gave %d", made);
    char printed[16];
    std::snprintf(printed, sizeof printed, "%.2f", 1.25);
    cr_assert_str_eq(printed, "1,25", "the locale is in force");
    JobSummary s;
    s.start.walk_seconds = 1.25;
    std::string json = summary_json(s);
    setlocale(LC_NUMERIC, "C");
    std::system((std::string("rm -rf ") + dir).c_str());
    cr_expect(json.find("\"walk\": 1.250000,") != std::string::npos, "%s", json.c_str());
}
