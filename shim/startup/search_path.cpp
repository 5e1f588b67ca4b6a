#include "startup/search_path.hpp"

#include "base/real.hpp"
#include "base/text.hpp"

#include <algorithm>
#include <cctype>
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
};

// The interpreter's own options, before the script, -c or -m.
Flags interpreter_flags(const std::vector<std::string>& args) {
    Flags flags;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a.size() < 2 || a[0] != '-' || a == "--" || a[1] == '-') break;
        bool stop = false;
        for (size_t k = 1; k < a.size() && !stop; ++k) {
            switch (a[k]) {
            case 'I':
                flags.ignore_environment = flags.no_user_site = true;
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

std::vector<std::string> search_prefixes(const Interpreter& in) {
    std::vector<std::string> out;
    if (in.version.empty()) return out;
    Flags flags = interpreter_flags(in.arguments);
    auto env = [&](const char* name) -> const char* {
        return in.env && !flags.ignore_environment ? in.env(name) : nullptr;
    };
    std::string lib = "/lib/python" + in.version;

    VirtualEnv venv;
    bool in_venv = find_virtual_env(in.invoked, venv);
    // Without system site packages a venv sees only the base's standard
    // library, and no user site directory.
    bool system_site = !in_venv || venv.system_site;

    std::string base;
    if (const char* home = env("PYTHONHOME"); home && *home) {
        std::string h(home);
        base = h.substr(0, h.find(':'));
    } else if (in_venv && !venv.home.empty() && venv.home[0] == '/') {
        base = parent_dir(absolute_path(venv.home, "/"));
    } else if (!in.resolved.empty()) {
        base = parent_dir(parent_dir(in.resolved));
    }
    std::vector<std::string> homes;
    if (!base.empty()) homes.push_back(base);
    for (const char* var : {"VIRTUAL_ENV", "CONDA_PREFIX"})
        if (const char* v = in.env ? in.env(var) : nullptr;
            v && *v == '/' && !(in_venv && v == venv.root))
            homes.emplace_back(v);

    std::vector<std::string> sites; // where .pth files are read
    for (size_t i = 0; i < homes.size(); ++i) {
        const std::string& home = homes[i];
        out.push_back(home + lib);
        out.push_back(home + "/lib64/python" + in.version);
        if (i == 0 && !system_site) continue;
        for (const std::string& dir :
             {home + lib + "/site-packages", home + lib + "/dist-packages",
              home + "/lib/python3/dist-packages", home + "/local" + lib + "/dist-packages",
              home + "/lib64/python" + in.version + "/site-packages"})
            sites.push_back(dir);
    }
    if (in_venv) {
        sites.push_back(venv.root + lib + "/site-packages");
        sites.push_back(venv.root + "/lib64/python" + in.version + "/site-packages");
    }
    if (const char* path = env("PYTHONPATH"))
        for (std::string_view item : split(path, ':'))
            if (!item.empty() && item[0] == '/') out.emplace_back(item);
    if (system_site && !flags.no_user_site && !env("PYTHONNOUSERSITE"))
        if (const char* home = in.env ? in.env("HOME") : nullptr; home && *home == '/')
            sites.push_back(std::string(home) + "/.local" + lib + "/site-packages");
    std::vector<std::string> present; // each directory asked of the filesystem once
    auto keep = [&](const std::string& dir, bool known_directory) {
        if (std::find(present.begin(), present.end(), dir) != present.end()) return;
        if (known_directory || is_directory(dir)) present.push_back(dir);
    };
    for (const std::string& dir : out)
        keep(dir, false);
    if (!flags.no_site) {
        for (const std::string& site : sites) {
            std::vector<std::string> added;
            if (!add_pth_directories(site, added)) continue; // not a directory
            keep(site, true);
            for (const std::string& dir : added)
                keep(dir, false);
        }
    }
    return present;
}

} // namespace pyimport
