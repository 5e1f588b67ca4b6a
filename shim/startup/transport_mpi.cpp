// The MPI family of the transport, with MPI-4 sessions: the shim's session
// and communicator are separate from the world model, so the application can
// still call MPI_Init (directly, through mpi4py, or through ctypes) and
// MPI_Finalize as usual, before or after us, and MPI_Initialized tells it the
// truth. MPICH 4.0 cannot initialise again once every session is finalised,
// so the session stays open until the process exits (finish()).
#include "startup/transport.hpp"

#include "base/real.hpp"

#include <algorithm>
#include <mpi.h>
#include <time.h>

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

constexpr uint64_t kChunk = uint64_t{1} << 30; // MPI counts are int: at most 1 GiB at a time

class MpiTransport final : public Transport {
  public:
    bool load(const std::string& library, std::string& error) {
        handle_ = REAL(dlopen)(library.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!handle_) {
            const char* why = REAL(dlerror)();
            error = std::string("cannot load the MPI library: ") + (why ? why : library.c_str());
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
        if (mpi_.MPI_Session_init_(MPI_INFO_NULL, MPI_ERRORS_RETURN, &session_) != MPI_SUCCESS)
            return error = "MPI_Session_init failed", false;
        open_ = true;
        MPI_Group group = MPI_GROUP_NULL;
        if (mpi_.MPI_Group_from_session_pset_(session_, "mpi://WORLD", &group) != MPI_SUCCESS)
            return error = "cannot find the MPI process set mpi://WORLD", false;
        int made = mpi_.MPI_Comm_create_from_group_(group, "org.pyimport.snapshot", MPI_INFO_NULL,
                                                    MPI_ERRORS_RETURN, &comm_);
        mpi_.MPI_Group_free_(&group);
        if (made != MPI_SUCCESS) return error = "cannot create the shim's communicator", false;
        if (mpi_.MPI_Comm_rank_(comm_, &rank_) != MPI_SUCCESS ||
            mpi_.MPI_Comm_size_(comm_, &size_) != MPI_SUCCESS)
            return error = "MPI_Comm_rank or MPI_Comm_size failed", false;
        return true;
    }

    int rank() const override {
        return rank_;
    }
    int size() const override {
        return size_;
    }

    bool broadcast(std::vector<char>& bytes, std::string& error) override {
        uint64_t length = bytes.size();
        if (!broadcast_length_idly(length)) return error = "MPI_Ibcast failed", false;
        if (rank_ != 0) bytes.resize(length);
        return broadcast_chunked(bytes.data(), length, comm_, error);
    }

    bool split_by_node(std::string& error) override {
        if (mpi_.MPI_Comm_split_type_(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node_) !=
            MPI_SUCCESS)
            return error = "MPI_Comm_split_type failed", false;
        if (mpi_.MPI_Comm_rank_(node_, &node_rank_) != MPI_SUCCESS)
            return error = "MPI_Comm_rank failed", false;
        if (mpi_.MPI_Comm_split_(comm_, node_rank_ == 0 ? 0 : MPI_UNDEFINED, rank_, &leaders_) !=
            MPI_SUCCESS)
            return error = "MPI_Comm_split failed", false;
        return true;
    }

    int node_rank() const override {
        return node_rank_;
    }

    bool leaders_broadcast(char* data, uint64_t length, std::string& error) override {
        if (leaders_ == MPI_COMM_NULL) return error = "not a node leader", false;
        return broadcast_chunked(data, length, leaders_, error);
    }

    bool node_broadcast(void* data, uint64_t length, std::string& error) override {
        if (node_ == MPI_COMM_NULL) return error = "no node communicator", false;
        return broadcast_chunked(static_cast<char*>(data), length, node_, error);
    }

    bool node_all(bool mine, bool& all, std::string& error) override {
        int in = mine ? 1 : 0, out = 0;
        if (node_ == MPI_COMM_NULL ||
            mpi_.MPI_Allreduce_(&in, &out, 1, MPI_INT, MPI_MIN, node_) != MPI_SUCCESS)
            return error = "MPI_Allreduce failed", false;
        all = out != 0;
        return true;
    }

    bool node_barrier(std::string& error) override {
        bool ignored = false; // an all-reduce is a barrier (MPI_Barrier is not loaded)
        return node_all(true, ignored, error);
    }

    bool gather_at_exit(std::vector<uint64_t>& values, const std::string& text,
                        std::vector<std::string>& texts) override {
        texts.clear();
        std::vector<uint64_t> sums(values.size());
        if (mpi_.MPI_Reduce_(values.data(), sums.data(), static_cast<int>(values.size()),
                             MPI_UINT64_T, MPI_SUM, 0, comm_) != MPI_SUCCESS)
            return false;
        if (rank_ == 0) values = sums;
        int length = static_cast<int>(text.size());
        std::vector<int> lengths(rank_ == 0 ? size_ : 0);
        if (mpi_.MPI_Gather_(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, 0, comm_) !=
            MPI_SUCCESS)
            return false;
        std::vector<int> offsets(lengths.size());
        int total = 0;
        for (size_t i = 0; i < lengths.size(); ++i) {
            offsets[i] = total;
            total += lengths[i];
        }
        std::vector<char> all(rank_ == 0 ? total + 1 : 1);
        if (mpi_.MPI_Gatherv_(text.data(), length, MPI_CHAR, all.data(), lengths.data(),
                              offsets.data(), MPI_CHAR, 0, comm_) != MPI_SUCCESS)
            return false;
        for (size_t i = 0; i < lengths.size(); ++i)
            texts.emplace_back(all.data() + offsets[i], static_cast<size_t>(lengths[i]));
        return true;
    }

    void finish() override {
        if (!open_) return;
        open_ = false;
        for (MPI_Comm* comm : {&leaders_, &node_, &comm_})
            if (*comm != MPI_COMM_NULL) mpi_.MPI_Comm_free_(comm);
        mpi_.MPI_Session_finalize_(&session_);
    }

  private:
    // Like MPI_Bcast of one length, but a waiting rank sleeps between polls.
    bool broadcast_length_idly(uint64_t& length) {
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

    bool broadcast_chunked(char* data, uint64_t length, MPI_Comm comm, std::string& error) {
        for (uint64_t done = 0; done < length; done += kChunk) {
            int count = static_cast<int>(std::min(kChunk, length - done));
            if (mpi_.MPI_Bcast_(data + done, count, MPI_BYTE, 0, comm) != MPI_SUCCESS)
                return error = "MPI_Bcast failed", false;
        }
        return true;
    }

    void* handle_ = nullptr;
    MpiFunctions mpi_;
    MPI_Session session_ = MPI_SESSION_NULL;
    MPI_Comm comm_ = MPI_COMM_NULL;
    MPI_Comm node_ = MPI_COMM_NULL;    // the ranks of this node
    MPI_Comm leaders_ = MPI_COMM_NULL; // node leaders (MPI_COMM_NULL on the others)
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
