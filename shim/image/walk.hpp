// The walk that builds an image: rank 0 reads the prefixes with the real
// libc, asking the filesystem as little as it can, and encodes what it saw
// (image.hpp).
#pragma once

#include "image/image.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace pyimport {

// The files whose bytes did not fit in BuildOptions::max_bytes (their stat is
// cached, their bytes are read from the filesystem).
struct NotCached {
    uint32_t files = 0;
    uint64_t bytes = 0;     // their sizes, together
    uint32_t libraries = 0; // of `files`, how many are shared libraries
};

struct BuildOptions {
    std::vector<std::string> prefixes; // absolute; missing ones are an error if `required`
    bool prefixes_required = false;    // user-given prefixes must exist
    std::vector<std::string> content_suffixes;
    // Regular files whose stat is recorded besides the content ones ("*":
    // all). Others get kNoStat: listed, but their calls are forwarded.
    std::vector<std::string> stat_suffixes;
    // Directory names not walked (kNoStat): lookups under them are forwarded.
    std::vector<std::string> exclude;
    // A profile (profile.hpp): if set, only these paths, their ancestors'
    // listings and every symlink are recorded; other entries get kNoStat.
    // `exclude` and `stat_suffixes` then do not apply.
    const std::unordered_set<std::string>* profile = nullptr;
    // The most bytes of file contents cached (the image's data). Metadata
    // (stats, listings, names, link targets) is always recorded; files whose
    // bytes do not fit keep their stat and are read from the filesystem.
    // Small files go first: a file that does not fit evicts a larger cached
    // one, so the budget holds as many files as it can.
    uint64_t max_bytes = 0;
    // Shared libraries (library_name.hpp) get their bytes cached too, under
    // the same budget.
    bool libraries = false;
    NotCached* not_cached = nullptr; // out: what did not fit in max_bytes
    // "cpython-311": a .py whose __pycache__/NAME.cpython-311.pyc exists is
    // not read (the interpreter reads the .pyc); empty: always read.
    std::string cache_tag;
    // Single paths outside the prefixes, answered present or absent from the
    // snapshot (the interpreter's start-up probes, the script, zip archives
    // on sys.path): each is recorded in a partial root (kPartial) at the
    // deepest directory above it that exists; `content`: its bytes too.
    struct Probe {
        std::string path; // absolute
        bool content = false;
    };
    std::vector<Probe> probes;
    // Directories others may write into during the job (the script's):
    // walked as live roots (kLive), their module names and packages only.
    std::vector<std::string> live_roots;
    // The directories the dynamic loader searches for what the cached
    // libraries need, outside the prefixes: `search_dirs` adds those a
    // library names (absolute RPATH and RUNPATH entries), given its path and
    // bytes; `library_path` are LD_LIBRARY_PATH's. Each is recorded as a
    // library root (kIsRoot, not walked further): its listing, the stat of
    // every entry but its subdirectories (by name and type), the bytes of its
    // libraries; and the libraries found there are asked in turn. The
    // system's own directories are not among them.
    std::function<void(std::string_view path, const char* data, size_t size,
                       std::vector<std::string>& dirs)>
        search_dirs;
    std::vector<std::string> library_path;
    size_t max_library_roots = 64;
    // A library that this process has loaded (its stat):
    // every rank loaded it at start the same way, and finds it loaded again
    // by name, so only its stat is kept.
    std::function<bool(const StatRecord& st)> loaded;
};

// Walks the prefixes with the real libc and encodes the image. Returns false
// with a one-line reason on a fault (missing prefix, memory, more entries
// than the format holds); the budget is never one.
bool build_snapshot(const BuildOptions& options, std::vector<char>& image, std::string& error);

} // namespace pyimport
