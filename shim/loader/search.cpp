#include "loader/search.hpp"

#include "base/real.hpp"
#include "base/text.hpp"
#include "loader/audit_link.hpp"

#include <cerrno>
#include <link.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

namespace pyimport {

namespace {

std::string directory_of(std::string_view path) {
    size_t slash = path.rfind('/');
    if (slash == std::string_view::npos) return std::string();
    return slash == 0 ? std::string("/") : std::string(path.substr(0, slash));
}

// The entries of one list (RPATH, RUNPATH: ':'; LD_LIBRARY_PATH: ':' or ';'),
// expanded as the loader expands them; an entry that cannot be (an unknown
// token, a relative or empty one: the working directory at the time) is a
// step the search cannot follow.
void add_list(std::string_view list, std::string_view separators, std::string_view origin,
              std::string_view lib, std::vector<SearchStep>& steps) {
    if (list.empty()) return;
    size_t start = 0;
    for (;;) {
        size_t end = list.find_first_of(separators, start);
        std::string_view item =
            list.substr(start, end == std::string_view::npos ? end : end - start);
        std::string dir;
        if (!item.empty() && expand_search_entry(item, {origin, "", lib}, dir) && !dir.empty() &&
            dir[0] == '/' && !(origin.empty() && item.find("ORIGIN") != std::string_view::npos)) {
            while (dir.size() > 1 && dir.back() == '/')
                dir.pop_back();
            steps.push_back({SearchStep::directory, dir});
        } else {
            steps.push_back({SearchStep::unknown, std::string(item)});
        }
        if (end == std::string_view::npos) break;
        start = end + 1;
    }
}

} // namespace

std::vector<SearchStep> search_steps(const Requester& requester, const DynamicInfo& program,
                                     const SearchSettings& settings) {
    std::vector<SearchStep> steps;
    std::string program_origin = directory_of(settings.executable);
    if (requester.dynamic.runpath.empty()) {
        if (!requester.dynamic.rpath.empty())
            add_list(requester.dynamic.rpath, ":", requester.origin, settings.lib, steps);
        // The RPATHs of the objects that loaded it, up to the program.
        if (requester.rpath_elsewhere) steps.push_back({SearchStep::unknown, "RPATH chain"});
        if (!requester.is_program && !program.rpath.empty())
            add_list(program.rpath, ":", program_origin, settings.lib, steps);
    }
    if (settings.library_path_set && !settings.library_path.empty())
        add_list(settings.library_path, ":;", program_origin, settings.lib, steps);
    if (!requester.dynamic.runpath.empty())
        add_list(requester.dynamic.runpath, ":", requester.origin, settings.lib, steps);
    // Without NODEFLIB the cache; then the system directories, not followed.
    if (!requester.dynamic.nodeflib) steps.push_back({SearchStep::cache, ""});
    steps.push_back({SearchStep::unknown, "system directories"});
    return steps;
}

void library_search_dirs(std::string_view path, const char* data, size_t size, std::string_view lib,
                         std::vector<std::string>& dirs) {
    DynamicInfo info;
    if (read_dynamic(data, size, info) != ElfRead::Read) return;
    std::vector<SearchStep> steps;
    std::string origin = directory_of(path);
    add_list(info.rpath, ":", origin, lib, steps);
    add_list(info.runpath, ":", origin, lib, steps);
    for (SearchStep& step : steps)
        if (step.kind == SearchStep::directory) dirs.push_back(std::move(step.dir));
}

std::vector<FileId> loaded_library_files() {
    struct Walk {
        AuditInterface* audit = find_audit_interface();
        std::vector<FileId> files;
    } walk;
    dl_iterate_phdr(
        [](struct dl_phdr_info* info, size_t, void* data) {
            auto* w = static_cast<Walk*>(data);
            const char* name = info->dlpi_name;
            if (const char* original = audit_original(w->audit, name))
                name = original; // the copy is of that file
            struct stat st {};
            if (name && name[0] == '/' && REAL(stat)(name, &st) == 0)
                w->files.push_back({major(st.st_dev), minor(st.st_dev), st.st_ino});
            return 0;
        },
        &walk);
    return walk.files;
}

std::vector<std::string> library_path_dirs(std::string_view value, std::string_view executable,
                                           std::string_view lib) {
    std::vector<SearchStep> steps;
    std::vector<std::string> dirs;
    add_list(value, ":;", directory_of(executable), lib, steps);
    for (SearchStep& step : steps)
        if (step.kind == SearchStep::directory) dirs.push_back(std::move(step.dir));
    return dirs;
}

LibrarySearch::LibrarySearch(Libraries& libraries, SearchSettings settings, LdCache cache)
    : libraries_(libraries), settings_(std::move(settings)), cache_(std::move(cache)) {}

std::string LibrarySearch::original(const std::string& path) const {
    const std::string& root = libraries_.root();
    if (path.size() > root.size() && path.starts_with(root) && path[root.size()] == '/')
        return path.substr(root.size());
    return path;
}

// Whether `dir` holds `name` as the loader would find it there.
LibrarySearch::Look LibrarySearch::look_in(const std::string& dir, std::string_view name,
                                           std::string& file) {
    const Tree& tree = libraries_.tree();
    const Snapshot& snapshot = tree.snapshot();
    Resolution d = tree.resolve(Position{}, dir, true);
    if (d.kind == Resolution::Failed)
        return d.error == ENOENT || d.error == ENOTDIR ? Look::absent : Look::unknown;
    if (d.kind != Resolution::Found || !tree.is_dir(d.entry)) return Look::unknown;
    const Entry& de = snapshot.entry(d.entry);
    if ((de.flags & kNoStat) || !(de.flags & kHasListing)) return Look::unknown;
    // Capability subdirectories are searched first, with rules of their own.
    const ListingItem* items = snapshot.listing(d.entry);
    for (uint32_t i = 0; i < de.listing_count; ++i) {
        if (items[i].dots) continue;
        uint32_t child = items[i].entry;
        mode_t mode = snapshot.entry(child).st.mode;
        if ((S_ISDIR(mode) || S_ISLNK(mode)) && is_capability_directory(snapshot.name(child)))
            return Look::unknown;
    }
    file = dir + "/" + std::string(name);
    Resolution f = tree.resolve(Position{}, file, true);
    if (f.kind == Resolution::Failed) return f.error == ENOENT ? Look::absent : Look::unknown;
    if (f.kind != Resolution::Found) return Look::unknown;
    const Entry& fe = snapshot.entry(f.entry);
    if (!S_ISREG(fe.st.mode) || !(fe.flags & kHasContent)) return Look::unknown;
    DynamicInfo info;
    // Another class or machine is skipped by the loader; not followed here.
    if (read_dynamic(snapshot.content(f.entry), fe.content_len, info) != ElfRead::Read)
        return Look::unknown;
    return Look::found;
}

bool LibrarySearch::find(std::string_view name, const Requester& requester,
                         const DynamicInfo& program, std::string& path) {
    if (name.empty() || name.find('/') != std::string_view::npos) return false;
    for (const SearchStep& step : search_steps(requester, program, settings_)) {
        if (step.kind == SearchStep::unknown) return false;
        if (step.kind == SearchStep::cache) {
            std::string cached;
            if (cache_.lookup(name, cached) != LdCache::Answer::found) return false;
            struct stat st {};
            // A stale entry: the loader goes on to the system directories.
            if (REAL(stat)(cached.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
            path = std::move(cached);
            return true;
        }
        std::string file;
        Look look = look_in(original(step.dir), name, file);
        if (look == Look::unknown) return false;
        if (look == Look::found) return libraries_.answer_search(file, path);
    }
    return false;
}

const char* LibrarySearch::resolve(const char* name, const void* requester_map) noexcept {
    try {
        const auto* map = static_cast<const struct link_map*>(requester_map);
        if (!name || !map) return nullptr;
        const struct link_map* head = map;
        while (head->l_prev)
            head = head->l_prev;
        if (head != _r_debug.r_map) return nullptr; // another namespace (dlmopen)
        Requester requester;
        DynamicInfo program;
        if (!read_loaded_dynamic(map->l_ld, map->l_addr, requester.dynamic) ||
            !read_loaded_dynamic(head->l_ld, head->l_addr, program) || requester.dynamic.filters)
            return nullptr;
        requester.is_program = map == head;
        std::string_view loaded_name = map->l_name ? map->l_name : "";
        requester.origin =
            requester.is_program ? directory_of(settings_.executable) : directory_of(loaded_name);
        if (requester.origin.empty()) return nullptr;
        for (const struct link_map* l = head->l_next; l && !requester.rpath_elsewhere;
             l = l->l_next) {
            DynamicInfo other;
            if (l != map && read_loaded_dynamic(l->l_ld, l->l_addr, other))
                requester.rpath_elsewhere = !other.rpath.empty();
        }
        std::lock_guard lock(mutex_);
        std::string path;
        if (!find(name, requester, program, path)) return nullptr;
        return answers_.insert(std::move(path)).first->c_str();
    } catch (...) {
        return nullptr;
    }
}

} // namespace pyimport
