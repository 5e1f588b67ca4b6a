// The image decoder: Snapshot::attach on arbitrary bytes, then everything a
// rank reads from an attached image (every entry's name, path, link target,
// listing, content and followed stat) and a Tree over it resolving paths.
//
// Each input is tried twice: as it is, and with its header made to pass the
// checks that random bytes almost never pass (magic, version, sizes, and the
// XXH3 checksum recomputed), so that the bounds checks behind them are
// fuzzed too.
#include "image/image.hpp"
#include "serve/tree.hpp"

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/stat.h>
#include <vector>

using namespace pyimport;

namespace {

// Reads every byte (in instrumented code: the checksum's library is not).
uint64_t consume(const char* data, size_t size) {
    uint64_t sum = 0;
    for (size_t i = 0; i < size; ++i)
        sum = sum * 31 + static_cast<unsigned char>(data[i]);
    return sum;
}
uint64_t consume(std::string_view s) {
    return consume(s.data(), s.size());
}

// Whether every entry's chain of parents ends (at a root): Snapshot::path
// follows the chain without a bound, so attach must refuse an image where it
// does not (it requires every non-root's parent to be an earlier entry).
bool parents_end(const Snapshot& s) {
    uint32_t count = s.entry_count();
    std::vector<uint8_t> state(count, 0); // 0 unknown, 1 on the current chain, 2 ends
    std::vector<uint32_t> chain;
    for (uint32_t i = 0; i < count; ++i) {
        chain.clear();
        uint32_t at = i;
        while (at != kNoEntry && state[at] == 0) {
            state[at] = 1;
            chain.push_back(at);
            at = s.entry(at).parent;
        }
        if (at != kNoEntry && state[at] == 1) return false; // a cycle
        for (uint32_t c : chain)
            state[c] = 2;
    }
    return true;
}

uint64_t read_entries(const Snapshot& s, bool paths) {
    uint64_t sum = s.size() + s.root_count() + s.header().entry_count;
    for (uint32_t i = 0; i < s.entry_count(); ++i) {
        const Entry& e = s.entry(i);
        sum += consume(s.name(i)) + consume(s.link_target(i));
        if (paths) sum += consume(s.path(i));
        const ListingItem* items = s.listing(i);
        for (uint32_t k = 0; k < e.listing_count; ++k) {
            sum += items[k].ino + items[k].type + items[k].dots;
            if (items[k].entry != kNoEntry) sum += s.entry(items[k].entry).st.mode;
        }
        sum += consume(s.content(i), e.content_len);
        struct stat st;
        to_stat(e.st, st);
        sum += static_cast<uint64_t>(st.st_size);
        if (e.follow != kNoEntry) {
            to_stat(s.followed(i), st);
            sum += static_cast<uint64_t>(st.st_size) + st.st_mode;
        }
    }
    return sum;
}

uint64_t use(const Resolution& r) {
    return static_cast<uint64_t>(r.kind) + r.entry + static_cast<uint64_t>(r.error) + r.followed;
}

// Resolves paths built from the image's own names and some fixed ones, from
// the top and from each of the first directories, before and after changes.
uint64_t resolve_some(const Snapshot& s, bool paths) {
    Tree tree(s);
    tree.record_use(paths);
    // After a child process: some directories found changed on the filesystem.
    tree.set_directory_check([](const Snapshot&, uint32_t entry) { return entry % 3 != 0; });
    uint64_t sum = 0;
    std::vector<std::string> probes = {"/", "/..", "//", ".", "..", "a/../..", "./x/", "x//y/."};
    probes.push_back(std::string(PATH_MAX + 1, 'a'));
    probes.push_back("/" + std::string(NAME_MAX + 1, 'b'));
    uint32_t count = std::min<uint32_t>(s.entry_count(), 12);
    for (uint32_t i = 0; i < count; ++i) {
        if (paths) {
            std::string p = s.path(i);
            probes.push_back(p);
            probes.push_back(p + "/");
            probes.push_back(p + "/./..//" + std::string(s.name(i)));
        }
        probes.emplace_back(s.name(i));
        if (!s.link_target(i).empty()) probes.emplace_back(s.link_target(i));
    }
    std::vector<Position> bases = {Position{}, Position{kNoEntry, "/"}};
    for (uint32_t i = 0; i < count && bases.size() < 4; ++i)
        if (tree.is_dir(i)) bases.push_back(Position{i, {}});
    for (uint32_t r = 0; r < s.root_count() && r < 2; ++r) {
        Position at;
        if (tree.locate(s.name(r), at)) bases.push_back(at);
    }
    for (int round = 0; round < 2; ++round) {
        for (const Position& base : bases)
            for (const std::string& p : probes) {
                sum += use(tree.resolve(base, p, true));
                sum += use(tree.resolve_quietly(base, p, false));
            }
        for (const std::string& p : probes) {
            Position at;
            if (tree.locate(p, at)) sum += at.entry + at.path.size();
            auto [dir, name] = Tree::split_last(p);
            sum += dir.size() + name.size();
        }
        // Then as after this process changed some of those paths, and after
        // a child process may have changed the rest.
        for (size_t k = round; k < probes.size(); k += 3)
            sum += tree.invalidate(bases[k % bases.size()], probes[k], k % 2);
        tree.others_may_have_changed();
        tree.outside_changed();
    }
    if (paths) sum += tree.used_paths().size();
    return sum;
}

void exercise(const std::vector<char>& image) {
    Snapshot s;
    std::string error;
    if (!s.attach(image.data(), image.size(), error)) {
        if (error.empty()) std::abort(); // a refusal always says why
        return;
    }
    if (!parents_end(s)) __builtin_trap(); // attach let a cycle of parents through
    bool paths = true;
    volatile uint64_t sink = read_entries(s, paths) + resolve_some(s, paths);
    (void)sink;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // A copy of the exact size (over-reads hit the redzone), 16-byte aligned.
    std::vector<char> image(reinterpret_cast<const char*>(data),
                            reinterpret_cast<const char*>(data) + size);
    exercise(image);
    if (size < sizeof(Header)) return 0;
    Header h;
    std::memcpy(&h, image.data(), sizeof h);
    std::memcpy(h.magic, kSnapshotMagic, sizeof h.magic);
    h.version = kSnapshotVersion;
    h.header_size = sizeof(Header);
    h.sizeof_entry = sizeof(Entry);
    h.total_size = size;
    h.checksum = checksum(image.data() + sizeof(Header), size - sizeof(Header));
    std::memcpy(image.data(), &h, sizeof h);
    exercise(image);
    return 0;
}
