// A process's view of the snapshot: the index from (directory, name) to entry,
// path resolution as the kernel does it, and the entries this process has
// changed on the filesystem since (which are no longer answered from the
// snapshot).
#pragma once

#include "image/image.hpp"

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace pyimport {

// Where a resolution starts or stands: an entry of the snapshot, or a real
// directory above the cached roots (an ancestor of a root, known by path).
struct Position {
    uint32_t entry = kNoEntry;
    std::string_view path; // used when entry == kNoEntry: canonical absolute path
};

struct Resolution {
    enum Kind { Forward, Found, Failed } kind = Forward;
    uint32_t entry = kNoEntry;
    int error = 0;
    // The entry is a symlink out of the prefixes, followed: its target's
    // stat is Snapshot::followed(entry).
    bool followed = false;

    static Resolution forward() { return {}; }
    static Resolution failed(int e) { return {Failed, kNoEntry, e, false}; }
    static Resolution found(uint32_t i) { return {Found, i, 0, false}; }
};

class Tree {
  public:
    // Builds the index over an attached snapshot.
    explicit Tree(const Snapshot& snapshot);

    const Snapshot& snapshot() const { return snapshot_; }

    // Looks up `name` among the children of directory `dir`.
    uint32_t child(uint32_t dir, std::string_view name) const;

    // The position of a canonical absolute directory path (a working
    // directory): an entry, a known ancestor of the roots, or none (forward).
    bool locate(std::string_view canonical_path, Position& out) const;

    // Resolves `path` relative to `base` like the kernel's path walk:
    // symlinks (40 at most), "." and "..", repeated and trailing slashes.
    // The last component is followed if it is a symlink and `follow_last`.
    Resolution resolve(const Position& base, std::string_view path, bool follow_last) const;
    // The same without recording any use (and so without taking any lock):
    // for a fork child, whose copy of a lock may be held by a thread it lacks.
    Resolution resolve_quietly(const Position& base, std::string_view path, bool follow_last) const;

    // This process changed `path` (created, wrote, removed, renamed ...):
    // answer it, everything below it and its directory's listing from the
    // filesystem from now on.
    // Returns false if the path's directory is not in the snapshot (outside
    // the roots, or reached through something the snapshot cannot resolve).
    bool invalidate(const Position& base, std::string_view path, bool follow_last) {
        return invalidate(base, path, follow_last, 0);
    }
    // "a/b/c" -> ("a/b", "c"); "c" -> (".", "c"); "/c" -> ("/", "c").
    static std::pair<std::string_view, std::string_view> split_last(std::string_view path);

    // Other processes of this rank (its children) may have changed the trees:
    // from now on each directory is checked once against the filesystem
    // before its listing is trusted again. `check` says whether the real
    // directory still matches its entry.
    using DirectoryCheck = bool (*)(const Snapshot& snapshot, uint32_t entry);
    void set_directory_check(DirectoryCheck check) { check_ = check; }
    void others_may_have_changed() {
        epoch_.fetch_add(1, std::memory_order_acq_rel);
        changes_.fetch_add(1, std::memory_order_acq_rel);
    }
    // Another process changed directory `dir` (a live one, found changed):
    // its listing, its own stat and names not in it go to the filesystem.
    void changed_by_others(uint32_t dir) { mark(dir, kStaleSelf); }
    // Moves on whenever answers may have changed (a change by this process,
    // or others_may_have_changed): decisions built on answers keep it.
    uint64_t changes() const { return changes_.load(std::memory_order_acquire); }
    // Something outside the roots changed: targets of symlinks that leave the
    // roots are no longer answered from the snapshot.
    void outside_changed() { outside_changed_.store(true, std::memory_order_release); }

    bool is_dir(uint32_t entry) const { return S_ISDIR(snapshot_.entry(entry).st.mode); }
    bool is_stale(uint32_t entry) const { return stale_[entry].load(std::memory_order_acquire); }

    // What this process looks at, for the profile (off by default: only
    // rank 0 with a profile pays for it): entries that answered (or whose
    // directory answered "absent"), and paths forwarded through an entry the
    // snapshot holds by name only.
    void record_use(bool on) { recording_.store(on, std::memory_order_relaxed); }
    bool was_used(uint32_t entry) const { return used_[entry].load(std::memory_order_relaxed); }
    std::vector<std::string> learned_paths() const;
    // A forwarded absolute path outside the roots (`listed`: by opendir),
    // kept for the profile if learnable_outside() says so.
    void learn_outside(std::string_view absolute_path, bool listed) const;
    // Everything this process used (for the profile): used entries' paths
    // and the learned ones.
    std::unordered_set<std::string> used_paths() const;

  private:
    enum : uint8_t { kStaleSelf = 1, kStaleSubtree = 2 };

    Resolution resolve_path(const Position& base, std::string_view path, bool follow_last,
                            bool accept_stale_last) const;
    bool invalidate(const Position& base, std::string_view path, bool follow_last, int depth);
    bool invalidate_roots_under(std::string_view canonical_dir);
    bool is_root_ancestor(std::string_view path) const;
    bool still_current(uint32_t dir) const;
    void mark(uint32_t entry, uint8_t bits) {
        stale_[entry].fetch_or(bits, std::memory_order_acq_rel);
        changes_.fetch_add(1, std::memory_order_acq_rel);
    }

    bool recording() const { return recording_.load(std::memory_order_relaxed) && !quiet(); }
    static bool quiet();
    void note_use(uint32_t entry) const {
        if (recording() && !used_[entry].load(std::memory_order_relaxed))
            used_[entry].store(1, std::memory_order_relaxed);
    }
    void learn(uint32_t entry, std::string_view rest) const;

    const Snapshot& snapshot_;
    std::vector<uint32_t> slots_; // open addressing over (parent, name)
    uint64_t mask_ = 0;
    std::vector<std::string> root_ancestors_;
    // kNoStat directories that are a root or hold one (a prefix inside the
    // script's directory): lookups go on from there by path.
    struct Passage {
        std::string_view path; // into root_ancestors_ or a root's name
        uint32_t root;         // the root it is, or kNoEntry
    };
    std::unordered_map<uint32_t, Passage> passages_;
    std::unique_ptr<std::atomic<uint8_t>[]> stale_;
    std::atomic<uint32_t> epoch_{0};
    std::atomic<uint64_t> changes_{0};
    std::unique_ptr<std::atomic<uint32_t>[]> checked_epoch_;
    DirectoryCheck check_ = nullptr;
    std::atomic<bool> outside_changed_{false};
    std::atomic<bool> recording_{false};
    std::unique_ptr<std::atomic<uint8_t>[]> used_;
    mutable std::mutex learned_mutex_;
    mutable std::unordered_set<std::string> learned_;
};

} // namespace pyimport
