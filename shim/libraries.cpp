#include "libraries.hpp"

#include "elf.hpp"
#include "real.hpp"

#include <cerrno>
#include <dlfcn.h>
#include <link.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unordered_set>
#include <vector>

namespace pyimport {

namespace {

// Subdirectories the loader searches before a search directory itself
// (glibc-hwcaps since glibc 2.33; the legacy ones before 2.37). The mirror
// does not reproduce them: a search directory holding one is not served.
bool is_capability_directory(std::string_view name, std::string_view platform) {
    return name == "glibc-hwcaps" || name == "tls" || name == "haswell" || name == "xeon_phi" ||
           name == "avx512_1" || (!platform.empty() && name == platform);
}

std::string_view platform_name() {
    const char* p = reinterpret_cast<const char*>(getauxval(AT_PLATFORM));
    return p ? std::string_view(p) : std::string_view();
}

struct Object {
    std::string path; // as the loader will name it (its $ORIGIN is the directory of this)
    uint32_t entry;
};

} // namespace

bool expand_search_entry(std::string_view entry, const SearchTokens& tokens, std::string& out) {
    out.clear();
    for (size_t i = 0; i < entry.size();) {
        if (entry[i] != '$') {
            out += entry[i++];
            continue;
        }
        std::string_view name;
        size_t next;
        if (i + 1 < entry.size() && entry[i + 1] == '{') {
            size_t close = entry.find('}', i + 2);
            if (close == std::string_view::npos) return false;
            name = entry.substr(i + 2, close - i - 2);
            next = close + 1;
        } else {
            size_t end = i + 1;
            while (end < entry.size() &&
                   (isalnum(static_cast<unsigned char>(entry[end])) || entry[end] == '_'))
                ++end;
            name = entry.substr(i + 1, end - i - 1);
            next = end;
        }
        if (name == "ORIGIN")
            out += tokens.origin;
        else if (name == "PLATFORM" && !tokens.platform.empty())
            out += tokens.platform;
        else if (name == "LIB" && !tokens.lib.empty())
            out += tokens.lib;
        else
            return false;
        i = next;
    }
    return true;
}

Libraries::Libraries(const Tree& tree, std::unique_ptr<NodeMirror> mirror)
    : tree_(tree), mirror_(std::move(mirror)) {
    // $LIB is the loader's build-time constant, read from the build machine's
    // loader: trusted only if this process's libc lies in such a directory.
    std::string_view lib = PYIMPORT_LOADER_LIB;
    Dl_info info{};
    if (!lib.empty() && REAL(dladdr)(reinterpret_cast<void*>(&getauxval), &info) &&
        info.dli_fname) {
        std::string_view libc = info.dli_fname;
        std::string dir = "/" + std::string(lib) + "/";
        size_t at = libc.rfind('/');
        if (at != std::string_view::npos && libc.substr(0, at + 1).ends_with(dir))
            loader_lib_ = lib;
    }
}

bool Libraries::file_id(uint32_t entry, FileId& id) const {
    const StatRecord& st = tree_.snapshot().entry(entry).st;
    id = {st.dev_major, st.dev_minor, st.ino};
    return true;
}

Libraries::LoadedFiles Libraries::loaded_files(bool quietly) const {
    struct Walk {
        const Libraries* self;
        bool quietly;
        LoadedFiles files;
    } walk{this, quietly, {}};
    dl_iterate_phdr(
        [](struct dl_phdr_info* info, size_t, void* data) {
            auto* w = static_cast<Walk*>(data);
            if (!info->dlpi_name || info->dlpi_name[0] != '/') return 0;
            std::string_view name = info->dlpi_name;
            const std::string& root = w->self->root();
            bool mirrored =
                name.size() > root.size() && name.starts_with(root) && name[root.size()] == '/';
            std::string real(mirrored ? name.substr(root.size()) : name);
            const Tree& tree = w->self->tree_;
            Resolution r = w->quietly ? tree.resolve_quietly(Position{}, real, true)
                                      : tree.resolve(Position{}, real, true);
            FileId id;
            if (r.kind == Resolution::Found && !r.followed) {
                w->self->file_id(r.entry, id);
            } else if (mirrored) {
                return 0; // not in the snapshot any more (changed): stays as loaded
            } else {
                // Outside the prefixes: as the loader knows it, by device and
                // inode (a stat once per loaded object and load address).
                auto key = std::make_pair(real, static_cast<uintptr_t>(info->dlpi_addr));
                auto known =
                    w->quietly ? w->self->outside_ids_.end() : w->self->outside_ids_.find(key);
                if (known != w->self->outside_ids_.end()) {
                    id = known->second;
                } else {
                    struct stat st {};
                    if (REAL(stat)(real.c_str(), &st) != 0) return 0;
                    id = {major(st.st_dev), minor(st.st_dev), st.st_ino};
                    if (!w->quietly) w->self->outside_ids_.emplace(key, id);
                }
            }
            w->files.emplace(id, Loaded{std::string(name), mirrored});
            return 0;
        },
        &walk);
    return walk.files;
}

bool Libraries::prepare(const std::string& path) {
    return prepare(path, loaded_files(false));
}

bool Libraries::prepare(const std::string& path, const LoadedFiles& loaded) {
    const Snapshot& snapshot = tree_.snapshot();
    if (!mirror_->materialise(tree_, path)) return false;
    Resolution top = tree_.resolve(Position{}, path, true);
    if (top.kind != Resolution::Found) return false;
    std::string_view platform = platform_name();
    std::vector<Object> queue{{path, top.entry}};
    std::unordered_set<uint32_t> seen{top.entry};
    std::unordered_set<std::string> searched;

    // Makes `dir` in the mirror hold every library it holds on the filesystem.
    auto complete = [&](const std::string& dir) {
        if (!mirror_->contained(tree_, dir)) return false;
        Resolution d = tree_.resolve(Position{}, dir, true);
        if (d.kind == Resolution::Failed) return d.error == ENOENT || d.error == ENOTDIR;
        if (d.kind != Resolution::Found || !tree_.is_dir(d.entry)) return false;
        const Entry& de = snapshot.entry(d.entry);
        if ((de.flags & kNoStat) || !(de.flags & kHasListing)) return false;
        const ListingItem* items = snapshot.listing(d.entry);
        for (uint32_t i = 0; i < de.listing_count; ++i) {
            if (items[i].dots) continue;
            uint32_t child = items[i].entry;
            std::string_view name = snapshot.name(child);
            mode_t mode = snapshot.entry(child).st.mode;
            if ((S_ISDIR(mode) || S_ISLNK(mode)) && is_capability_directory(name, platform))
                return false;
            if (!is_library_name(name)) continue;
            std::string file = dir + "/" + std::string(name);
            if (!mirror_->materialise(tree_, file)) return false;
            Resolution r = tree_.resolve(Position{}, file, true);
            if (r.kind != Resolution::Found) return false;
            if (seen.insert(r.entry).second) queue.push_back({file, r.entry});
        }
        return true;
    };

    while (!queue.empty()) {
        Object object = std::move(queue.back());
        queue.pop_back();
        // Loaded from the filesystem already: the loader would find the copy
        // a different file (by inode) and load it a second time.
        FileId id;
        file_id(object.entry, id);
        auto known = loaded.find(id);
        if (known != loaded.end() && !known->second.mirrored) return false;
        DynamicInfo info;
        const Entry& e = snapshot.entry(object.entry);
        ElfRead read = read_dynamic(snapshot.content(object.entry), e.content_len, info);
        // Not a library this loader takes: it fails or skips it the same way
        // in the mirror, where the bytes are the same.
        if (read == ElfRead::NotLoadable) continue;
        if (read == ElfRead::Unreadable || info.filters) return false;
        for (std::string_view need : info.needed)
            if (need.find('/') != std::string_view::npos || !is_library_name(need)) return false;
        size_t slash = object.path.rfind('/');
        std::string origin = slash == 0 ? "/" : object.path.substr(0, slash);
        for (std::string_view list : {info.rpath, info.runpath}) {
            size_t at = 0;
            while (at <= list.size() && !list.empty()) {
                size_t end = list.find(':', at);
                if (end == std::string_view::npos) end = list.size();
                std::string_view item = list.substr(at, end - at);
                at = end + 1;
                // Only $ORIGIN entries lead the loader into the mirror.
                if (item.find("ORIGIN") == std::string_view::npos) continue;
                std::string dir;
                // $PLATFORM is not expanded: glibc's may differ from AT_PLATFORM.
                if (!expand_search_entry(item, {origin, "", loader_lib_}, dir)) return false;
                if (dir.empty() || dir[0] != '/') continue; // relative to the working directory
                if (searched.insert(dir).second && !complete(dir)) return false;
            }
        }
    }
    return true;
}

void Libraries::close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    mirror_->leave();
}

bool Libraries::loaded_from_mirror(const char* path, std::string& local) const {
    if (!path || path[0] != '/') return false;
    Resolution r = tree_.resolve_quietly(Position{}, path, true);
    if (r.kind != Resolution::Found || r.followed) return false;
    FileId id;
    file_id(r.entry, id);
    LoadedFiles loaded = loaded_files(true);
    auto it = loaded.find(id);
    if (it == loaded.end() || !it->second.mirrored) return false;
    local = it->second.name;
    return true;
}

bool Libraries::redirect(const char* path, int mode, std::string& local) {
    if (!path || path[0] != '/') return false;
    std::lock_guard lock(mutex_);
    Resolution r = tree_.resolve(Position{}, path, true);
    if (r.kind != Resolution::Found || r.followed) return false;
    const Entry& e = tree_.snapshot().entry(r.entry);
    if (!S_ISREG(e.st.mode) || !(e.flags & kHasContent)) return false;

    // Loaded already, by this path or another: the loader must be given the
    // name it knows, so the handle is the same.
    LoadedFiles loaded = loaded_files(false);
    FileId id;
    file_id(r.entry, id);
    auto it = loaded.find(id);
    if (it != loaded.end()) {
        if (it->second.mirrored) local = it->second.name;
        return it->second.mirrored;
    }
    if (closed_ || (mode & RTLD_NOLOAD)) return false; // NOLOAD: not loaded, so not at all

    uint64_t changes = tree_.changes();
    auto known = prepared_.find(path);
    bool ok;
    if (known != prepared_.end() && known->second.changes == changes) {
        ok = known->second.ok;
    } else {
        ok = prepare(path, loaded);
        prepared_[path] = {ok, changes};
    }
    if (ok) local = root() + path;
    return ok;
}

} // namespace pyimport
