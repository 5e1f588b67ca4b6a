// The image as a rank holds it after start-up: a read-only mapping shared by
// the ranks of a node, or, where that is not possible, a private copy.
#pragma once

#include <cstddef>
#include <sys/mman.h>
#include <utility>
#include <vector>

namespace pyimport {

class SharedImage {
  public:
    SharedImage() = default;
    SharedImage(const SharedImage&) = delete;
    SharedImage& operator=(const SharedImage&) = delete;
    SharedImage(SharedImage&& other) noexcept { *this = std::move(other); }
    SharedImage& operator=(SharedImage&& other) noexcept {
        if (this != &other) {
            release();
            data = std::exchange(other.data, nullptr);
            size = std::exchange(other.size, 0);
            node_shared = std::exchange(other.node_shared, false);
            checked = std::exchange(other.checked, false);
            mapped = std::exchange(other.mapped, false);
            storage = std::move(other.storage);
        }
        return *this;
    }
    ~SharedImage() { release(); }

    // Takes a read-only mapping of `length` bytes (unmapped when released).
    void adopt_mapping(const char* map, size_t length, bool shared) {
        release();
        data = map;
        size = length;
        mapped = true;
        node_shared = shared;
    }
    // Makes a private copy of `length` bytes; returns where to fill it.
    char* make_private(size_t length) {
        release();
        storage.resize(length);
        data = storage.data();
        size = length;
        return storage.data();
    }
    void release() {
        if (mapped && data) munmap(const_cast<char*>(data), size);
        data = nullptr;
        size = 0;
        mapped = node_shared = checked = false;
        std::vector<char>().swap(storage);
    }

    const char* data = nullptr;
    size_t size = 0;
    bool node_shared = false;
    // The bytes passed the image's own check (its checksum) on the node's
    // leader, which then sealed them: the node's ranks need not check again.
    bool checked = false;

  private:
    bool mapped = false;
    std::vector<char> storage; // the private copy, if any
};

} // namespace pyimport
