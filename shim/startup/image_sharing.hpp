// One copy of the image per node, over any transport: the node leaders
// receive rank 0's image into a sealed memory file, which the node's other
// ranks map read-only through /proc/<leader>/fd; where any rank of a node
// cannot (no /proc, ranks of other users), every rank there keeps a private
// copy instead.
#pragma once

#include "image/shared_image.hpp"
#include "startup/transport.hpp"

#include <string>
#include <vector>

namespace pyimport {

// Collective over every rank. `node_identity` is this rank's node
// (node_identity() of startup/node_layout.hpp); `length` is the image's size
// (known to every rank); on rank 0 `image` holds it (and is emptied). On
// failure returns false with a reason, holding nothing: no descriptor, mapping
// or copy is left.
// Node leaders other than rank 0 (which made the image) pass what they
// received to `check` before sharing it; a node whose leader's copy fails
// runs without the image, all its ranks told so.
using ImageCheck = bool (*)(const char* data, uint64_t length, std::string& error);
bool share_image(Transport& transport, uint64_t node_identity, std::vector<char>& image,
                 uint64_t length, ImageCheck check, SharedImage& out, std::string& error);

} // namespace pyimport
