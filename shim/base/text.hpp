// Small string helpers shared by the core.
#pragma once

#include <algorithm>
#include <string_view>
#include <vector>

namespace pyimport {

// "a:b" -> {"a", "b"}; "a::b" -> {"a", "", "b"}; "" -> {}. The parts point
// into `text`.
inline std::vector<std::string_view> split(std::string_view text, char separator) {
    std::vector<std::string_view> parts;
    for (size_t pos = 0; pos < text.size();) {
        size_t end = std::min(text.find(separator, pos), text.size());
        parts.push_back(text.substr(pos, end - pos));
        pos = end + 1;
    }
    return parts;
}

// Whether absolute `path` is `dir` or lies under it ("/" holds everything).
inline bool path_within(std::string_view path, std::string_view dir) {
    return dir == "/" || path == dir ||
           (path.size() > dir.size() && path.starts_with(dir) && path[dir.size()] == '/');
}

} // namespace pyimport
