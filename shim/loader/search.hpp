// The loader's search for a library by name, emulated over the snapshot. For a
// name without a slash that a loaded object needs (DT_NEEDED) or dlopens,
// glibc's loader (elf/dl-load.c, _dl_map_object) tries, in order: the
// requester's DT_RPATH and those of the objects that loaded it, unless it has
// a DT_RUNPATH; the program's DT_RPATH; LD_LIBRARY_PATH; the requester's
// DT_RUNPATH; the ld.so cache; the system directories. In each directory the
// glibc-hwcaps and legacy capability subdirectories come first, and a file of
// another class or machine is skipped.
//
// Where every directory before the hit is in the snapshot, completely, the
// answer is the file the loader would open: the audit library hands the
// loader that path at LA_SER_ORIG, and the loader probes nothing. Anything
// the emulation cannot follow (a directory outside the snapshot, capability
// subdirectories, the ld.so cache's hardware entries, the system
// directories, another object's RPATH in the chain) leaves the search to the
// loader.
#pragma once

#include "loader/elf.hpp"
#include "loader/ld_cache.hpp"
#include "loader/libraries.hpp"

#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace pyimport {

// What the loader read at start that the search depends on.
struct SearchSettings {
    bool library_path_set = false; // LD_LIBRARY_PATH
    std::string library_path;
    std::string executable; // the program's path: the $ORIGIN of it and of LD_LIBRARY_PATH
    std::string lib;        // $LIB, empty if unknown
    // The loader's system directories, ':'-separated (empty: not followed).
    std::string system_dirs = PYIMPORT_LOADER_SYSTEM_DIRS;
};

// The object whose dependency or dlopen is searched for.
struct Requester {
    std::string origin;  // its $ORIGIN: the directory of the name it was loaded by
    DynamicInfo dynamic; // its RPATH (only without a RUNPATH), RUNPATH, NODEFLIB
    bool is_program = false;
    // Another loaded object than the requester and the program has a
    // DT_RPATH: the chain of loaders (not visible from outside the loader)
    // may pass through it.
    bool rpath_elsewhere = false;
};

// One place the loader looks, in its order.
struct SearchStep {
    enum Kind { directory, cache, system, unknown } kind; // unknown: an entry not followed here
    std::string dir;
};

// A directory below the loader's system directories (its own, local; a
// RUNPATH of the system's libraries, like UCX's plug-ins), listed with the
// real libc once: whether the loader would find nothing there.
class LocalDirectories {
  public:
    explicit LocalDirectories(std::string system_dirs) : system_dirs_(std::move(system_dirs)) {}
    enum class Holds { nothing, maybe, not_local };
    Holds lookup(const std::string& dir, std::string_view name);
    // A system directory's step of the search: true with `path` when the
    // loader takes `name` from `dir` (a shared object for this machine there,
    // no capability subdirectory), false when it is the loader's to decide;
    // `absent` when it goes on past `dir`.
    bool system_step(const std::string& dir, std::string_view name, std::string& path,
                     bool& absent);

  private:
    struct Listing {
        bool exists = false, capability = false;
        std::unordered_set<std::string> names;
    };
    std::string system_dirs_;
    std::unordered_map<std::string, Listing> listings_;
};

// Where a search that finds nothing sends the loader (under the mirror's
// root, never present): its error names the library as the loader's own
// does once dlerror (entry/dl.cpp) has removed the root and this.
inline constexpr const char* kMissingDirectory = "/.pyimport-missing/";

std::vector<SearchStep> search_steps(const Requester& requester, const DynamicInfo& program,
                                     const SearchSettings& settings);

// Before the snapshot (the MPI library's loads at start-up): the same search
// for requesters the loader searches only LD_LIBRARY_PATH and the ld.so cache
// for (no RPATH or RUNPATH in them, the program or anything loaded), over the
// names of LD_LIBRARY_PATH's directories that the node's leader listed
// (audit/interface.hpp). A name in a listed directory is the loader's to find.
class EarlySearch {
  public:
    // `missing_root`: where a library that is nowhere is sent (the audit
    // library's copies' root, which dlerror removes; empty: not answered).
    EarlySearch(std::string_view listing, SearchSettings settings, LdCache cache,
                std::string missing_root);
    const char* resolve(const char* name, const void* requester) noexcept;
    // The same for a requester described by hand (the unit tests).
    bool find(std::string_view name, const Requester& requester, const DynamicInfo& program,
              std::string& path);

  private:
    struct Listed {
        enum { listed, absent, unknown } state;
        std::unordered_set<std::string> names;
    };
    std::unordered_map<std::string, Listed> dirs_;
    std::string missing_root_;
    SearchSettings settings_;
    LdCache cache_;
    std::mutex mutex_;
    std::unordered_set<std::string> answers_;
    LocalDirectories local_{settings_.system_dirs};
};

// For the walk (image/walk.hpp): the absolute directories the loader may
// search for the dependencies of the library at `path` with bytes `data`
// (its RPATH and RUNPATH, $ORIGIN and $LIB expanded), appended to `dirs`.
void library_search_dirs(std::string_view path, const char* data, size_t size, std::string_view lib,
                         std::vector<std::string>& dirs);

// The files of the objects this process has loaded (device and inode).
std::vector<FileId> loaded_library_files();

// LD_LIBRARY_PATH's absolute directories ($ORIGIN: the program's).
std::vector<std::string> library_path_dirs(std::string_view value, std::string_view executable,
                                           std::string_view lib);

class LibrarySearch {
  public:
    LibrarySearch(Libraries& libraries, SearchSettings settings, LdCache cache);

    // The path the loader should open for `name` (no slash) searched for by
    // the loaded object `requester` (a struct link_map*), or nullptr: search
    // as usual. Called from inside the loader, its lock held: takes only the
    // shim's own locks, loads nothing, never throws. The path stays valid.
    const char* resolve(const char* name, const void* requester) noexcept;

    // The same for a requester described by hand (the unit tests): true with
    // the path, false when the search is the loader's.
    bool find(std::string_view name, const Requester& requester, const DynamicInfo& program,
              std::string& path);

  private:
    enum class Look { found, absent, unknown };
    Look look_in(const std::string& dir, std::string_view name, std::string& file);
    std::string original(const std::string& path) const; // a mirror path's original

    Libraries& libraries_;
    SearchSettings settings_;
    LdCache cache_;
    std::mutex mutex_;
    std::unordered_set<std::string> answers_;           // what resolve() returned, for good
    std::unordered_map<std::string, bool> absent_dirs_; // outside the snapshot: absent?
    LocalDirectories local_{settings_.system_dirs};
};

} // namespace pyimport
