// The one small interface behind which each MPI family lives (the MPICH ABI
// and Open MPI, with sessions or the world model, in transport_mpi.cpp; a
// fake of N ranks as threads in tests/unit). Only the
// start-up step and the exit use it: the serving layers never see MPI.
// Every call is collective over the ranks it names and returns false with a
// one-line reason when the MPI library reports a failure.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pyimport {

class Transport {
  public:
    virtual ~Transport() = default;

    // Joins every rank (may block until all ranks arrive).
    virtual bool connect(std::string& error) = 0;
    virtual int rank() const = 0;
    virtual int size() const = 0;

    // Rank 0's `bytes` replace every other rank's (any size). Waiting ranks
    // sleep between polls instead of spinning: while rank 0 walks the trees
    // they must leave the cores to it and to the filesystem client.
    virtual bool broadcast(std::vector<char>& bytes, std::string& error) = 0;

    // Groups the ranks by node: the ranks with equal `node_identity`
    // (startup/node_layout.hpp) share one; from then on node_rank() and the
    // calls below work. Ranks with node_rank() 0 are the node leaders; rank
    // 0 is one. Waiting ranks sleep in these calls too.
    virtual bool split_by_node(uint64_t node_identity, std::string& error) = 0;
    virtual int node_rank() const = 0;
    // `length` bytes at `data` from rank 0 to every node leader; only node
    // leaders call it.
    virtual bool leaders_broadcast(char* data, uint64_t length, std::string& error) = 0;
    // `length` bytes at `data` from the node's leader to the node's other ranks.
    virtual bool node_broadcast(void* data, uint64_t length, std::string& error) = 0;
    // `all` is whether `mine` holds on every rank of the node.
    virtual bool node_all(bool mine, bool& all, std::string& error) = 0;
    // Returns when every rank of the node has called it.
    virtual bool node_barrier(std::string& error) = 0;

    // At exit only: element-wise sums of `values` and every rank's `text`,
    // on rank 0.
    virtual bool gather_at_exit(std::vector<uint64_t>& values, const std::string& text,
                                std::vector<std::string>& texts) = 0;
    // Ends the shim's use of MPI: its session, or (world model) MPI itself,
    // once the application is done with it. Returns the MPI result (0: success).
    virtual int finish() = 0;
};

// The node leader's `text` to the node's other ranks (a length, then the bytes).
bool node_broadcast_text(Transport& transport, std::string& text, std::string& error);

// Loads the MPI library (in the calling thread: dlopen must not run in a
// thread while the constructor holds the loader) and picks its family's ABI
// (Open MPI by its exported objects, else the MPICH ABI); connect() then
// opens an MPI session with its own communicator over all ranks, or without
// sessions (or `use_sessions` false) initialises MPI and duplicates
// MPI_COMM_WORLD.
std::unique_ptr<Transport> open_mpi_transport(const std::string& library, bool use_sessions,
                                              std::string& error);

} // namespace pyimport
