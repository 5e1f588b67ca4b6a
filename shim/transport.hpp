// The one collective step, behind a small interface so that the core never
// sees MPI. The MPI implementation (transport_mpi.cpp) loads the MPI library
// at run time, only in processes that activate.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pyimport {

// The snapshot image as a rank holds it: a read-only mapping shared by the
// ranks of a node, or, where that is not possible, a private copy.
struct SharedImage {
    const char* data = nullptr;
    size_t size = 0;
    bool node_shared = false;
    std::vector<char> storage; // the private copy, if any
};

class Transport {
  public:
    virtual ~Transport() = default;
    // Joins every rank (collective, may block until all ranks arrive).
    virtual bool connect(std::string& error) = 0;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    // Rank 0's `bytes` replace every other rank's (any size, also > 2 GiB).
    virtual bool broadcast(std::vector<char>& bytes, std::string& error) = 0;
    // Rank 0's image to every rank, one copy per node: node leaders receive
    // it into a memory file that the other ranks of the node map.
    virtual bool share_image(std::vector<char>& image, SharedImage& out, std::string& error) = 0;
    // After share_image: this rank's place among the ranks of its node, and
    // the node's first rank's `text` to the others (a start-up step too).
    virtual int node_rank() const = 0;
    virtual bool node_broadcast(std::string& text, std::string& error) = 0;
    // Returns when every rank of the node has called it.
    virtual bool node_barrier() = 0;
    // At exit only: element-wise sums of `values` and every rank's `text`, on rank 0.
    virtual void gather_at_exit(std::vector<uint64_t>& values, const std::string& text,
                                std::vector<std::string>& texts) = 0;
    // Ends the shim's use of MPI; the application's own MPI use is unaffected.
    virtual void finish() = 0;
};

// Loads the MPI library (in the calling thread: dlopen must not run in a
// thread while the constructor holds the loader); connect() then opens an
// MPI session with its own communicator over all ranks.
std::unique_ptr<Transport> open_mpi_transport(const std::string& library, std::string& error);

} // namespace pyimport
