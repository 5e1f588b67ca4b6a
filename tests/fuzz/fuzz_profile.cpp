// The profile's parser on arbitrary text: a profile file is written by an
// earlier job, but may be cut short, corrupted or written by someone else.
#include "image/profile.hpp"

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

using namespace pyimport;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    PathSet paths;
    std::string error;
    bool ok = parse_profile(text, "/fuzz/x.profile", paths, error);
    if (!ok && (error.empty() || !paths.empty())) std::abort(); // refused: a reason, no paths
    for (const std::string& p : paths) {
        if (p.empty() || p[0] != '/' || p.find('\n') != std::string::npos ||
            p.find('\0') != std::string::npos)
            std::abort();
        // What the profile's users do with a path.
        std::string tidy = lexically_tidy(p);
        if (tidy.empty() || tidy[0] != '/' || tidy.size() > p.size()) std::abort();
    }
    return 0;
}
