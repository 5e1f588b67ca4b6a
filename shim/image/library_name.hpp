// Which file names are shared libraries: the walk caches their bytes, the
// loader layer mirrors them.
#pragma once

#include <string_view>

namespace pyimport {

// File names the loader may look for: "x.so" and "x.so.<digits and dots>".
bool is_library_name(std::string_view name);

} // namespace pyimport
