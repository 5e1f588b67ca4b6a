// The walk that builds an image: rank 0 reads the prefixes with the real
// libc, asking the filesystem as little as it can, and encodes what it saw
// (image.hpp).
#pragma once

#include "image/image.hpp"

#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

namespace pyimport {

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
    uint64_t max_bytes = 0;
    // Shared libraries (library_name.hpp) get their bytes cached
    // too, as far as max_bytes allows; those past it get their stat only.
    bool libraries = false;
    uint32_t* libraries_over_budget = nullptr; // out: how many
    // "cpython-311": a .py whose __pycache__/NAME.cpython-311.pyc exists is
    // not read (the interpreter reads the .pyc); empty: always read.
    std::string cache_tag;
};

// Walks the prefixes with the real libc and encodes the image. Returns false
// with a one-line reason on a fault (missing prefix, budget, memory).
bool build_snapshot(const BuildOptions& options, std::vector<char>& image, std::string& error);

} // namespace pyimport
