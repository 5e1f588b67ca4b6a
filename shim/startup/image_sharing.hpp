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
bool share_image(Transport& transport, uint64_t node_identity, std::vector<char>& image,
                 uint64_t length, SharedImage& out, std::string& error);

} // namespace pyimport
