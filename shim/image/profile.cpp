#include "image/profile.hpp"

#include "base/real.hpp"
#include "base/text.hpp"
#include "image/library_name.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

namespace pyimport {

namespace {
constexpr char kHeader[] = "pyimport-profile 1\n";
constexpr size_t kMaxProfileBytes = size_t{64} << 20;

// Profiles of programs that have not run for kProfileMaxAgeDays.
void remove_old_profiles(const std::string& dir) {
    DIR* d = REAL(opendir)(dir.c_str());
    if (!d) return;
    time_t oldest = time(nullptr) - time_t{kProfileMaxAgeDays} * 86400;
    while (struct dirent64* e = REAL(readdir64)(d)) {
        std::string_view name(e->d_name);
        if (!name.ends_with(".profile")) continue;
        struct stat st {};
        if (REAL(fstatat)(REAL(dirfd)(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISREG(st.st_mode) && st.st_mtime < oldest)
            REAL(unlinkat)(REAL(dirfd)(d), e->d_name, 0);
    }
    REAL(closedir)(d);
}

// Reads up to `limit` bytes of a file; returns 0 or the errno.
int read_file(const char* path, size_t limit, std::string& out) {
    out.clear();
    int fd = REAL(open)(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    char buffer[65536];
    int failure = 0;
    while (out.size() < limit) {
        ssize_t n = ::read(fd, buffer, std::min(sizeof buffer, limit - out.size()));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) failure = errno;
        if (n <= 0) break;
        out.append(buffer, static_cast<size_t>(n));
    }
    REAL(close)(fd);
    return failure;
}

// Python options that take the next argument as their value.
bool takes_value(const std::string& option) {
    return option == "-W" || option == "-X" || option == "--check-hash-based-pycs";
}
} // namespace

std::string program_identity(const std::vector<std::string>& args) {
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "-c" || a == "-m") return i + 1 < args.size() ? a + " " + args[i + 1] : a;
        if (a.size() > 2 && (a.starts_with("-c") || a.starts_with("-m")))
            return a.substr(0, 2) + " " + a.substr(2);
        if (a == "-") return a;
        if (a == "--") {
            if (i + 1 == args.size()) return "(interactive)";
            ++i;
        } else if (a.starts_with("-")) {
            if (takes_value(a)) ++i;
            continue;
        }
        char resolved[PATH_MAX];
        return REAL(realpath)(args[i].c_str(), resolved) ? std::string(resolved) : args[i];
    }
    return "(interactive)";
}

std::vector<std::string> own_command_line() {
    std::string text;
    std::vector<std::string> args;
    if (read_file("/proc/self/cmdline", size_t{1} << 20, text) != 0) return args;
    for (std::string_view a : split(text, '\0'))
        args.emplace_back(a);
    return args;
}

std::string profile_file(const std::string& dir, const std::string& executable,
                         const std::string& program, const std::vector<std::string>& prefixes) {
    std::string key = executable + '\0' + program + '\0' + std::to_string(geteuid());
    for (const std::string& p : prefixes)
        key += '\0' + p;
    char name[64];
    std::snprintf(name, sizeof name, "/%016llx.profile",
                  static_cast<unsigned long long>(XXH3_64bits(key.data(), key.size())));
    return dir + name;
}

std::string lexically_tidy(std::string_view path) {
    std::string out;
    for (std::string_view part : split(path, '/')) {
        if (part.empty() || part == ".") continue;
        if (part == "..") break;
        out += '/';
        out += part;
    }
    return out.empty() ? "/" : out;
}

bool read_profile(const std::string& file, PathSet& paths, std::string& error) {
    paths.clear();
    std::string text;
    int failure = read_file(file.c_str(), kMaxProfileBytes + 1, text);
    if (failure) {
        if (failure != ENOENT)
            error = "cannot read profile " + file + ": " + std::strerror(failure);
        return true;
    }
    return parse_profile(text, file, paths, error);
}

bool parse_profile(std::string_view text, const std::string& file, PathSet& paths,
                   std::string& error) {
    paths.clear();
    if (text.size() > kMaxProfileBytes) {
        error = "profile " + file + " is larger than 64 MiB";
        return false;
    }
    if (!text.starts_with(kHeader) || text.back() != '\n') {
        error = "profile " + file + " is not a pyimport profile (or was cut short)";
        return false;
    }
    // The lines after the header, without the last one's '\n' (none: a
    // profile of no paths, as write_profile writes it).
    std::string_view body = text.substr(sizeof kHeader - 1);
    if (!body.empty()) body.remove_suffix(1);
    for (std::string_view line : split(body, '\n')) {
        if (line.empty() || line[0] != '/' || line.find('\0') != std::string_view::npos) {
            error = "profile " + file + " has a line that is not an absolute path";
            paths.clear();
            return false;
        }
        paths.emplace(line);
    }
    return true;
}

std::string profile_directory(const std::string& setting, const char* (*lookup)(const char*)) {
    if (setting == "off") return "";
    if (setting != "auto") return setting;
    const char* cache = lookup("XDG_CACHE_HOME");
    if (cache && cache[0] == '/') return std::string(cache) + "/pyimport";
    const char* home = lookup("HOME");
    if (home && home[0] == '/') return std::string(home) + "/.cache/pyimport";
    return "";
}

bool import_file_name(std::string_view path) {
    std::string_view name = path.substr(path.find_last_of('/') + 1);
    for (std::string_view suffix :
         {".py", ".pyc", ".so", ".pth", "._pth", ".zip", ".egg", ".pyz", ".whl"})
        if (name.ends_with(suffix)) return true;
    return name == "pyvenv.cfg" || name == "pybuilddir.txt" || name == "Setup.local" ||
           name == "Setup" || name == "__pycache__" || is_library_name(name);
}

bool learnable_outside(std::string_view path, bool listed) {
    if (path.size() < 2 || path[0] != '/' || path.find('\n') != std::string_view::npos)
        return false;
    for (std::string_view pseudo : {"/proc", "/sys", "/dev", "/run"})
        if (path.starts_with(pseudo) &&
            (path.size() == pseudo.size() || path[pseudo.size()] == '/'))
            return false;
    return listed || import_file_name(path);
}

bool update_profile(const ProgramProfile& profile, PathSet used,
                    const std::function<bool(const std::string&)>& still_there,
                    std::string& error) {
    // Earlier jobs' paths stay unless the snapshot shows them gone.
    PathSet paths;
    for (const std::string& p : profile.paths)
        if (still_there(p)) paths.insert(p);
    size_t kept = paths.size();
    paths.merge(used);
    if (kept == profile.paths.size() && paths.size() == kept) return true; // nothing new
    return write_profile(profile.file, paths, error);
}

bool write_profile(const std::string& file, const PathSet& paths, std::string& error) {
    // Create missing directories, private to the user.
    for (size_t slash = file.find('/', 1); slash != std::string::npos;
         slash = file.find('/', slash + 1)) {
        std::string dir = file.substr(0, slash);
        if (REAL(mkdir)(dir.c_str(), 0700) != 0 && errno != EEXIST) {
            error = "cannot create " + dir + ": " + std::strerror(errno);
            return false;
        }
    }
    std::string text = kHeader;
    for (const std::string& p : paths)
        if (!p.empty() && p[0] == '/' && p.find('\n') == std::string::npos) text += p + "\n";
    std::string temporary = file + "." + std::to_string(getpid()) + ".tmp";
    int fd =
        REAL(open)(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        error = "cannot write " + temporary + ": " + std::strerror(errno);
        return false;
    }
    size_t done = 0;
    while (done < text.size()) {
        ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += static_cast<size_t>(n);
    }
    int saved = done == text.size() ? 0 : errno ? errno : EIO;
    if (REAL(close)(fd) != 0 && !saved) saved = errno;
    if (!saved && REAL(rename)(temporary.c_str(), file.c_str()) != 0) saved = errno;
    if (saved) {
        error = "cannot write " + file + ": " + std::strerror(saved);
        REAL(unlink)(temporary.c_str());
        return false;
    }
    remove_old_profiles(file.substr(0, file.find_last_of('/')));
    return true;
}

} // namespace pyimport
