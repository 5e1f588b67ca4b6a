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

#include "loader/mirror.hpp"
#include "serve/tree.hpp"

#include <compare>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace pyimport {

// A file as the loader tells files apart: device and inode.
struct FileId {
    uint32_t dev_major = 0, dev_minor = 0;
    uint64_t ino = 0;
    auto operator<=>(const FileId&) const = default;
};

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
    // the mirror are all mirrored, and none of it is loaded from the
    // filesystem already; prepares the mirror. The unit tests call it.
    bool prepare(const std::string& path);

    // For the loader's search (search.hpp), which found that it would open
    // `path` (absolute, in the snapshot; symlinks on the way allowed): the
    // name to give the loader instead, in `local`: a loaded object's own
    // name, the mirror's path when everything the loader may read for it
    // through the mirror is there, else `path` itself.
    bool answer_search(const std::string& path, std::string& local);

    // At exit (or exec): no more loads from the mirror; the node's last
    // process removes it.
    void close();

    const std::string& root() const { return mirror_->root(); }
    // The audit library's copies (audit/interface.hpp): what the loader
    // loaded from there is, like the mirror's, the file it copies.
    void set_copies_root(std::string root) { copies_root_ = std::move(root); }
    const Tree& tree() const { return tree_; }
    const std::string& loader_lib() const { return loader_lib_; } // $LIB, if known
    NodeMirror& mirror() { return *mirror_; }

  private:
    struct Loaded {
        std::string name; // as the loader knows it
        bool mirrored = false;
    };
    using LoadedFiles = std::map<FileId, Loaded>;
    // Every loaded object, by the file it was loaded from (for one loaded
    // from the mirror: the file it is a copy of). `quietly`: no locks, no
    // records (a fork child).
    LoadedFiles loaded_files(bool quietly) const;
    bool identify(std::string_view name, size_t root_size, FileId& id) const;
    FileId file_id(uint32_t entry) const;
    bool prepare(const std::string& path, const LoadedFiles& loaded);
    bool prepared(const std::string& path, const LoadedFiles& loaded);

    const Tree& tree_;
    std::unique_ptr<NodeMirror> mirror_;
    std::string loader_lib_;  // $LIB, if this process's loader is the one it was read from
    std::string copies_root_; // set before any other thread can ask
    std::mutex mutex_;
    bool closed_ = false;
    struct Decision {
        bool ok;
        uint64_t changes; // Tree::changes() it was made at
    };
    std::unordered_map<std::string, Decision> prepared_; // by path given to dlopen
    // The file of each loaded object, by name and load address (under mutex_).
    mutable std::map<std::pair<std::string, uintptr_t>, FileId> identities_;
};

// What the loader substitutes for $ORIGIN, $PLATFORM and $LIB.
struct SearchTokens {
    std::string_view origin;
    std::string_view
        platform; // the loader's platform name (not served: glibc may differ from AT_PLATFORM)
    std::string_view lib; // the loader's own constant (PYIMPORT_LOADER_LIB)
};

// Subdirectories the loader searches before a search directory itself
// (glibc-hwcaps since glibc 2.33; the legacy ones before 2.37, the platform's
// among them). A search directory holding one is not followed.
bool is_capability_directory(std::string_view name);

// $ORIGIN, $PLATFORM and $LIB (also as ${...}) in a search path entry, as the
// loader expands them; false for other tokens, or one whose value is unknown.
bool expand_search_entry(std::string_view entry, const SearchTokens& tokens, std::string& out);

} // namespace pyimport
