#include "loader/search.hpp"

#include "base/real.hpp"
#include "base/text.hpp"
#include "loader/audit_link.hpp"

#include <cerrno>
#include <dirent.h>
#include <fcntl.h>
#include <link.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

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

// The requester of a search, from its link map (the loader's, in memory).
bool read_requester(const void* requester_map, const SearchSettings& settings, Requester& requester,
                    DynamicInfo& program) {
    const auto* map = static_cast<const struct link_map*>(requester_map);
    if (!map) return false;
    const struct link_map* head = map;
    while (head->l_prev)
        head = head->l_prev;
    if (head != _r_debug.r_map) return false; // another namespace (dlmopen)
    if (!read_loaded_dynamic(map->l_ld, map->l_addr, requester.dynamic) ||
        !read_loaded_dynamic(head->l_ld, head->l_addr, program) || requester.dynamic.filters)
        return false;
    requester.is_program = map == head;
    std::string_view loaded_name = map->l_name ? map->l_name : "";
    requester.origin =
        requester.is_program ? directory_of(settings.executable) : directory_of(loaded_name);
    if (requester.origin.empty()) return false;
    for (const struct link_map* l = head->l_next; l && !requester.rpath_elsewhere; l = l->l_next) {
        DynamicInfo other;
        if (l != map && read_loaded_dynamic(l->l_ld, l->l_addr, other))
            requester.rpath_elsewhere = !other.rpath.empty();
    }
    return true;
}

// A path from the ld.so cache that is there (a stale entry: the loader goes
// on to the system directories).
bool cached_path(const LdCache& cache, std::string_view name, std::string& path) {
    std::string cached;
    if (cache.lookup(name, cached) != LdCache::Answer::found) return false;
    struct stat st {};
    if (REAL(stat)(cached.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
    path = std::move(cached);
    return true;
}

// A search's answer for the loader: the requester read from its link map,
// `find` under `mutex`, the path kept in `answers` for good. Never throws.
template <typename Find>
const char* answer(const char* name, const void* requester_map, const SearchSettings& settings,
                   std::mutex& mutex, std::unordered_set<std::string>& answers,
                   Find find) noexcept {
    try {
        Requester requester;
        DynamicInfo program;
        if (!name || !read_requester(requester_map, settings, requester, program)) return nullptr;
        std::lock_guard lock(mutex);
        std::string path;
        if (!find(name, requester, program, path)) return nullptr;
        return answers.insert(std::move(path)).first->c_str();
    } catch (...) {
        return nullptr;
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
    // Without NODEFLIB the cache, then the system directories.
    if (!requester.dynamic.nodeflib) {
        steps.push_back({SearchStep::cache, ""});
        if (settings.system_dirs.empty()) steps.push_back({SearchStep::unknown, "system"});
        for (std::string_view dir : split(settings.system_dirs, ':'))
            if (!dir.empty()) steps.push_back({SearchStep::system, std::string(dir)});
    }
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
        AuditInterface* audit = audit_interface();
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

LocalDirectories::Holds LocalDirectories::lookup(const std::string& dir, std::string_view name) {
    bool local = false;
    for (std::string_view system : split(system_dirs_, ':'))
        local =
            local || (!system.empty() &&
                      (dir == system || (dir.starts_with(system) && dir[system.size()] == '/')));
    if (!local) return Holds::not_local;
    auto it = listings_.find(dir);
    if (it == listings_.end()) {
        Listing listing;
        if (DIR* d = REAL(opendir)(dir.c_str())) {
            listing.exists = true;
            while (struct dirent* e = REAL(readdir)(d)) {
                listing.names.insert(e->d_name);
                listing.capability = listing.capability || is_capability_directory(e->d_name);
            }
            REAL(closedir)(d);
        } else if (errno != ENOENT && errno != ENOTDIR) {
            listing.capability = true; // unreadable: not followed
            listing.exists = true;
        }
        it = listings_.emplace(dir, std::move(listing)).first;
    }
    const Listing& l = it->second;
    if (!l.exists) return Holds::nothing;
    return l.capability || l.names.count(std::string(name)) ? Holds::maybe : Holds::nothing;
}

bool LocalDirectories::system_step(const std::string& dir, std::string_view name, std::string& path,
                                   bool& absent) {
    absent = false;
    Holds holds = lookup(dir, name);
    if (holds == Holds::nothing) return absent = true, false;
    if (holds == Holds::not_local) return false;
    const Listing& l = listings_.at(dir);
    if (l.capability) return false;
    // The header the loader checks first (open_verify): one of this machine's.
    std::string file = dir + "/" + std::string(name);
    int fd = REAL(open)(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    char header[64];
    ssize_t got = ::pread(fd, header, sizeof header, 0);
    REAL(close)(fd);
    DynamicInfo ignored;
    if (got != static_cast<ssize_t>(sizeof header) ||
        read_dynamic(header, sizeof header, ignored) == ElfRead::NotLoadable)
        return false;
    path = std::move(file);
    return true;
}

namespace {

// The ld.so cache's and the system directories' steps, for both searches:
// found (`path`), on to the next step, or the loader's to decide.
enum class Step { found, next, loader };

Step last_steps(const SearchStep& step, std::string_view name, const LdCache& cache,
                LocalDirectories& local, std::string& path) {
    if (step.kind == SearchStep::system) {
        bool absent = false;
        if (local.system_step(step.dir, name, path, absent)) return Step::found;
        return absent ? Step::next : Step::loader;
    }
    // Only a cache that says "none" lets the search go on: one not read, or
    // entries for hardware capabilities, are the loader's.
    std::string cached;
    LdCache::Answer answer = cache.lookup(name, cached);
    if (answer == LdCache::Answer::unknown) return Step::loader;
    if (cached_path(cache, name, path)) return Step::found;
    return answer == LdCache::Answer::found ? Step::loader : Step::next; // stale: not followed
}

// Both searches: each step in order, a directory's decided by `in_directory`;
// a library that is nowhere is sent under `missing_root` (empty: the loader's).
template <typename InDirectory>
bool follow_steps(const std::vector<SearchStep>& steps, std::string_view name,
                  const Requester& requester, const LdCache& cache, LocalDirectories& local,
                  const std::string& missing_root, std::string& path, InDirectory in_directory) {
    if (name.empty() || name.find('/') != std::string_view::npos) return false;
    bool searched = false;
    for (const SearchStep& step : steps) {
        Step next = step.kind == SearchStep::unknown ? Step::loader
                    : step.kind == SearchStep::directory
                        ? in_directory(step)
                        : last_steps(step, name, cache, local, path);
        if (next != Step::next) return next == Step::found;
        searched = searched || step.kind == SearchStep::system;
    }
    if (!searched || requester.dynamic.nodeflib || missing_root.empty()) return false;
    path = missing_root + kMissingDirectory + std::string(name); // nowhere
    return true;
}

} // namespace

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
    if (d.kind == Resolution::Forward) {
        switch (local_.lookup(dir, name)) {
        case LocalDirectories::Holds::nothing:
            return Look::absent;
        case LocalDirectories::Holds::maybe:
            return Look::unknown;
        case LocalDirectories::Holds::not_local:
            break;
        }
        // Outside the snapshot: rank 0 recorded every search directory that
        // exists, so this one most likely does not; one stat tells, once.
        auto known = absent_dirs_.find(dir);
        if (known == absent_dirs_.end()) {
            struct stat st {};
            bool absent =
                REAL(stat)(dir.c_str(), &st) != 0 && (errno == ENOENT || errno == ENOTDIR);
            known = absent_dirs_.emplace(dir, absent).first;
        }
        return known->second ? Look::absent : Look::unknown;
    }
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
    return follow_steps(search_steps(requester, program, settings_), name, requester, cache_,
                        local_, libraries_.root(), path, [&](const SearchStep& step) {
                            std::string file;
                            Look look = look_in(original(step.dir), name, file);
                            if (look == Look::unknown) return Step::loader;
                            if (look == Look::absent) return Step::next;
                            return libraries_.answer_search(file, path) ? Step::found
                                                                        : Step::loader;
                        });
}

const char* LibrarySearch::resolve(const char* name, const void* requester) noexcept {
    return answer(name, requester, settings_, mutex_, answers_,
                  [this](std::string_view n, const Requester& r, const DynamicInfo& p,
                         std::string& path) { return find(n, r, p, path); });
}

EarlySearch::EarlySearch(std::string_view listing, SearchSettings settings, LdCache cache,
                         std::string missing_root)
    : missing_root_(std::move(missing_root)), settings_(std::move(settings)),
      cache_(std::move(cache)) {
    Listed* current = nullptr;
    for (size_t at = 0; at < listing.size();) {
        size_t end = listing.find('\0', at);
        if (end == std::string_view::npos) break;
        std::string_view item = listing.substr(at, end - at);
        at = end + 1;
        if (item.empty()) continue;
        std::string rest(item.substr(1));
        switch (item[0]) {
        case 'D':
            current = &dirs_[rest];
            current->state = Listed::listed;
            break;
        case 'A':
            dirs_[rest].state = Listed::absent;
            current = nullptr;
            break;
        case 'N':
            if (current) current->names.insert(std::move(rest));
            break;
        default:
            dirs_[rest].state = Listed::unknown;
            current = nullptr;
        }
    }
}

bool EarlySearch::find(std::string_view name, const Requester& requester,
                       const DynamicInfo& program, std::string& path) {
    return follow_steps(
        search_steps(requester, program, settings_), name, requester, cache_, local_, missing_root_,
        path, [&](const SearchStep& step) {
            auto it = dirs_.find(step.dir);
            if (it == dirs_.end()) // not LD_LIBRARY_PATH's: a RUNPATH's, if local
                return local_.lookup(step.dir, name) == LocalDirectories::Holds::nothing
                           ? Step::next
                           : Step::loader;
            if (it->second.state == Listed::unknown) return Step::loader;
            if (it->second.state == Listed::absent) return Step::next;
            for (const std::string& n : it->second.names)
                if (is_capability_directory(n)) return Step::loader;
            // There: the loader's to take.
            return it->second.names.count(std::string(name)) ? Step::loader : Step::next;
        });
}

const char* EarlySearch::resolve(const char* name, const void* requester) noexcept {
    return answer(name, requester, settings_, mutex_, answers_,
                  [this](std::string_view n, const Requester& r, const DynamicInfo& p,
                         std::string& path) { return find(n, r, p, path); });
}

} // namespace pyimport
