#include "image/library_name.hpp"

namespace pyimport {

bool is_library_name(std::string_view name) {
    for (size_t at = name.find(".so"); at != std::string_view::npos;
         at = name.find(".so", at + 1)) {
        std::string_view version = name.substr(at + 3);
        if (at == 0 || (!version.empty() && version[0] != '.')) continue;
        if (version.find_first_not_of(".0123456789") == std::string_view::npos) return true;
    }
    return false;
}

} // namespace pyimport
