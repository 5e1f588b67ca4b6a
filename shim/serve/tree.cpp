#include "serve/tree.hpp"

#include "base/text.hpp"
#include "image/profile.hpp"

#include <cerrno>
#include <climits>
#include <xxhash.h>

namespace pyimport {
namespace {

uint64_t hash_child(uint32_t parent, std::string_view name) {
    return XXH3_64bits_withSeed(name.data(), name.size(), parent);
}

std::string_view parent_path(std::string_view path) {
    size_t slash = path.find_last_of('/');
    if (slash == 0 || slash == std::string_view::npos) return "/";
    return path.substr(0, slash);
}

// Whether `path` is `dir` + "/" + `name` (without building that string).
bool is_join(std::string_view dir, std::string_view name, std::string_view path) {
    size_t sep = (dir.empty() || dir.back() != '/') ? 1 : 0;
    return path.size() == dir.size() + sep + name.size() && path.starts_with(dir) &&
           (sep == 0 || path[dir.size()] == '/') && path.ends_with(name);
}

constexpr int kMaxSymlinks = 40;        // the kernel's MAXSYMLINKS
constexpr size_t kMaxLearned = 1 << 20; // paths kept for the profile

} // namespace

Tree::Tree(const Snapshot& snapshot) : snapshot_(snapshot) {
    uint32_t count = snapshot.entry_count();
    uint64_t capacity = 16;
    while (capacity < uint64_t{count} * 2)
        capacity <<= 1;
    slots_.assign(capacity, kNoEntry);
    mask_ = capacity - 1;
    for (uint32_t i = snapshot.root_count(); i < count; ++i) {
        uint64_t slot = hash_child(snapshot.entry(i).parent, snapshot.name(i)) & mask_;
        while (slots_[slot] != kNoEntry)
            slot = (slot + 1) & mask_;
        slots_[slot] = i;
    }
    for (uint32_t r = 0; r < snapshot.root_count(); ++r) {
        std::string_view p = snapshot.name(r);
        while (p != "/") {
            p = parent_path(p);
            root_ancestors_.emplace_back(p);
        }
    }
    for (uint32_t i = snapshot.root_count(); i < count; ++i) {
        const Entry& e = snapshot.entry(i);
        if (!(e.flags & kNoStat) || !S_ISDIR(e.st.mode)) continue;
        std::string p = snapshot.path(i);
        for (uint32_t r = 0; r < snapshot.root_count(); ++r)
            if (snapshot.name(r) == p) passages_[i] = Passage{snapshot.name(r), r};
        for (const std::string& a : root_ancestors_)
            if (a == p && !passages_.count(i)) passages_[i] = Passage{a, kNoEntry};
    }
    stale_ = std::make_unique<std::atomic<uint8_t>[]>(count);
    used_ = std::make_unique<std::atomic<uint8_t>[]>(count);
    checked_epoch_ = std::make_unique<std::atomic<uint32_t>[]>(count);
    for (uint32_t i = 0; i < count; ++i) {
        stale_[i].store(0, std::memory_order_relaxed);
        used_[i].store(0, std::memory_order_relaxed);
        checked_epoch_[i].store(0, std::memory_order_relaxed);
    }
}

void Tree::learn(uint32_t entry, std::string_view rest) const {
    std::string path = snapshot_.path(entry);
    if (!rest.empty()) path = lexically_tidy(path + "/" + std::string(rest));
    std::lock_guard lock(learned_mutex_);
    if (learned_.size() < kMaxLearned) learned_.insert(std::move(path));
}

void Tree::learn_outside(std::string_view path, bool listed) const {
    if (!recording() || !learnable_outside(path, listed)) return;
    // ".." cannot be undone without the filesystem: such paths are not kept.
    if (path.find("/../") != std::string_view::npos || path.ends_with("/..")) return;
    std::string tidy = lexically_tidy(path);
    std::lock_guard lock(learned_mutex_);
    if (learned_.size() < kMaxLearned) learned_.insert(std::move(tidy));
}

std::vector<std::string> Tree::learned_paths() const {
    std::lock_guard lock(learned_mutex_);
    return {learned_.begin(), learned_.end()};
}

std::unordered_set<std::string> Tree::used_paths() const {
    std::unordered_set<std::string> used;
    for (uint32_t i = snapshot_.root_count(); i < snapshot_.entry_count(); ++i)
        if (was_used(i)) used.insert(snapshot_.path(i));
    for (std::string& p : learned_paths())
        used.insert(std::move(p));
    return used;
}

uint32_t Tree::child(uint32_t dir, std::string_view name) const {
    uint64_t slot = hash_child(dir, name) & mask_;
    for (;;) {
        uint32_t i = slots_[slot];
        if (i == kNoEntry) return kNoEntry;
        if (snapshot_.entry(i).parent == dir && snapshot_.name(i) == name) return i;
        slot = (slot + 1) & mask_;
    }
}

bool Tree::still_current(uint32_t dir) const {
    uint32_t epoch = epoch_.load(std::memory_order_acquire);
    if (epoch == 0 || !check_ || checked_epoch_[dir].load(std::memory_order_acquire) == epoch)
        return true;
    bool same = check_(snapshot_, dir);
    if (!same) stale_[dir].fetch_or(kStaleSubtree | kStaleSelf, std::memory_order_acq_rel);
    checked_epoch_[dir].store(epoch, std::memory_order_release);
    return same;
}

bool Tree::is_root_ancestor(std::string_view path) const {
    for (const std::string& a : root_ancestors_)
        if (a == path) return true;
    return false;
}

bool Tree::locate(std::string_view canonical, Position& out) const {
    if (canonical.empty() || canonical[0] != '/') return false;
    // The innermost root holding the path (roots may lie inside partial ones).
    size_t best = 0;
    bool found = false;
    for (uint32_t r = 0; r < snapshot_.root_count(); ++r) {
        std::string_view root = snapshot_.name(r);
        if (canonical.size() < root.size() || !canonical.starts_with(root)) continue;
        if (canonical.size() > root.size() && canonical[root.size()] != '/' && root != "/")
            continue;
        if (found && root.size() <= best) continue;
        // Walk down real directories: a canonical path has no symlinks in it.
        uint32_t at = r;
        std::string_view rest = canonical.substr(root.size());
        while (at != kNoEntry && !rest.empty()) {
            while (!rest.empty() && rest[0] == '/')
                rest.remove_prefix(1);
            if (rest.empty()) break;
            size_t end = rest.find('/');
            std::string_view name = rest.substr(0, end);
            rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
            const Entry& dir = snapshot_.entry(at);
            if (is_stale(at) || !(dir.flags & (kHasListing | kPartial))) at = kNoEntry;
            if (at != kNoEntry) at = child(at, name);
            if (at != kNoEntry && (!is_dir(at) || (snapshot_.entry(at).flags & kNoStat)))
                at = kNoEntry;
        }
        if (at == kNoEntry) continue;
        out = Position{at, {}};
        best = root.size();
        found = true;
    }
    if (found) return true;
    if (is_root_ancestor(canonical)) {
        out = Position{kNoEntry, canonical};
        return true;
    }
    return false;
}

namespace {
thread_local int t_quiet __attribute__((tls_model("initial-exec"))) = 0;
} // namespace

bool Tree::quiet() {
    return t_quiet != 0;
}

Resolution Tree::resolve(const Position& base, std::string_view path, bool follow_last) const {
    return resolve_path(base, path, follow_last, false);
}

Resolution Tree::resolve_quietly(const Position& base, std::string_view path,
                                 bool follow_last) const {
    t_quiet = 1;
    Resolution r = resolve_path(base, path, follow_last, false);
    t_quiet = 0;
    return r;
}

Resolution Tree::resolve_path(const Position& base, std::string_view path, bool follow_last,
                              bool accept_stale_last) const {
    if (path.empty()) return Resolution::failed(ENOENT);
    if (path.size() >= PATH_MAX) return Resolution::failed(ENAMETOOLONG);

    // What is left to walk: the caller's path until a symlink expands, then
    // `expanded`. Nothing is copied or allocated unless a symlink is followed.
    std::string_view pending = path;
    std::string expanded;
    size_t cursor = 0;
    uint32_t at = base.entry;
    // Valid when at == kNoEntry: a view of the base path, "/", a root's name
    // or a stored ancestor of the roots (or a prefix of one of those).
    std::string_view outside = base.path;
    if (pending[0] == '/') {
        at = kNoEntry;
        outside = "/";
    } else if (at == kNoEntry && outside.empty()) {
        return Resolution::forward();
    }
    int links = 0;

    for (;;) {
        while (cursor < pending.size() && pending[cursor] == '/')
            ++cursor;
        if (cursor >= pending.size()) break;
        size_t end = pending.find('/', cursor);
        if (end == std::string_view::npos) end = pending.size();
        std::string_view name(pending.data() + cursor, end - cursor);
        size_t next = end;
        while (next < pending.size() && pending[next] == '/')
            ++next;
        bool last = next >= pending.size();
        bool slash_after = end < pending.size(); // "name/" must be a directory

        // The current position must be a searchable directory.
        if (at != kNoEntry) {
            if (is_stale(at)) {
                // kStaleSubtree was caught when entering; kStaleSelf only
                // makes absent names uncertain, handled below.
                if (stale_[at].load(std::memory_order_acquire) & kStaleSubtree)
                    return Resolution::forward();
            }
            if (!is_dir(at)) return Resolution::failed(ENOTDIR);
        }
        cursor = end;

        if (name == ".") continue;
        if (name == "..") {
            if (at != kNoEntry && snapshot_.entry(at).parent != kNoEntry) {
                at = snapshot_.entry(at).parent;
                continue;
            }
            outside = parent_path(at == kNoEntry ? outside : snapshot_.name(at));
            at = kNoEntry;
            // Up into a root (a prefix inside the script's directory).
            for (uint32_t r = 0; r < snapshot_.root_count() && at == kNoEntry; ++r)
                if (snapshot_.name(r) == outside) at = r;
            if (at != kNoEntry && (stale_[at].load(std::memory_order_acquire) & kStaleSubtree)) {
                if (!(snapshot_.entry(at).flags & kPartial)) return Resolution::forward();
                at = kNoEntry;
            }
            continue;
        }
        if (name.size() > NAME_MAX) return Resolution::failed(ENAMETOOLONG);

        // A partial directory answers only for the names it recorded; for
        // others the lookup goes on by path (a root further in, or the
        // filesystem).
        if (at != kNoEntry && (snapshot_.entry(at).flags & kPartial) &&
            (child(at, name) == kNoEntry || !still_current(at))) {
            outside = snapshot_.name(at);
            at = kNoEntry;
        }
        if (at == kNoEntry) {
            uint32_t root = kNoEntry;
            for (uint32_t r = 0; r < snapshot_.root_count() && root == kNoEntry; ++r)
                if (is_join(outside, name, snapshot_.name(r))) root = r;
            // A partial root found changed (after a child process) only makes
            // its own names uncertain: lookups pass it by path.
            if (root != kNoEntry &&
                (stale_[root].load(std::memory_order_acquire) & kStaleSubtree) &&
                (snapshot_.entry(root).flags & kPartial))
                root = kNoEntry;
            if (root != kNoEntry) {
                if (stale_[root].load(std::memory_order_acquire) & kStaleSubtree)
                    return Resolution::forward();
                at = root;
                continue;
            }
            const std::string* ancestor = nullptr;
            for (const std::string& a : root_ancestors_)
                if (!ancestor && is_join(outside, name, a)) ancestor = &a;
            if (!ancestor) return Resolution::forward();
            outside = *ancestor;
            continue;
        }

        const Entry& dir = snapshot_.entry(at);
        bool partial = dir.flags & kPartial; // and the name is recorded (above)
        if (!partial && (!(dir.flags & kHasListing) || !still_current(at)))
            return Resolution::forward();
        uint32_t found = child(at, name);
        if (found == kNoEntry) {
            // In a live directory another rank may have created it since.
            if ((stale_[at].load(std::memory_order_acquire) & kStaleSelf) || (dir.flags & kLive))
                return Resolution::forward();
            note_use(at);
            return Resolution::failed(ENOENT);
        }
        if (stale_[found].load(std::memory_order_acquire) & kStaleSubtree)
            return Resolution::forward();
        const Entry& e = snapshot_.entry(found);
        if (e.flags & kAbsent) {
            note_use(found);
            return Resolution::failed(e.error);
        }
        if (e.flags & kNoStat) {
            // Only its name and type are known: a path through a regular
            // file is ENOTDIR, anything else goes to the filesystem, unless
            // a root lies there.
            // (Not in a live directory: another rank may have replaced it.)
            if (S_ISREG(e.st.mode) && (!last || slash_after) && !(dir.flags & kLive))
                return Resolution::failed(ENOTDIR);
            if (auto p = passages_.find(found); p != passages_.end()) {
                at = p->second.root;
                outside = p->second.path;
                if (at != kNoEntry && (stale_[at].load(std::memory_order_acquire) & kStaleSubtree))
                    return Resolution::forward();
                if (last && !slash_after) break;
                continue;
            }
            if (recording() && (!was_used(found) || !last))
                learn(found, last ? "" : pending.substr(cursor));
            note_use(found);
            return Resolution::forward();
        }
        if (S_ISLNK(e.st.mode) && last && follow_last && !slash_after && e.follow != kNoEntry &&
            !outside_changed_.load(std::memory_order_acquire)) {
            Resolution r = Resolution::found(found);
            r.followed = true;
            note_use(found);
            return r;
        }
        if (S_ISLNK(e.st.mode) && (!last || follow_last || slash_after)) {
            if (++links > kMaxSymlinks) return Resolution::failed(ELOOP);
            note_use(found);
            std::string_view target = snapshot_.link_target(found);
            if (target.empty()) return Resolution::failed(ENOENT);
            std::string next_pending(target);
            next_pending += pending.substr(cursor);
            expanded = std::move(next_pending);
            pending = expanded;
            cursor = 0;
            if (target[0] == '/') {
                at = kNoEntry;
                outside = "/";
            }
            continue;
        }
        at = found;
        if (last && !slash_after) break;
    }

    if (at == kNoEntry) return Resolution::forward(); // a directory above the roots
    // A trailing slash asks for a directory (a symlink to one was followed above).
    // (of the path as expanded: a symlink's target may end in a slash too).
    bool trailing_slash = pending.back() == '/';
    if (trailing_slash && !is_dir(at)) return Resolution::failed(ENOTDIR);
    if (is_dir(at) && !still_current(at)) return Resolution::forward();
    uint8_t stale = stale_[at].load(std::memory_order_acquire);
    if (stale & kStaleSubtree || (stale && !accept_stale_last)) return Resolution::forward();
    note_use(at);
    return Resolution::found(at);
}

std::pair<std::string_view, std::string_view> Tree::split_last(std::string_view path) {
    std::string_view trimmed = path;
    while (trimmed.size() > 1 && trimmed.back() == '/')
        trimmed.remove_suffix(1);
    size_t slash = trimmed.find_last_of('/');
    std::string_view dir_part = slash == std::string_view::npos ? std::string_view(".")
                                : slash == 0                    ? std::string_view("/")
                                                                : trimmed.substr(0, slash);
    std::string_view name = slash == std::string_view::npos ? trimmed : trimmed.substr(slash + 1);
    return {dir_part, name};
}

bool Tree::invalidate_roots_under(std::string_view dir) {
    bool any = false;
    if (dir.empty() || dir[0] != '/') return false;
    for (uint32_t r = 0; r < snapshot_.root_count(); ++r) {
        std::string_view root = snapshot_.name(r);
        if (path_within(root, dir)) {
            mark(r, kStaleSubtree | kStaleSelf);
            outside_changed();
            any = true;
        }
    }
    return any;
}

bool Tree::invalidate(const Position& base, std::string_view path, bool follow_last, int depth) {
    if (depth > kMaxSymlinks) return true;
    auto [dir_part, name] = split_last(path);

    // A prefix itself: its parent is outside the snapshot.
    Resolution whole = resolve_path(base, path, follow_last, true);
    bool is_root =
        whole.kind == Resolution::Found && snapshot_.entry(whole.entry).parent == kNoEntry;
    if (is_root) mark(whole.entry, kStaleSubtree | kStaleSelf);
    if (is_root) invalidate_roots_under(snapshot_.name(whole.entry));
    // Roots inside what changed (a renamed directory above a prefix, a
    // partial root, a passage in the script's directory) change with it.
    if (!path.empty() && path[0] == '/' && path.find("/..") == std::string_view::npos)
        is_root = invalidate_roots_under(lexically_tidy(path)) || is_root;
    Resolution dir = resolve_path(base, dir_part, true, true);
    if (dir.kind != Resolution::Found) return is_root;
    uint32_t at = dir.entry;
    // Links elsewhere may point at what changed here: their followed stats
    // were taken at start-up.
    if (snapshot_.entry(at).flags & (kPartial | kLive)) outside_changed();
    if (name != "." && name != ".." && name != "/" && snapshot_.root_count() > 1) {
        std::string full = snapshot_.path(at);
        if (full.back() != '/') full += '/';
        full += name;
        invalidate_roots_under(full);
    }
    if (name == "." || name == ".." || name == "/") {
        mark(at, kStaleSubtree | kStaleSelf);
        if (snapshot_.entry(at).parent != kNoEntry) mark(snapshot_.entry(at).parent, kStaleSelf);
        return true;
    }
    mark(at, kStaleSelf);
    uint32_t target = child(at, name);
    if (target == kNoEntry) return true;
    if (follow_last && S_ISLNK(snapshot_.entry(target).st.mode)) {
        // A write through a symlink changes (or creates) what it points to.
        invalidate(Position{at, {}}, snapshot_.link_target(target), true, depth + 1);
    }
    mark(target, kStaleSubtree | kStaleSelf);
    return true;
}

} // namespace pyimport
