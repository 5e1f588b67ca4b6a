#include "loader/libraries.hpp"

#include "base/real.hpp"
#include "base/text.hpp"
#include "loader/elf.hpp"

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

std::string_view platform_name() {
    const char* p = reinterpret_cast<const char*>(getauxval(AT_PLATFORM));
    return p ? std::string_view(p) : std::string_view();
}

bool is_capability_directory_on(std::string_view name, std::string_view platform) {
    return name == "glibc-hwcaps" || name == "tls" || name == "haswell" || name == "xeon_phi" ||
           name == "avx512_1" || name == "x86_64" || name == "i686" || name == "aarch64" ||
           (!platform.empty() && name == platform);
}

struct Object {
    std::string path; // as the loader will name it (its $ORIGIN is the directory of this)
    uint32_t entry;
};

} // namespace

bool is_capability_directory(std::string_view name) {
    return is_capability_directory_on(name, platform_name());
}

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

FileId Libraries::file_id(uint32_t entry) const {
    const StatRecord& st = tree_.snapshot().entry(entry).st;
    return {st.dev_major, st.dev_minor, st.ino};
}

// What file a loaded object was loaded from: the snapshot's entry for its
// name (for one loaded from the mirror: the file it copies), or else a stat
// of its name. False if neither tells.
bool Libraries::identify(std::string_view name, size_t root_size, FileId& id) const {
    bool mirrored = root_size > 0;
    std::string real(name.substr(root_size));
    // Not a use of the file by the program (the profile learns nothing).
    Resolution r = tree_.resolve_quietly(Position{}, real, true);
    if (r.kind == Resolution::Found && !r.followed) return id = file_id(r.entry), true;
    if (mirrored) return false; // no longer in the snapshot (changed): it stays as loaded
    struct stat st {};
    if (REAL(stat)(real.c_str(), &st) != 0) return false;
    id = {major(st.st_dev), minor(st.st_dev), st.st_ino};
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
            auto under = [&](const std::string& root) {
                return !root.empty() && name.size() > root.size() && name.starts_with(root) &&
                       name[root.size()] == '/';
            };
            size_t root_size = under(w->self->root())         ? w->self->root().size()
                               : under(w->self->copies_root_) ? w->self->copies_root_.size()
                                                              : 0;
            bool mirrored = root_size > 0;
            // A loaded object stays the file it was loaded from: identified
            // once per name and load address (not in a fork child, which
            // must not touch what a parent thread may have been changing).
            auto& known = w->self->identities_;
            auto key = std::make_pair(std::string(name), static_cast<uintptr_t>(info->dlpi_addr));
            auto it = w->quietly ? known.end() : known.find(key);
            FileId id;
            if (it != known.end()) {
                id = it->second;
            } else if (w->self->identify(name, root_size, id)) {
                if (!w->quietly) known.emplace(std::move(key), id);
            } else {
                return 0;
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
    uint32_t top = mirror_->materialise(tree_, path);
    if (top == kNoEntry) return false;
    std::string_view platform = platform_name();
    std::vector<Object> queue{{path, top}};
    std::unordered_set<uint32_t> seen{top};
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
            if ((S_ISDIR(mode) || S_ISLNK(mode)) && is_capability_directory_on(name, platform))
                return false;
            if (!is_library_name(name)) continue;
            std::string file = dir + "/" + std::string(name);
            uint32_t entry = mirror_->materialise(tree_, file);
            if (entry == kNoEntry) return false;
            if (seen.insert(entry).second) queue.push_back({file, entry});
        }
        return true;
    };

    while (!queue.empty()) {
        Object object = std::move(queue.back());
        queue.pop_back();
        // Loaded from the filesystem already: the loader would find the copy
        // a different file (by inode) and load it a second time.
        auto known = loaded.find(file_id(object.entry));
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
            for (std::string_view item : split(list, ':')) {
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

// prepare(), decided once per path until the tree changes (under mutex_).
bool Libraries::prepared(const std::string& path, const LoadedFiles& loaded) {
    uint64_t changes = tree_.changes();
    auto known = prepared_.find(path);
    if (known != prepared_.end() && known->second.changes == changes) return known->second.ok;
    bool ok = prepare(path, loaded);
    prepared_[path] = {ok, changes};
    return ok;
}

bool Libraries::answer_search(const std::string& path, std::string& local) {
    std::lock_guard lock(mutex_);
    Resolution r = tree_.resolve(Position{}, path, true);
    if (r.kind != Resolution::Found) return false;
    LoadedFiles loaded = loaded_files(false);
    auto it = loaded.find(file_id(r.entry));
    if (it != loaded.end()) {
        local = it->second.name; // the loader would find it loaded (device and inode)
        return true;
    }
    local = closed_ || !prepared(path, loaded) ? path : root() + path;
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
    LoadedFiles loaded = loaded_files(true);
    auto it = loaded.find(file_id(r.entry));
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
    auto it = loaded.find(file_id(r.entry));
    if (it != loaded.end()) {
        if (it->second.mirrored) local = it->second.name;
        return it->second.mirrored;
    }
    if (closed_ || (mode & RTLD_NOLOAD)) return false; // NOLOAD: not loaded, so not at all

    bool ok = prepared(path, loaded);
    if (ok) local = root() + path;
    return ok;
}

} // namespace pyimport
