// Which trees an interpreter will import from (startup/search_path.hpp), for
// virtual environments run by path and for plain interpreters.
#include "fake_env.hpp"
#include "startup/search_path.hpp"

#include <algorithm>
#include <criterion/criterion.h>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

using namespace pyimport;
using pyimport::testing::fake_env;
using pyimport::testing::g_env;

namespace {

struct Layout {
    std::string root;
    Layout() {
        char tmpl[] = "/tmp/pyimport-unit-venv-XXXXXX";
        root = mkdtemp(tmpl);
        for (const char* d : {"base", "base/bin", "base/lib", "base/lib/python3.11",
                              "base/lib/python3.11/site-packages", "venv", "venv/bin", "venv/lib",
                              "venv/lib/python3.11", "venv/lib/python3.11/site-packages", "home",
                              "home/.local", "home/.local/lib", "home/.local/lib/python3.11",
                              "home/.local/lib/python3.11/site-packages"})
            mkdir((root + "/" + d).c_str(), 0755);
        write("base/bin/python3.11", "");
        symlink((root + "/base/bin/python3.11").c_str(), (root + "/venv/bin/python").c_str());
    }
    ~Layout() {
        std::string cmd = "rm -rf '" + root + "'";
        int ignored = std::system(cmd.c_str());
        (void)ignored;
    }
    void write(const std::string& rel, const std::string& text) const {
        FILE* f = std::fopen((root + "/" + rel).c_str(), "w");
        std::fputs(text.c_str(), f);
        std::fclose(f);
    }
    std::vector<std::string> prefixes(const std::string& invoked) const {
        Interpreter in;
        in.version = "3.11";
        in.invoked = root + "/" + invoked;
        in.resolved = root + "/base/bin/python3.11";
        in.env = fake_env;
        return search_prefixes(in);
    }
    bool has(const std::vector<std::string>& v, const std::string& rel) const {
        return std::find(v.begin(), v.end(), root + "/" + rel) != v.end();
    }
};
} // namespace

Test(search_path, a_plain_interpreter_searches_its_prefix_and_user_site) {
    Layout l;
    g_env = {{"HOME", l.root + "/home"}};
    auto p = l.prefixes("base/bin/python3.11");
    cr_expect(l.has(p, "base/lib/python3.11"));
    cr_expect(l.has(p, "base/lib/python3.11/site-packages"));
    cr_expect(l.has(p, "home/.local/lib/python3.11/site-packages"));
    cr_expect_not(l.has(p, "venv/lib/python3.11/site-packages"));
}

// A venv run by path (no activate, no $VIRTUAL_ENV) was not cached at all.
Test(search_path, a_venv_run_by_path_searches_its_own_site_packages) {
    Layout l;
    l.write("venv/pyvenv.cfg", "home = " + l.root +
                                   "/base/bin\ninclude-system-site-packages = false\n"
                                   "version = 3.11.2\n");
    g_env = {{"HOME", l.root + "/home"}};
    auto p = l.prefixes("venv/bin/python");
    cr_expect(l.has(p, "venv/lib/python3.11/site-packages"));
    cr_expect(l.has(p, "base/lib/python3.11"), "the base's standard library");
    cr_expect_not(l.has(p, "base/lib/python3.11/site-packages"), "no system site packages");
    cr_expect_not(l.has(p, "home/.local/lib/python3.11/site-packages"), "no user site");
}

Test(search_path, a_venv_with_system_site_packages_searches_both) {
    Layout l;
    l.write("venv/pyvenv.cfg",
            "home=" + l.root + "/base/bin\nInclude-System-Site-Packages = True\n");
    g_env = {{"HOME", l.root + "/home"}};
    auto p = l.prefixes("venv/bin/python");
    cr_expect(l.has(p, "venv/lib/python3.11/site-packages"));
    cr_expect(l.has(p, "base/lib/python3.11/site-packages"));
    cr_expect(l.has(p, "home/.local/lib/python3.11/site-packages"));
}

Test(search_path, pyvenv_cfg_is_found_beside_or_above_the_executable_only) {
    Layout l;
    VirtualEnv v;
    cr_expect_not(find_virtual_env(l.root + "/venv/bin/python", v));
    l.write("venv/pyvenv.cfg", "home = /usr/bin\n");
    cr_assert(find_virtual_env(l.root + "/venv/bin/python", v));
    cr_expect_eq(v.root, l.root + "/venv");
    cr_expect_eq(v.home, "/usr/bin");
    cr_expect_not(v.system_site);
    l.write("venv/bin/pyvenv.cfg", "home = /opt/bin\n");
    cr_assert(find_virtual_env(l.root + "/venv/bin/python", v));
    cr_expect_eq(v.root, l.root + "/venv/bin", "beside the executable first");
    cr_expect_not(find_virtual_env("relative/python", v));
}

Test(search_path, the_executable_as_invoked) {
    cr_expect_eq(invoked_executable("/usr/bin/python3", "/tmp", nullptr), "/usr/bin/python3");
    cr_expect_eq(invoked_executable("venv/bin/../bin/python", "/work", nullptr),
                 "/work/venv/bin/python");
    cr_expect_eq(invoked_executable("sh", "/", "/nonexistent:/bin"), "/bin/sh");
    cr_expect_eq(invoked_executable("no-such-program-anywhere", "/", "/bin"), "");
    cr_expect_eq(invoked_executable("", "/", "/bin"), "");
}

// Editable installs: a .pth line names a source tree elsewhere.
Test(search_path, directories_named_by_pth_files_are_searched) {
    Layout l;
    mkdir((l.root + "/src").c_str(), 0755);
    mkdir((l.root + "/src/project").c_str(), 0755);
    l.write("base/lib/python3.11/site-packages/__editable__.project.pth",
            "# a comment\n\n" + l.root + "/src/project\nimport sys; sys.flags\n../../../../src\n" +
                l.root + "/nonexistent\n");
    g_env = {};
    auto p = l.prefixes("base/bin/python3.11");
    cr_expect(l.has(p, "src/project"));
    cr_expect(l.has(p, "src"), "relative to the site directory");
    cr_expect_not(l.has(p, "nonexistent"));
    // -S: no site directories, so no .pth files either.
    Interpreter in;
    in.version = "3.11";
    in.invoked = in.resolved = l.root + "/base/bin/python3.11";
    in.env = fake_env;
    in.arguments = {"-S", "app.py"};
    auto no_site = search_prefixes(in);
    cr_expect(l.has(no_site, "base/lib/python3.11"));
    cr_expect_not(l.has(no_site, "base/lib/python3.11/site-packages"));
    cr_expect_not(l.has(no_site, "src/project"));
}

Test(search_path, interpreter_options_and_the_environment) {
    Layout l;
    mkdir((l.root + "/extra").c_str(), 0755);
    g_env = {{"HOME", l.root + "/home"}, {"PYTHONPATH", l.root + "/extra"}};
    Interpreter in;
    in.version = "3.11";
    in.invoked = in.resolved = l.root + "/base/bin/python3.11";
    in.env = fake_env;
    auto with = [&](std::vector<std::string> args) {
        in.arguments = std::move(args);
        return search_prefixes(in);
    };
    auto plain = with({"app.py"});
    cr_expect(l.has(plain, "extra") && l.has(plain, "home/.local/lib/python3.11/site-packages"));
    auto no_user = with({"-s", "app.py"});
    cr_expect(l.has(no_user, "extra"));
    cr_expect_not(l.has(no_user, "home/.local/lib/python3.11/site-packages"));
    auto no_env = with({"-E", "app.py"});
    cr_expect_not(l.has(no_env, "extra"));
    cr_expect(l.has(no_env, "home/.local/lib/python3.11/site-packages"));
    auto isolated = with({"-bI", "-X", "dev", "app.py"});
    cr_expect_not(l.has(isolated, "extra"));
    cr_expect_not(l.has(isolated, "home/.local/lib/python3.11/site-packages"));
    // Options after the script (or -c's code) are the program's, not the interpreter's.
    auto late = with({"app.py", "-I"});
    cr_expect(l.has(late, "extra"));
    auto code = with({"-c", "pass", "-S"});
    cr_expect(l.has(code, "base/lib/python3.11/site-packages"));
}

// sys.path[0] as the interpreter computes it: the script's real directory,
// the working directory for -c, -m and stdin, none with -I, -P or
// PYTHONSAFEPATH; the script itself is a single path either way.
Test(search_path, the_script_directory) {
    Layout l;
    mkdir((l.root + "/job").c_str(), 0755);
    l.write("job/app.py", "print(1)\n");
    symlink((l.root + "/job/app.py").c_str(), (l.root + "/home/app.py").c_str());
    g_env = {{"HOME", l.root + "/home"}};
    Interpreter in;
    in.version = "3.11";
    in.invoked = in.resolved = l.root + "/base/bin/python3.11";
    in.env = fake_env;
    in.cwd = l.root + "/home";
    auto plan = [&](std::vector<std::string> args) {
        in.arguments = std::move(args);
        return search_plan(in);
    };
    auto has_probe = [&](const SearchPlan& p, const std::string& rel) {
        return std::any_of(p.probes.begin(), p.probes.end(), [&](const BuildOptions::Probe& q) {
            return q.path == l.root + "/" + rel;
        });
    };
    SearchPlan script = plan({"app.py"}); // a symlink: its target's directory
    cr_expect_eq(script.script_directory, l.root + "/job");
    cr_expect(has_probe(script, "home/app.py"), "the script as invoked is a single path");
    cr_expect_eq(plan({"-c", "pass"}).script_directory, l.root + "/home");
    cr_expect_eq(plan({"-m", "pkg"}).script_directory, l.root + "/home");
    cr_expect_eq(plan({}).script_directory, l.root + "/home");
    SearchPlan isolated = plan({"-I", "app.py"});
    cr_expect(isolated.script_directory.empty());
    cr_expect(has_probe(isolated, "home/app.py"), "still read: the script is served");
    cr_expect(plan({"-P", "-c", "pass"}).script_directory.empty());
    g_env["PYTHONSAFEPATH"] = "1";
    cr_expect(plan({"app.py"}).script_directory.empty());
    cr_expect_eq(plan({"-E", "app.py"}).script_directory, l.root + "/job", "-E ignores it");
}

// getpath's questions, and the directories above the prefixes, are single
// paths; pyvenv.cfg and ._pth with their bytes.
Test(search_path, the_start_up_probes) {
    Layout l;
    l.write("venv/pyvenv.cfg", "home = " + l.root + "/base/bin\n");
    g_env = {{"HOME", l.root + "/home"}};
    Interpreter in;
    in.version = "3.11";
    in.invoked = l.root + "/venv/bin/python";
    in.resolved = l.root + "/base/bin/python3.11";
    in.env = fake_env;
    in.arguments = {"-c", "pass"};
    SearchPlan p = search_plan(in);
    auto probe = [&](const std::string& rel) -> const BuildOptions::Probe* {
        for (const BuildOptions::Probe& q : p.probes)
            if (q.path == l.root + "/" + rel) return &q;
        return nullptr;
    };
    for (const char* rel :
         {"venv/bin/python", "base/bin/python3.11", "venv/bin/pyvenv.cfg", "venv/pyvenv.cfg",
          "base/bin/pyvenv.cfg", "base/pyvenv.cfg", "base/bin/python3.11._pth",
          "venv/bin/python._pth", "base/bin/pybuilddir.txt", "base/bin/Modules/Setup.local",
          "base/lib/python311.zip", "base/bin/lib/python3.11/os.py", "base/lib", "base", "venv",
          "venv/lib"})
        cr_expect(probe(rel) != nullptr, "%s is probed", rel);
    cr_expect(probe("venv/pyvenv.cfg") && probe("venv/pyvenv.cfg")->content);
    cr_expect(probe("base/lib/python311.zip") && probe("base/lib/python311.zip")->content);
}
