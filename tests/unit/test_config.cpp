#include "base/config.hpp"
#include "fake_env.hpp"

#include <criterion/criterion.h>
#include <map>
#include <string>

using namespace pyimport;
using pyimport::testing::fake_env;
using pyimport::testing::g_env;

Test(config, sizes) {
    uint64_t v = 0;
    cr_expect(parse_size("0", v) && v == 0);
    cr_expect(parse_size("4096", v) && v == 4096);
    cr_expect(parse_size("512K", v) && v == 512u << 10);
    cr_expect(parse_size("512M", v) && v == 512u << 20);
    cr_expect(parse_size("2G", v) && v == uint64_t{2} << 30);
    cr_expect(parse_size("2GiB", v) && v == uint64_t{2} << 30);
    cr_expect(parse_size("3m", v) && v == 3u << 20);
    for (const char* bad : {"", "G", "-1", "12Q", "1.5G", "1 G", "99999999999999999999",
                            "17179869184T", "1GG", "0x10"})
        cr_expect(!parse_size(bad, v), "accepted bad size '%s'", bad);
}

Test(config, booleans_and_levels) {
    bool b = false;
    cr_expect(parse_bool("1", b) && b);
    cr_expect(parse_bool("yes", b) && b);
    cr_expect(parse_bool("TRUE", b) && b);
    cr_expect(parse_bool("off", b) && !b);
    cr_expect(parse_bool("", b) && !b);
    cr_expect(!parse_bool("2", b));
    cr_expect(!parse_bool("banana", b));
    int seconds = 0;
    cr_expect(parse_seconds("1", seconds) && seconds == 1);
    cr_expect(parse_seconds("300", seconds) && seconds == 300);
    for (const char* bad : {"0", "", "-5", "1.5", "86401", "5s", "99999999999999999999"})
        cr_expect(!parse_seconds(bad, seconds), "accepted bad seconds '%s'", bad);
    int level = -1;
    cr_expect(parse_level("0", level) && level == 0);
    cr_expect(parse_level("3", level) && level == 3);
    for (const char* bad : {"4", "-1", "", "banana", "01", "1 "})
        cr_expect(!parse_level(bad, level), "accepted bad level '%s'", bad);
}

Test(config, lists) {
    std::vector<std::string> out;
    cr_expect(parse_path_list("/a:/b/c::/d", out));
    cr_expect_eq(out.size(), 3u);
    cr_expect(out[1] == "/b/c");
    cr_expect(!parse_path_list("/a:relative", out), "relative prefixes depend on the cwd");
    cr_expect(parse_suffix_list(".py,.pyc,,.pth", out));
    cr_expect_eq(out.size(), 3u);
    cr_expect(!parse_suffix_list(".py,a/b", out));
}

Test(config, file_patterns) {
    std::string out;
    cr_expect(parse_file_pattern("/s/%j-%h-%p-%%.json", out));
    cr_expect_eq(out, "/s/%j-%h-%p-%%.json", "kept as given: rank 0 expands it at exit");
    cr_expect(parse_file_pattern("relative.json", out));
    cr_expect(!parse_file_pattern("/s/%d.json", out));
    cr_expect(!parse_file_pattern("/s/100%", out));
    cr_expect(!parse_file_pattern("", out));
}

Test(config, defaults) {
    g_env.clear();
    Config c;
    std::string error;
    cr_assert(parse_config(fake_env, c, error));
    cr_expect(!c.disable);
    cr_expect(c.prefixes.empty());
    cr_expect_eq(c.max_bytes, uint64_t{1} << 30);
    cr_expect_eq(c.content_suffixes.size(), 3u);
    cr_expect_eq(c.log, 0);
    cr_expect(!c.stats);
    cr_expect(c.mpi_library.empty());
    cr_expect_eq(c.exit_timeout, 5);
    cr_expect(c.mpi_sessions);
}

Test(config, values) {
    g_env = {{"PYIMPORT_PREFIX", "/x:/y"},
             {"PYIMPORT_MAX_BYTES", "64M"},
             {"PYIMPORT_LOG", "2"},
             {"PYIMPORT_STATS", "1"},
             {"PYIMPORT_DISABLE", "no"}};
    Config c;
    std::string error;
    cr_assert(parse_config(fake_env, c, error), "%s", error.c_str());
    cr_expect_eq(c.prefixes.size(), 2u);
    cr_expect_eq(c.max_bytes, uint64_t{64} << 20);
    cr_expect_eq(c.log, 2);
    cr_expect(c.stats);
}

Test(config, bad_value_names_the_variable) {
    g_env = {{"PYIMPORT_MAX_BYTES", "12Q"}, {"PYIMPORT_LOG", "banana"}};
    Config c;
    std::string error;
    cr_assert(!parse_config(fake_env, c, error));
    cr_expect(error.find("PYIMPORT_MAX_BYTES") != std::string::npos, "%s", error.c_str());
    cr_expect(error.find("12Q") != std::string::npos);
    cr_expect(error.find('\n') == std::string::npos, "one line");
    cr_expect_eq(c.max_bytes, uint64_t{1} << 30, "bad value falls back to the default");
    cr_expect_eq(c.log, 0);

    g_env = {{"PYIMPORT_PREFIX", "lib/python"}};
    cr_assert(!parse_config(fake_env, c, error));
    cr_expect(error.find("PYIMPORT_PREFIX") != std::string::npos);
}

#include <pyimport/pyimport.h>

Test(config, public_header_names_every_variable) {
    std::vector<std::string> table;
#define PYIMPORT_NAME(field, name, type, def, meaning) table.push_back(name);
    PYIMPORT_OPTIONS(PYIMPORT_NAME)
#undef PYIMPORT_NAME
    std::vector<std::string> header = {
        PYIMPORT_ENV_DISABLE,     PYIMPORT_ENV_PREFIX,       PYIMPORT_ENV_MAX_BYTES,
        PYIMPORT_ENV_CONTENT,     PYIMPORT_ENV_STAT,         PYIMPORT_ENV_EXCLUDE,
        PYIMPORT_ENV_PROFILE,     PYIMPORT_ENV_LIBRARIES,    PYIMPORT_ENV_NODE_DIR,
        PYIMPORT_ENV_LOG,         PYIMPORT_ENV_STATS,        PYIMPORT_ENV_STATS_FILE,
        PYIMPORT_ENV_SERVE_LOCAL, PYIMPORT_ENV_TIMEOUT,      PYIMPORT_ENV_RECHECK,
        PYIMPORT_ENV_ANY_PROGRAM, PYIMPORT_ENV_EXIT_TIMEOUT, PYIMPORT_ENV_MPI_SESSIONS,
        PYIMPORT_ENV_MPI_LIBRARY};
    cr_expect(table == header, "include/pyimport/pyimport.h and PYIMPORT_OPTIONS disagree");
}

// A default-constructed Config holds the table's defaults, as parsing an
// empty environment does (they were once restated by hand, differently).
Test(config, a_default_config_holds_the_tables_defaults) {
    Config fresh;
    cr_expect_eq(fresh.max_bytes, uint64_t{1} << 30);
    cr_expect_eq(fresh.timeout, 300);
    cr_expect_eq(fresh.log, 0);
    cr_expect(fresh.libraries && fresh.recheck && !fresh.disable && !fresh.any_program);
    cr_expect_eq(fresh.node_dir, "/dev/shm");
    cr_expect_eq(fresh.profile, "auto");
    cr_expect(fresh.mpi_library.empty());
    cr_expect(fresh.content_suffixes == (std::vector<std::string>{".py", ".pyc", ".pth"}));
    g_env.clear();
    Config parsed;
    parsed.timeout = 7; // parse_config starts from the defaults, not from what was there
    std::string error;
    cr_assert(parse_config(fake_env, parsed, error), "%s", error.c_str());
    cr_expect_eq(parsed.max_bytes, fresh.max_bytes);
    cr_expect_eq(parsed.timeout, fresh.timeout);
    cr_expect(parsed.stat_suffixes == fresh.stat_suffixes && parsed.exclude == fresh.exclude);
}
