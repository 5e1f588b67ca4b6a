#include "startup/local_filesystems.hpp"

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
        if (statfs(path.c_str(), &fs) != 0) continue; // absent: nothing of it to serve
        const char* name = local_filesystem_name(static_cast<long>(fs.f_type));
        if (!name) return false;
        any = true;
        if (names.find(name) == std::string::npos)
            names += (names.empty() ? "" : ", ") + std::string(name);
    }
    return any;
}

} // namespace pyimport
