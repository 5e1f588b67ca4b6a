// Which ranks share a node, decided by the shim rather than by MPI: a node is
// the ranks that can map each other's memory files (one kernel, one PID
// namespace) and see one node directory. Every rank contributes its
// node_identity() to one all-gather; node_layout() then answers locally,
// the same on every rank, without the communicator splits that cost a
// second at 16 ranks on two cores (MPICH 4.0's MPI_Comm_split_type).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pyimport {

// This process's node: the kernel's boot id, its PID namespace, the node
// directory's device and inode (emulated nodes each mount their own
// /dev/shm), and the host name.
uint64_t node_identity(const std::string& node_dir);

struct NodeLayout {
    int node_rank = 0;           // this rank's place among its node's ranks
    std::vector<int> node_ranks; // the node's ranks (world ranks, ascending)
    std::vector<int> leaders;    // every node's first rank, ascending (rank 0 first)
    bool leader() const { return node_rank == 0; }
};

// `identities[r]` is rank r's node_identity().
NodeLayout node_layout(const std::vector<uint64_t>& identities, int rank);

} // namespace pyimport
