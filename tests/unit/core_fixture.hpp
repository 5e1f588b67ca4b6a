// A Core over a snapshot, as start-up makes it: the image in a SharedImage
// (a private copy), the snapshot attached to it.
#pragma once

#include "base/config.hpp"
#include "image/shared_image.hpp"
#include "image/walk.hpp"
#include "serve/core.hpp"

#include <criterion/criterion.h>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

inline std::unique_ptr<pyimport::Core> make_core(const pyimport::BuildOptions& options) {
    std::vector<char> bytes;
    std::string error;
    cr_assert(pyimport::build_snapshot(options, bytes, error), "%s", error.c_str());
    pyimport::SharedImage image;
    std::memcpy(image.make_private(bytes.size()), bytes.data(), bytes.size());
    pyimport::Snapshot snapshot;
    cr_assert(snapshot.attach(image.data, image.size, error), "%s", error.c_str());
    return std::make_unique<pyimport::Core>(pyimport::Config{}, std::move(image), snapshot);
}
