// MPI transport. Uses MPI-4 sessions: the shim's session and communicator are
// separate from the world model, so the application can still call MPI_Init
// (directly, through mpi4py, or through ctypes) and MPI_Finalize as usual,
// before or after us, and MPI_Initialized tells it the truth. MPICH 4.0 cannot
// initialise again once every session is finalised, so the session stays open
// until the process exits (finish()).
#include "transport.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <mpi.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

namespace pyimport {
namespace {

// Every MPI function the shim calls, resolved from the library it loads.
#define PYIMPORT_MPI_FUNCTIONS(X)                                                                  \
    X(MPI_Session_init)                                                                            \
    X(MPI_Group_from_session_pset)                                                                 \
    X(MPI_Comm_create_from_group)                                                                  \
    X(MPI_Group_free)                                                                              \
    X(MPI_Comm_rank)                                                                               \
    X(MPI_Comm_size)                                                                               \
    X(MPI_Bcast)                                                                                   \
    X(MPI_Ibcast)                                                                                  \
    X(MPI_Test)                                                                                    \
    X(MPI_Reduce)                                                                                  \
    X(MPI_Gather)                                                                                  \
    X(MPI_Gatherv)                                                                                 \
    X(MPI_Comm_free)                                                                               \
    X(MPI_Comm_split_type)                                                                         \
    X(MPI_Comm_split)                                                                              \
    X(MPI_Allreduce)                                                                               \
    X(MPI_Session_finalize)

struct MpiFunctions {
#define PYIMPORT_MPI_MEMBER(name) decltype(&name) name##_ = nullptr;
    PYIMPORT_MPI_FUNCTIONS(PYIMPORT_MPI_MEMBER)
#undef PYIMPORT_MPI_MEMBER
};

constexpr size_t kChunk = size_t{1} << 30; // MPI counts are int: send at most 1 GiB at a time

class MpiTransport final : public Transport {
  public:
    bool load(const std::string& library, std::string& error) {
        handle_ = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!handle_) {
            error = std::string("cannot load the MPI library: ") + dlerror();
            return false;
        }
#define PYIMPORT_MPI_RESOLVE(name)                                                                 \
    mpi_.name##_ = reinterpret_cast<decltype(&name)>(dlsym(handle_, #name));                       \
    if (!mpi_.name##_) {                                                                           \
        error = library + " has no " #name " (MPI 4 sessions are needed)";                         \
        return false;                                                                              \
    }
        PYIMPORT_MPI_FUNCTIONS(PYIMPORT_MPI_RESOLVE)
#undef PYIMPORT_MPI_RESOLVE
        return true;
    }

    bool connect(std::string& error) override {
        if (mpi_.MPI_Session_init_(MPI_INFO_NULL, MPI_ERRORS_RETURN, &session_) != MPI_SUCCESS) {
            error = "MPI_Session_init failed";
            return false;
        }
        MPI_Group group;
        if (mpi_.MPI_Group_from_session_pset_(session_, "mpi://WORLD", &group) != MPI_SUCCESS ||
            mpi_.MPI_Comm_create_from_group_(group, "org.pyimport.snapshot", MPI_INFO_NULL,
                                             MPI_ERRORS_RETURN, &comm_) != MPI_SUCCESS) {
            error = "cannot create the shim's communicator";
            return false;
        }
        mpi_.MPI_Group_free_(&group);
        mpi_.MPI_Comm_rank_(comm_, &rank_);
        mpi_.MPI_Comm_size_(comm_, &size_);
        open_ = true;
        return true;
    }

    int rank() const override {
        return rank_;
    }
    int size() const override {
        return size_;
    }

    // Like MPI_Bcast of one length, but a waiting rank sleeps between polls
    // instead of spinning: while rank 0 builds the snapshot (seconds on a
    // slow filesystem) the other ranks of its node would otherwise take the
    // cores that rank 0 and the filesystem client need.
    bool bcast_length_idly(uint64_t& length) {
        // Alone there is nothing to wait for (and MPICH 4.0.2 with UCX
        // crashes in MPI_Test on a one-rank session communicator).
        if (size_ == 1) return true;
        MPI_Request request;
        if (mpi_.MPI_Ibcast_(&length, 1, MPI_UINT64_T, 0, comm_, &request) != MPI_SUCCESS)
            return false;
        long pause_ns = 100000; // 0.1 ms, doubling up to 10 ms
        for (;;) {
            int done = 0;
            if (mpi_.MPI_Test_(&request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return false;
            if (done) return true;
            struct timespec pause = {0, pause_ns};
            nanosleep(&pause, nullptr);
            pause_ns = std::min(pause_ns * 2, 10000000L);
        }
    }

    bool broadcast(std::vector<char>& bytes, std::string& error) override {
        uint64_t length = bytes.size();
        if (!bcast_length_idly(length)) {
            error = "MPI_Bcast failed";
            return false;
        }
        if (rank_ != 0) bytes.resize(length);
        for (uint64_t done = 0; done < length; done += kChunk) {
            int count = static_cast<int>(std::min<uint64_t>(kChunk, length - done));
            if (mpi_.MPI_Bcast_(bytes.data() + done, count, MPI_BYTE, 0, comm_) != MPI_SUCCESS) {
                error = "MPI_Bcast failed";
                return false;
            }
        }
        return true;
    }

    bool share_image(std::vector<char>& image, SharedImage& out, std::string& error) override {
        uint64_t length = image.size();
        if (mpi_.MPI_Bcast_(&length, 1, MPI_UINT64_T, 0, comm_) != MPI_SUCCESS)
            return error = "MPI_Bcast failed", false;
        MPI_Comm leaders = MPI_COMM_NULL;
        if (mpi_.MPI_Comm_split_type_(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node_) !=
            MPI_SUCCESS)
            return error = "MPI_Comm_split_type failed", false;
        MPI_Comm node = node_;
        int node_rank = 0;
        mpi_.MPI_Comm_rank_(node, &node_rank);
        node_rank_ = node_rank;
        mpi_.MPI_Comm_split_(comm_, node_rank == 0 ? 0 : MPI_UNDEFINED, rank_, &leaders);

        // Node leaders: a memory file, filled by the broadcast among leaders.
        int memfd = -1;
        char* data = nullptr;
        if (node_rank == 0) {
            memfd = memfd_create("pyimport-snapshot", MFD_CLOEXEC | MFD_ALLOW_SEALING);
            void* map = MAP_FAILED;
            if (memfd >= 0 && length > 0 && ftruncate(memfd, static_cast<off_t>(length)) == 0)
                map = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
            if (map == MAP_FAILED) {
                if (memfd >= 0) ::close(memfd);
                memfd = -1;
                out.storage.resize(length);
                data = out.storage.data();
            } else {
                data = static_cast<char*>(map);
            }
            if (rank_ == 0) {
                std::memcpy(data, image.data(), length);
                std::vector<char>().swap(image);
            }
            if (!bcast_chunked(data, length, leaders)) return error = "MPI_Bcast failed", false;
            if (memfd >= 0) {
                // Read-only from now on, for this rank too.
                munmap(data, length);
                data = static_cast<char*>(mmap(nullptr, length, PROT_READ, MAP_SHARED, memfd, 0));
                fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
            }
        }
        // The other ranks of the node map the leader's memory file.
        int where[2] = {static_cast<int>(getpid()), memfd};
        mpi_.MPI_Bcast_(where, 2, MPI_INT, 0, node);
        int mapped = 1;
        if (node_rank != 0) {
            mapped = 0;
            if (where[1] >= 0) {
                char proc[64];
                std::snprintf(proc, sizeof proc, "/proc/%d/fd/%d", where[0], where[1]);
                int fd = ::open(proc, O_RDONLY | O_CLOEXEC);
                if (fd >= 0) {
                    void* map = mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, 0);
                    ::close(fd);
                    if (map != MAP_FAILED) {
                        data = static_cast<char*>(map);
                        mapped = 1;
                    }
                }
            }
        }
        int all_mapped = 0;
        mpi_.MPI_Allreduce_(&mapped, &all_mapped, 1, MPI_INT, MPI_MIN, node);
        if (!all_mapped) {
            // Some rank cannot map it (no /proc, another user ...): private copies.
            if (node_rank != 0) {
                if (mapped) munmap(data, length);
                out.storage.resize(length);
                data = out.storage.data();
            }
            if (!bcast_chunked(data, length, node)) return error = "MPI_Bcast failed", false;
        }
        if (memfd >= 0) ::close(memfd); // the mappings hold the memory
        if (leaders != MPI_COMM_NULL) mpi_.MPI_Comm_free_(&leaders);
        out.data = data;
        out.size = length;
        out.node_shared = all_mapped && where[1] >= 0;
        return true;
    }

    int node_rank() const override {
        return node_rank_;
    }

    bool node_broadcast(std::string& text, std::string& error) override {
        if (node_ == MPI_COMM_NULL) return error = "no node communicator", false;
        uint64_t length = text.size();
        if (mpi_.MPI_Bcast_(&length, 1, MPI_UINT64_T, 0, node_) != MPI_SUCCESS)
            return error = "MPI_Bcast failed", false;
        text.resize(length);
        if (!bcast_chunked(text.data(), length, node_)) return error = "MPI_Bcast failed", false;
        return true;
    }

    bool node_barrier() override {
        int none = 0, all = 0; // an all-reduce is a barrier (MPI_Barrier is not loaded)
        return node_ != MPI_COMM_NULL &&
               mpi_.MPI_Allreduce_(&none, &all, 1, MPI_INT, MPI_MIN, node_) == MPI_SUCCESS;
    }

    bool bcast_chunked(char* data, uint64_t length, MPI_Comm comm) {
        for (uint64_t done = 0; done < length; done += kChunk) {
            int count = static_cast<int>(std::min<uint64_t>(kChunk, length - done));
            if (mpi_.MPI_Bcast_(data + done, count, MPI_BYTE, 0, comm) != MPI_SUCCESS) return false;
        }
        return true;
    }

    void gather_at_exit(std::vector<uint64_t>& values, const std::string& text,
                        std::vector<std::string>& texts) override {
        std::vector<uint64_t> sums(values.size());
        mpi_.MPI_Reduce_(values.data(), sums.data(), static_cast<int>(values.size()), MPI_UINT64_T,
                         MPI_SUM, 0, comm_);
        if (rank_ == 0) values = sums;
        int length = static_cast<int>(text.size());
        std::vector<int> lengths(rank_ == 0 ? size_ : 0);
        mpi_.MPI_Gather_(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, 0, comm_);
        std::vector<int> offsets(lengths.size());
        int total = 0;
        for (size_t i = 0; i < lengths.size(); ++i) {
            offsets[i] = total;
            total += lengths[i];
        }
        std::vector<char> all(rank_ == 0 ? total + 1 : 1);
        mpi_.MPI_Gatherv_(text.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(),
                          MPI_CHAR, 0, comm_);
        texts.clear();
        for (size_t i = 0; i < lengths.size(); ++i)
            texts.emplace_back(all.data() + offsets[i], static_cast<size_t>(lengths[i]));
    }

    void finish() override {
        if (!open_) return;
        open_ = false;
        if (node_ != MPI_COMM_NULL) mpi_.MPI_Comm_free_(&node_);
        mpi_.MPI_Comm_free_(&comm_);
        mpi_.MPI_Session_finalize_(&session_);
    }

  private:
    void* handle_ = nullptr;
    MpiFunctions mpi_;
    MPI_Session session_ = MPI_SESSION_NULL;
    MPI_Comm comm_ = MPI_COMM_NULL;
    MPI_Comm node_ = MPI_COMM_NULL; // the ranks of this node (from share_image on)
    int node_rank_ = 0;
    int rank_ = 0;
    int size_ = 1;
    bool open_ = false;
};

} // namespace

std::unique_ptr<Transport> open_mpi_transport(const std::string& library, std::string& error) {
    auto transport = std::make_unique<MpiTransport>();
    if (!transport->load(library, error)) return nullptr;
    return transport;
}

} // namespace pyimport
