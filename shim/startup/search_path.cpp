#include "startup/search_path.hpp"

#include "base/real.hpp"
#include "base/text.hpp"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <dirent.h>
#include <fcntl.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

namespace pyimport {
namespace {

bool is_directory(const std::string& dir) {
    struct stat st {};
    return REAL(stat)(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string parent_dir(const std::string& path) {
    size_t slash = path.find_last_of('/');
    return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

std::string_view trimmed(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
        s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
        s.remove_suffix(1);
    return s;
}

// A small text file (pyvenv.cfg, a .pth), up to 1 MiB; false if unreadable.
bool read_small_file(const std::string& file, std::string& text) {
    int fd = REAL(open)(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    text.clear();
    char buffer[4096];
    for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0 && text.size() < (1u << 20);)
        text.append(buffer, static_cast<size_t>(n));
    REAL(close)(fd);
    return true;
}

// pyvenv.cfg's "key = value" lines, as site.py reads them.
bool read_pyvenv_cfg(const std::string& file, VirtualEnv& out) {
    std::string text;
    if (!read_small_file(file, text)) return false;
    for (std::string_view line : split(text, '\n')) {
        size_t eq = line.find('=');
        if (eq == std::string_view::npos) continue;
        std::string key(trimmed(line.substr(0, eq)));
        std::string_view value = trimmed(line.substr(eq + 1));
        if (strcasecmp(key.c_str(), "home") == 0) out.home = std::string(value);
        if (strcasecmp(key.c_str(), "include-system-site-packages") == 0)
            out.system_site = value.size() == 4 && strncasecmp(value.data(), "true", 4) == 0;
    }
    return true;
}

// os.path.abspath: joined with the working directory, ".", ".." and
// repeated slashes removed lexically (symlinks are not resolved).
std::string absolute_path(const std::string& path, const std::string& cwd) {
    std::vector<std::string_view> parts;
    std::string joined = path[0] == '/' ? path : cwd + "/" + path;
    for (std::string_view part : split(joined, '/')) {
        if (part.empty() || part == ".") continue;
        if (part == "..") {
            if (!parts.empty()) parts.pop_back();
            continue;
        }
        parts.push_back(part);
    }
    std::string out;
    for (std::string_view part : parts) {
        out += '/';
        out += part;
    }
    return out.empty() ? "/" : out;
}

struct Flags {
    bool ignore_environment = false; // -E (and -I)
    bool no_user_site = false;       // -s (and -I)
    bool no_site = false;            // -S
    bool safe_path = false;          // -P (and -I): no sys.path[0]
    bool runs_script = false;        // a script file, named by `script`
    std::string script;
};

// The interpreter's own options, before the script, -c or -m.
Flags interpreter_flags(const std::vector<std::string>& args) {
    Flags flags;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "--check-hash-based-pycs") {
            ++i;
            continue;
        }
        if (a == "--" || a.size() < 2 || a[0] != '-') { // the script (or - for stdin)
            size_t at = a == "--" ? i + 1 : i;
            if (at < args.size() && args[at] != "-") {
                flags.runs_script = true;
                flags.script = args[at];
            }
            break;
        }
        if (a[1] == '-') break; // --help, --version ...: no program runs
        bool stop = false;
        for (size_t k = 1; k < a.size() && !stop; ++k) {
            switch (a[k]) {
            case 'I':
                flags.ignore_environment = flags.no_user_site = flags.safe_path = true;
                break;
            case 'P':
                flags.safe_path = true;
                break;
            case 'E':
                flags.ignore_environment = true;
                break;
            case 's':
                flags.no_user_site = true;
                break;
            case 'S':
                flags.no_site = true;
                break;
            case 'c':
            case 'm':
                return flags; // the rest is the program's
            case 'W':
            case 'X':
                if (k + 1 == a.size()) ++i; // the value is the next argument
                stop = true;
                break;
            default:
                break;
            }
        }
    }
    return flags;
}

// The directories a site directory's .pth files add (site.addpackage): in
// name order, each line that is not a comment, blank or an "import" line,
// relative to the site directory. False if `site` is not a directory.
bool add_pth_directories(const std::string& site, std::vector<std::string>& out) {
    DIR* dir = REAL(opendir)(site.c_str());
    if (!dir) return false;
    std::vector<std::string> names;
    while (struct dirent64* e = REAL(readdir64)(dir)) {
        std::string_view name = e->d_name;
        if (name.size() > 4 && name.ends_with(".pth") && name[0] != '.') names.emplace_back(name);
    }
    REAL(closedir)(dir);
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) {
        std::string text;
        if (!read_small_file(site + "/" + name, text)) continue;
        for (std::string_view line : split(text, '\n')) {
            if (line.empty() || line[0] == '#' || trimmed(line).empty()) continue;
            if (line.starts_with("import ") || line.starts_with("import\t")) continue;
            while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back())))
                line.remove_suffix(1);
            out.push_back(absolute_path(std::string(line), site));
        }
    }
    return true;
}

} // namespace

bool find_virtual_env(const std::string& invoked, VirtualEnv& out) {
    if (invoked.empty() || invoked[0] != '/') return false;
    std::string dir = parent_dir(invoked);
    for (const std::string& root : {dir, parent_dir(dir)}) {
        VirtualEnv venv;
        if (read_pyvenv_cfg(root + "/pyvenv.cfg", venv)) {
            venv.root = root;
            out = venv;
            return true;
        }
    }
    return false;
}

std::string invoked_executable(const std::string& argv0, const std::string& cwd, const char* path) {
    if (argv0.empty()) return "";
    if (argv0.find('/') != std::string::npos) {
        if (argv0[0] != '/' && cwd.empty()) return "";
        return absolute_path(argv0, cwd);
    }
    for (std::string_view dir : split(path ? path : "", ':')) {
        std::string candidate = std::string(dir.empty() ? cwd : std::string(dir)) + "/" + argv0;
        struct stat st {};
        if (REAL(stat)(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
            REAL(access)(candidate.c_str(), X_OK) == 0)
            return candidate;
    }
    return "";
}

// The executable's chain of symlinks, as getpath follows it: `invoked`
// first, then each link's target (made absolute), the last no link.
std::vector<std::string> link_chain(const std::string& invoked) {
    std::vector<std::string> chain{invoked};
    char target[PATH_MAX];
    for (int i = 0; i < 40; ++i) {
        ssize_t n = REAL(readlink)(chain.back().c_str(), target, sizeof target - 1);
        if (n <= 0) break;
        std::string t(target, static_cast<size_t>(n));
        chain.push_back(absolute_path(t, parent_dir(chain.back())));
    }
    return chain;
}

std::string base_name(const std::string& path) {
    return path.substr(path.find_last_of('/') + 1);
}

SearchPlan search_plan(const Interpreter& in) {
    SearchPlan plan;
    std::vector<std::string> out;
    std::vector<std::string> why;
    if (in.version.empty()) return plan;
    Flags flags = interpreter_flags(in.arguments);
    auto env = [&](const char* name) -> const char* {
        return in.env && !flags.ignore_environment ? in.env(name) : nullptr;
    };
    std::string lib = "/lib/python" + in.version;
    std::string zip_name = "python" + in.version.substr(0, in.version.find('.')) +
                           in.version.substr(in.version.find('.') + 1) + ".zip";
    auto probe = [&](const std::string& path, bool content) {
        if (!path.empty() && path[0] == '/') plan.probes.push_back({path, content});
    };

    VirtualEnv venv;
    bool in_venv = find_virtual_env(in.invoked, venv);
    // Without system site packages a venv sees only the base's standard
    // library, and no user site directory.
    bool system_site = !in_venv || venv.system_site;

    std::string base;
    std::string base_why;
    if (const char* home = env("PYTHONHOME"); home && *home) {
        std::string h(home);
        base = h.substr(0, h.find(':'));
        base_why = "PYTHONHOME";
    } else if (in_venv && !venv.home.empty() && venv.home[0] == '/') {
        base = parent_dir(absolute_path(venv.home, "/"));
        base_why = "home in " + venv.root + "/pyvenv.cfg";
    } else if (!in.resolved.empty()) {
        base = parent_dir(parent_dir(in.resolved));
        base_why = "above the executable " + in.resolved;
    }
    std::vector<std::string> homes;
    std::vector<std::string> home_why;
    if (!base.empty()) {
        homes.push_back(base);
        home_why.push_back(base_why);
    }
    for (const char* var : {"VIRTUAL_ENV", "CONDA_PREFIX"})
        if (const char* v = in.env ? in.env(var) : nullptr;
            v && *v == '/' && !(in_venv && v == venv.root)) {
            homes.emplace_back(v);
            home_why.push_back(std::string("$") + var);
        }

    std::vector<std::string> sites; // where .pth files are read
    std::vector<std::string> site_why;
    for (size_t i = 0; i < homes.size(); ++i) {
        const std::string& home = homes[i];
        out.push_back(home + lib);
        out.push_back(home + "/lib64/python" + in.version);
        why.insert(why.end(), 2, "standard library (prefix " + home + ": " + home_why[i] + ")");
        if (i == 0 && !system_site) continue;
        for (const std::string& dir :
             {home + lib + "/site-packages", home + lib + "/dist-packages",
              home + "/lib/python3/dist-packages", home + "/local" + lib + "/dist-packages",
              home + "/lib64/python" + in.version + "/site-packages"}) {
            sites.push_back(dir);
            site_why.push_back("site directory of " + home);
        }
    }
    if (in_venv) {
        // Debian's site.py looks for its dist-packages in a venv too.
        for (const std::string& dir :
             {venv.root + lib + "/site-packages",
              venv.root + "/lib64/python" + in.version + "/site-packages",
              venv.root + "/local" + lib + "/dist-packages",
              venv.root + "/lib/python3/dist-packages", venv.root + lib + "/dist-packages"}) {
            sites.push_back(dir);
            site_why.push_back("venv " + venv.root + " (pyvenv.cfg)");
        }
    }
    if (const char* path = env("PYTHONPATH"))
        for (std::string_view item : split(path, ':'))
            if (!item.empty() && item[0] == '/') {
                out.emplace_back(item);
                why.push_back("PYTHONPATH");
            }
    if (system_site && !flags.no_user_site && !env("PYTHONNOUSERSITE"))
        if (const char* home = in.env ? in.env("HOME") : nullptr; home && *home == '/') {
            sites.push_back(std::string(home) + "/.local" + lib + "/site-packages");
            site_why.push_back("user site directory");
        }
    auto keep = [&](const std::string& dir, bool known_directory, const std::string& reason) {
        if (std::find(plan.prefixes.begin(), plan.prefixes.end(), dir) != plan.prefixes.end())
            return true;
        if (!known_directory && !is_directory(dir)) return false; // asked once
        plan.prefixes.push_back(dir);
        plan.reasons.push_back(reason);
        return true;
    };
    for (size_t i = 0; i < out.size(); ++i)
        if (!keep(out[i], false, why[i])) probe(out[i], true); // a zip, or absent
    if (!flags.no_site) {
        for (size_t i = 0; i < sites.size(); ++i) {
            std::vector<std::string> added;
            if (!add_pth_directories(sites[i], added)) { // not a directory
                probe(sites[i], false);
                continue;
            }
            keep(sites[i], true, site_why[i]);
            for (const std::string& dir : added)
                if (!keep(dir, false, "added by a .pth file in " + sites[i]))
                    probe(dir, true); // an egg or zip: its bytes too
        }
    }

    // The interpreter's own start-up probes (getpath): the executable's links,
    // pyvenv.cfg beside and above each, ._pth beside the real one, the build
    // directory markers, and the landmarks up from the executable's directory
    // to the prefix.
    std::vector<std::string> chain = link_chain(in.invoked);
    if (!in.resolved.empty() && chain.back() != in.resolved) chain.push_back(in.resolved);
    for (const std::string& link : chain) {
        probe(link, false);
        probe(parent_dir(link) + "/pyvenv.cfg", true);
        probe(parent_dir(parent_dir(link)) + "/pyvenv.cfg", true);
    }
    if (in_venv) {
        probe(venv.root + "/pyvenv.cfg", true);
        if (!venv.home.empty() && venv.home[0] == '/')
            for (const std::string& link : link_chain(venv.home + "/" + base_name(in.invoked)))
                probe(link, false);
    }
    std::string exe_dir = parent_dir(chain.back());
    for (const std::string& link : chain) {
        probe(exe_dir + "/" + base_name(link) + "._pth", true);
        probe(parent_dir(link) + "/" + base_name(link) + "._pth", true);
    }
    probe(exe_dir + "/pybuilddir.txt", true);
    probe(exe_dir + "/Modules/Setup.local", false);
    probe(exe_dir + "/Modules/Setup", false); // sysconfig's
    // The zip landmark is looked for up to the top (3.11 and later), the
    // others up to the prefix.
    std::string stop = base.empty() ? "/" : parent_dir(base);
    bool landmarks = true;
    for (std::string dir = exe_dir; dir != "/"; dir = parent_dir(dir)) {
        probe(dir + "/lib/" + zip_name, true);
        if (dir == stop) landmarks = false;
        if (!landmarks) continue;
        probe(dir + "/lib", false);
        for (const char* landmark : {"/os.py", "/os.pyc", "/lib-dynload"})
            probe(dir + lib + landmark, false);
    }

    // The script, and sys.path[0]: served as a live directory.
    std::string script;
    if (flags.runs_script && !flags.script.empty())
        script = flags.script[0] == '/' || in.cwd.empty() ? flags.script
                                                          : absolute_path(flags.script, in.cwd);
    probe(script, true);
    if (!flags.safe_path && !(env("PYTHONSAFEPATH") && *env("PYTHONSAFEPATH"))) {
        char resolved[PATH_MAX];
        if (!flags.runs_script)
            plan.script_directory = in.cwd;
        else if (!script.empty() && script[0] == '/' && REAL(realpath)(script.c_str(), resolved))
            plan.script_directory = parent_dir(resolved);
    }
    // os.path.realpath (site, sysconfig) looks at every directory above the
    // prefixes and the executable, one lstat each. (Not above the script's
    // directory: its realpath is served whole, and /tmp or $HOME change
    // during a job.)
    std::vector<std::string> above;
    for (const std::string& dir : plan.prefixes)
        above.push_back(dir);
    for (const std::string& link : chain)
        above.push_back(link);
    for (const std::string& path : above)
        for (std::string dir = parent_dir(path); dir != "/"; dir = parent_dir(dir))
            if (std::none_of(plan.probes.begin(), plan.probes.end(),
                             [&](const BuildOptions::Probe& p) { return p.path == dir; }))
                probe(dir, false);
    return plan;
}

} // namespace pyimport
