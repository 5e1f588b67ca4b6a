// dlopen from the node-local mirror. The loader itself does the loading, by
// its own rules; the shim only decides whether a path given to dlopen can be
// given as root() + path instead, which holds when everything the loader may
// read for it through the mirror is there exactly as on the filesystem:
//
// - the file, and every directory and symlink on its way;
// - for it and for every library the loader may take from the mirror, every
//   directory named by a DT_RPATH or DT_RUNPATH entry with $ORIGIN (the ones
//   the loader then searches in the mirror), complete: each library-named
//   entry of it, itself mirrored and followed the same way.
//
// Search directories without $ORIGIN (absolute RPATH/RUNPATH entries,
// LD_LIBRARY_PATH, the ld.so cache, the system directories) are read by the
// loader from the filesystem as usual.
#pragma once

#include "mirror.hpp"
#include "tree.hpp"

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace pyimport {

class Libraries {
  public:
    Libraries(const Tree& tree, std::unique_ptr<NodeMirror> mirror);

    // The path dlopen(path, mode) should be given instead, in `local`; false:
    // give it `path`. A file already loaded keeps the name it was loaded by.
    bool redirect(const char* path, int mode, std::string& local);

    // The name the loader knows a loaded file by, if it loaded it from the
    // mirror, whatever path leads to it. Takes no lock and records nothing:
    // callable in a fork child of the process.
    bool loaded_from_mirror(const char* path, std::string& local) const;

    // Whether `path` (absolute) and what the loader may read for it through
    // the mirror are all mirrored; prepares the mirror. No loader involved:
    // the unit tests call it.
    bool prepare(const std::string& path);

    // At exit (or exec): no more loads from the mirror; the node's last
    // process removes it.
    void close();

    const std::string& root() const { return mirror_->root(); }
    NodeMirror& mirror() { return *mirror_; }

  private:
    struct Loaded {
        bool found = false;
        bool mirrored = false;
        const char* name = nullptr;
    };
    Loaded find_loaded(uint32_t entry, bool quietly) const;

    const Tree& tree_;
    std::unique_ptr<NodeMirror> mirror_;
    std::mutex mutex_;
    bool closed_ = false;
    std::unordered_map<std::string, bool> prepared_; // by path given to dlopen
};

// What the loader substitutes for $ORIGIN, $PLATFORM and $LIB.
struct SearchTokens {
    std::string_view origin;
    std::string_view platform; // AT_PLATFORM
    std::string_view lib;      // the loader's own constant (PYIMPORT_LOADER_LIB)
};

// $ORIGIN, $PLATFORM and $LIB (also as ${...}) in a search path entry, as the
// loader expands them; false for other tokens, or one whose value is unknown.
bool expand_search_entry(std::string_view entry, const SearchTokens& tokens, std::string& out);

} // namespace pyimport
