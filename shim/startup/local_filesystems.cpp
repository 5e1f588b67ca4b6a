#include "startup/local_filesystems.hpp"

#include <cerrno>
#include <cstring>
#include <sys/vfs.h>

namespace pyimport {

const char* local_filesystem_name(long f_type) {
    // linux/magic.h, and ZFS's own.
    static constexpr struct {
        unsigned long magic;
        const char* name;
    } kLocal[] = {
        {0xEF53, "ext4"},      {0x58465342, "xfs"},     {0x9123683E, "btrfs"},
        {0x2FC12FC1, "zfs"},   {0xF2F52010, "f2fs"},    {0x01021994, "tmpfs"},
        {0x858458F6, "ramfs"}, {0x794C7630, "overlay"}, {0x73717368, "squashfs"},
        {0xE0F5E1E2, "erofs"}, {0x3153464A, "jfs"},     {0x52654973, "reiserfs"},
        {0x9660, "iso9660"},
    };
    for (const auto& local : kLocal)
        if (static_cast<unsigned long>(f_type) == local.magic) return local.name;
    return nullptr;
}

bool on_local_filesystems(const std::vector<std::string>& paths, std::string& names) {
    names.clear();
    bool any = false;
    for (const std::string& path : paths) {
        struct statfs fs {};
        if (statfs(path.c_str(), &fs) != 0) {
            if (errno == ENOENT || errno == ENOTDIR) continue; // absent: nothing to serve
            return false; // unknown (EIO, EACCES, ESTALE...): not known to be local
        }
        const char* name = local_filesystem_name(static_cast<long>(fs.f_type));
        if (!name) return false;
        any = true;
        if (names.find(name) == std::string::npos)
            names += (names.empty() ? "" : ", ") + std::string(name);
    }
    return any;
}

namespace {

std::string parent(const std::string& path) {
    size_t slash = path.find_last_of('/');
    return slash == std::string::npos || slash == 0 ? "/" : path.substr(0, slash);
}

void add_list(std::vector<std::string>& out, const char* value) {
    if (!value) return;
    const char* start = value;
    for (const char* p = value;; ++p) {
        if (*p == ':' || *p == '\0') {
            if (p > start && *start == '/') out.emplace_back(start, static_cast<size_t>(p - start));
            if (*p == '\0') break;
            start = p + 1;
        }
    }
}

} // namespace

std::vector<std::string> likely_trees(const char* (*lookup)(const char*),
                                      const std::vector<std::string>& command_line,
                                      const std::string& executable, const std::string& cwd) {
    std::vector<std::string> trees;
    auto absolute = [&](const std::string& path) {
        return path.empty() || path[0] == '/' ? path : cwd + "/" + path;
    };
    if (!executable.empty()) trees.push_back(parent(parent(executable)));
    if (!command_line.empty() && command_line[0].find('/') != std::string::npos)
        trees.push_back(parent(parent(absolute(command_line[0]))));
    for (const char* name : {"PYTHONHOME", "VIRTUAL_ENV"})
        if (const char* value = lookup(name); value && *value == '/') trees.emplace_back(value);
    add_list(trees, lookup("PYTHONPATH"));
    add_list(trees, lookup("PYIMPORT_PREFIX"));
    if (const char* home = lookup("HOME"); home && *home == '/') trees.emplace_back(home);
    // The script: the first argument that is not an option (-c and -m run
    // from the working directory; options with a value skip it).
    bool script_found = false;
    for (size_t i = 1; i < command_line.size(); ++i) {
        const std::string& arg = command_line[i];
        if (arg == "-c" || arg == "-m" || arg == "-") break;
        if (arg.size() > 1 && arg[0] == '-') {
            if (arg == "-W" || arg == "-X" || arg == "--check-hash-based-pycs") ++i;
            continue;
        }
        trees.push_back(parent(absolute(arg)));
        script_found = true;
        break;
    }
    if (!script_found && !cwd.empty()) trees.push_back(cwd);
    return trees;
}

} // namespace pyimport
