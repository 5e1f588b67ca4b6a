// The MPI families of the transport (one template over the ABIs of
// mpi_abi.hpp), in one of two ways of starting MPI:
//
//   sessions (MPI-4: MPICH >= 4.0): the shim's session and communicator are
//     separate from the world model, so the application still calls MPI_Init
//     and MPI_Finalize as usual, before or after us, and MPI_Initialized
//     tells it the truth unaided. MPICH 4.0 cannot initialise again once
//     every session is finalised, so the session stays open until the
//     process exits (finish()).
//   the world model (MPI-3 libraries, Open MPI 4.1): the shim calls
//     MPI_Init_thread itself and works on a duplicate of MPI_COMM_WORLD; the
//     application's own MPI_Init, MPI_Initialized, MPI_Finalized and
//     MPI_Finalize are then answered as if it had not (world_model.hpp).
//
// Open MPI always takes the world model: its sessions (5.0) are untested here.
#include "base/real.hpp"
#include "startup/mpi_abi.hpp"
#include "startup/node_layout.hpp"
#include "startup/transport.hpp"
#include "startup/world_model.hpp"

#include <algorithm>
#include <time.h>

namespace pyimport {
namespace {

// Every MPI function the shim calls, typed by the family's ABI.
template <class Abi> struct MpiFunctions {
    using Comm = typename Abi::Comm;
    using Group = typename Abi::Group;
    using Info = typename Abi::Info;
    using Datatype = typename Abi::Datatype;
    using Op = typename Abi::Op;
    using Request = typename Abi::Request;
    using Session = typename Abi::Session;
    using Errhandler = typename Abi::Errhandler;
    using Status = typename Abi::Status;

    // Sessions only (null without them).
    int (*Session_init)(Info, Errhandler, Session*) = nullptr;
    int (*Group_from_session_pset)(Session, const char*, Group*) = nullptr;
    int (*Comm_create_from_group)(Group, const char*, Info, Errhandler, Comm*) = nullptr;
    int (*Session_finalize)(Session*) = nullptr;
    // The world model.
    int (*Initialized)(int*) = nullptr;
    int (*Finalized)(int*) = nullptr;
    int (*Init_thread)(int*, char***, int, int*) = nullptr;
    int (*Comm_dup)(Comm, Comm*) = nullptr;
    int (*Comm_set_errhandler)(Comm, Errhandler) = nullptr;
    int (*Finalize)() = nullptr;
    // Both.
    int (*Comm_rank)(Comm, int*) = nullptr;
    int (*Comm_size)(Comm, int*) = nullptr;
    int (*Bcast)(void*, int, Datatype, int, Comm) = nullptr;
    int (*Ibcast)(void*, int, Datatype, int, Comm, Request*) = nullptr;
    int (*Test)(Request*, int*, Status*) = nullptr;
    int (*Reduce)(const void*, void*, int, Datatype, Op, int, Comm) = nullptr;
    int (*Gather)(const void*, int, Datatype, void*, int, Datatype, int, Comm) = nullptr;
    int (*Gatherv)(const void*, int, Datatype, void*, const int*, const int*, Datatype, int,
                   Comm) = nullptr;
    int (*Allgather)(const void*, int, Datatype, void*, int, Datatype, Comm) = nullptr;
    int (*Isend)(const void*, int, Datatype, int, int, Comm, Request*) = nullptr;
    int (*Irecv)(void*, int, Datatype, int, int, Comm, Request*) = nullptr;
    int (*Comm_group)(Comm, Group*) = nullptr;
    int (*Group_incl)(Group, int, const int*, Group*) = nullptr;
    int (*Group_free)(Group*) = nullptr;
    int (*Comm_create_group)(Comm, Group, int, Comm*) = nullptr;
    int (*Comm_free)(Comm*) = nullptr;
};

constexpr uint64_t kChunk = uint64_t{1} << 30; // MPI counts are int: at most 1 GiB at a time

// How long a waiting rank sleeps between polls: from 50 us, doubling, up to
// 10 ms while rank 0 walks (seconds on a slow filesystem), up to 1 ms in the
// node's steps (milliseconds of the leader's work; the node's messages move
// only when their ranks poll).
constexpr long kFirstPauseNs = 50000;
constexpr long kStatusPauseNs = 10000000;
constexpr long kNodePauseNs = 1000000;
// The tag of the node's messages (leader to members and back) and of the
// leaders' communicator, on the shim's own communicator.
constexpr int kNodeTag = 0x7079;

template <class T> bool resolve(void* library, const char* name, T& slot) {
    slot = reinterpret_cast<T>(REAL(dlsym)(library, name));
    return slot != nullptr;
}

template <class Abi> class MpiTransport final : public Transport {
    using Comm = typename Abi::Comm;

  public:
    bool load(void* library, const std::string& name, bool use_sessions, std::string& error) {
        library_ = library;
        if (!abi_.resolve(library, error)) {
            error = name + " is not an " + Abi::kFamily + " library (" + error + ")";
            return false;
        }
        // Open MPI's null handles are known only now.
        session_ = abi_.session_null;
        comm_ = leaders_ = abi_.comm_null;
        auto& f = mpi_;
        const char* missing = nullptr;
        auto need = [&](const char* symbol, auto& slot) {
            if (!missing && !resolve(library, symbol, slot)) missing = symbol;
        };
        need("MPI_Comm_rank", f.Comm_rank);
        need("MPI_Comm_size", f.Comm_size);
        need("MPI_Bcast", f.Bcast);
        need("MPI_Ibcast", f.Ibcast);
        need("MPI_Test", f.Test);
        need("MPI_Reduce", f.Reduce);
        need("MPI_Gather", f.Gather);
        need("MPI_Gatherv", f.Gatherv);
        need("MPI_Allgather", f.Allgather);
        need("MPI_Isend", f.Isend);
        need("MPI_Irecv", f.Irecv);
        need("MPI_Comm_group", f.Comm_group);
        need("MPI_Group_incl", f.Group_incl);
        need("MPI_Group_free", f.Group_free);
        need("MPI_Comm_create_group", f.Comm_create_group);
        need("MPI_Comm_free", f.Comm_free);
        sessions_ = use_sessions && resolve(library, "MPI_Session_init", f.Session_init);
        if (sessions_) {
            need("MPI_Group_from_session_pset", f.Group_from_session_pset);
            need("MPI_Comm_create_from_group", f.Comm_create_from_group);
            need("MPI_Session_finalize", f.Session_finalize);
        } else {
            need("MPI_Initialized", f.Initialized);
            need("MPI_Finalized", f.Finalized);
            need("MPI_Init_thread", f.Init_thread);
            need("MPI_Comm_dup", f.Comm_dup);
            need("MPI_Comm_set_errhandler", f.Comm_set_errhandler);
            need("MPI_Finalize", f.Finalize);
        }
        if (missing) {
            error = name + " has no " + missing + " (an MPI-3 library is needed)";
            return false;
        }
        return true;
    }

    bool connect(std::string& error) override {
        return sessions_ ? open_session(error) : initialise_world(error);
    }

    int rank() const override { return rank_; }
    int size() const override { return size_; }

    bool broadcast(std::vector<char>& bytes, std::string& error) override {
        uint64_t length = bytes.size();
        if (!broadcast_length_idly(length)) return error = "MPI_Ibcast failed", false;
        if (rank_ != 0) bytes.resize(length);
        return broadcast_chunked(bytes.data(), length, comm_, error);
    }

    // One all-gather of the ranks' node identities; the node's steps are then
    // messages between its leader and its other ranks, and the leaders get a
    // communicator of their own only if there are several nodes
    // (MPI_Comm_create_group: only they take part). The all-gather is MPI's
    // blocking one: every rank arrives at once, just after rank 0's status,
    // and its algorithms scale (nonblocking ones are linear in Open MPI, and
    // in MPICH a ring that moves only when each rank polls).
    bool split_by_node(uint64_t node_identity, std::string& error) override {
        std::vector<uint64_t> identities(size_, node_identity);
        if (size_ > 1 && mpi_.Allgather(&node_identity, 1, abi_.uint64, identities.data(), 1,
                                        abi_.uint64, comm_) != mpi_abi::kSuccess)
            return error = "MPI_Allgather failed", false;
        layout_ = node_layout(identities, rank_);
        if (layout_.leader() && layout_.leaders.size() > 1) {
            typename Abi::Group all = abi_.group_null, leaders = abi_.group_null;
            int made = mpi_.Comm_group(comm_, &all);
            if (made == mpi_abi::kSuccess)
                made = mpi_.Group_incl(all, static_cast<int>(layout_.leaders.size()),
                                       layout_.leaders.data(), &leaders);
            if (made == mpi_abi::kSuccess)
                made = mpi_.Comm_create_group(comm_, leaders, kNodeTag, &leaders_);
            for (typename Abi::Group* group : {&leaders, &all})
                if (*group != abi_.group_null) mpi_.Group_free(group);
            if (made != mpi_abi::kSuccess)
                return error = "cannot create the node leaders' communicator", false;
        }
        return true;
    }

    int node_rank() const override { return layout_.node_rank; }

    bool leaders_broadcast(char* data, uint64_t length, std::string& error) override {
        if (!layout_.leader()) return error = "not a node leader", false;
        if (layout_.leaders.size() == 1) return true; // rank 0 alone: it has the bytes
        return broadcast_chunked(data, length, leaders_, error);
    }

    // The node's other ranks wait while their leader fills and seals the
    // image or copies libraries: in MPI's blocking calls they would spin and,
    // on a node with more ranks than cores, take the leader's CPU.
    bool node_broadcast(void* data, uint64_t length, std::string& error) override {
        char* bytes = static_cast<char*>(data);
        for (uint64_t done = 0; done < length; done += kChunk) {
            int count = static_cast<int>(std::min(kChunk, length - done));
            if (!node_messages(bytes + done, count, nullptr))
                return error = "a node message failed (MPI_Isend or MPI_Irecv)", false;
        }
        return true;
    }

    bool node_all(bool mine, bool& all, std::string& error) override {
        const std::vector<int>& ranks = layout_.node_ranks;
        int flag = mine ? 1 : 0;
        std::vector<int> flags(layout_.leader() ? ranks.size() : 1, flag);
        // The members' flags to the leader, then the leader's verdict back.
        if (!node_messages(nullptr, 0, flags.data()))
            return error = "a node message failed (MPI_Isend or MPI_Irecv)", false;
        int verdict = *std::min_element(flags.begin(), flags.end());
        if (!node_messages(reinterpret_cast<char*>(&verdict), sizeof verdict, nullptr))
            return error = "a node message failed (MPI_Isend or MPI_Irecv)", false;
        all = verdict != 0;
        return true;
    }

    bool node_barrier(std::string& error) override {
        bool ignored = false;
        return node_all(true, ignored, error);
    }

    bool gather_at_exit(std::vector<uint64_t>& values, const std::string& text,
                        std::vector<std::string>& texts) override {
        texts.clear();
        if (ended_elsewhere()) return false;
        std::vector<uint64_t> sums(values.size());
        if (mpi_.Reduce(values.data(), sums.data(), static_cast<int>(values.size()), abi_.uint64,
                        abi_.sum, 0, comm_) != mpi_abi::kSuccess)
            return false;
        if (rank_ == 0) values = sums;
        int length = static_cast<int>(text.size());
        std::vector<int> lengths(rank_ == 0 ? size_ : 0);
        if (mpi_.Gather(&length, 1, abi_.integer, lengths.data(), 1, abi_.integer, 0, comm_) !=
            mpi_abi::kSuccess)
            return false;
        std::vector<int> offsets(lengths.size());
        int total = 0;
        for (size_t i = 0; i < lengths.size(); ++i) {
            offsets[i] = total;
            total += lengths[i];
        }
        std::vector<char> all(rank_ == 0 ? total + 1 : 1);
        if (mpi_.Gatherv(text.data(), length, abi_.character, all.data(), lengths.data(),
                         offsets.data(), abi_.character, 0, comm_) != mpi_abi::kSuccess)
            return false;
        for (size_t i = 0; i < lengths.size(); ++i)
            texts.emplace_back(all.data() + offsets[i], static_cast<size_t>(lengths[i]));
        return true;
    }

    int finish() override {
        if (!open_) return mpi_abi::kSuccess;
        open_ = false;
        if (ended_elsewhere()) {
            world_model_ended(mpi_abi::kSuccess);
            return mpi_abi::kSuccess;
        }
        for (Comm* comm : {&leaders_, &comm_})
            if (*comm != abi_.comm_null) mpi_.Comm_free(comm);
        if (sessions_) return mpi_.Session_finalize(&session_);
        int result = mpi_.Finalize();
        world_model_ended(result);
        return result;
    }

  private:
    // World model: MPI was finalised past the shim (a PMPI_Finalize it did
    // not see): nothing may be called on it any more.
    bool ended_elsewhere() const {
        int done = 0;
        return !sessions_ && mpi_.Finalized && mpi_.Finalized(&done) == mpi_abi::kSuccess && done;
    }

    bool open_session(std::string& error) {
        auto& f = mpi_;
        if (f.Session_init(abi_.info_null, abi_.errors_return, &session_) != mpi_abi::kSuccess)
            return error = "MPI_Session_init failed", false;
        open_ = true;
        typename Abi::Group group = abi_.group_null;
        if (f.Group_from_session_pset(session_, "mpi://WORLD", &group) != mpi_abi::kSuccess)
            return error = "cannot find the MPI process set mpi://WORLD", false;
        int made = f.Comm_create_from_group(group, "org.pyimport.snapshot", abi_.info_null,
                                            abi_.errors_return, &comm_);
        f.Group_free(&group);
        if (made != mpi_abi::kSuccess)
            return error = "cannot create the shim's communicator", false;
        return rank_and_size(error);
    }

    bool initialise_world(std::string& error) {
        auto& f = mpi_;
        int initialised = 0;
        if (f.Initialized(&initialised) != mpi_abi::kSuccess || initialised)
            return error = "MPI is already initialised in this process", false;
        int provided = 0;
        world_model_initialising(library_);
        // The most the application may ask for: mpi4py asks for MPI_THREAD_MULTIPLE.
        int result = f.Init_thread(nullptr, nullptr, mpi_abi::kThreadMultiple, &provided);
        world_model_initialised(result == mpi_abi::kSuccess, provided);
        if (result != mpi_abi::kSuccess) return error = "MPI_Init_thread failed", false;
        open_ = true;
        if (f.Comm_dup(abi_.comm_world, &comm_) != mpi_abi::kSuccess)
            return error = "MPI_Comm_dup failed", false;
        f.Comm_set_errhandler(comm_, abi_.errors_return);
        return rank_and_size(error);
    }

    bool rank_and_size(std::string& error) {
        if (mpi_.Comm_rank(comm_, &rank_) != mpi_abi::kSuccess ||
            mpi_.Comm_size(comm_, &size_) != mpi_abi::kSuccess)
            return error = "MPI_Comm_rank or MPI_Comm_size failed", false;
        return true;
    }

    // Like MPI_Bcast of one length, but a waiting rank sleeps between polls.
    bool broadcast_length_idly(uint64_t& length) {
        // Alone there is nothing to wait for (and MPICH 4.0.2 with UCX
        // crashes in MPI_Test on a one-rank session communicator).
        if (size_ == 1) return true;
        typename Abi::Request request;
        if (mpi_.Ibcast(&length, 1, abi_.uint64, 0, comm_, &request) != mpi_abi::kSuccess)
            return false;
        return wait_idly(&request, 1, kStatusPauseNs);
    }

    // Completes `count` requests, sleeping between polls (MPI's blocking
    // calls spin).
    bool wait_idly(typename Abi::Request* requests, size_t count, long longest_pause_ns) {
        long pause_ns = kFirstPauseNs;
        for (;;) {
            bool all_done = true;
            for (size_t i = 0; i < count; ++i) {
                int done = 0; // a completed request is null, and tests done again
                if (mpi_.Test(&requests[i], &done, abi_.status_ignore) != mpi_abi::kSuccess)
                    return false;
                all_done = all_done && done;
            }
            if (all_done) return true;
            struct timespec pause = {0, pause_ns};
            nanosleep(&pause, nullptr);
            pause_ns = std::min(pause_ns * 2, longest_pause_ns);
        }
    }

    // One exchange between the node's leader and its other ranks, waited for
    // idly: `down` (`down_count` bytes) from the leader to each of them, or
    // (`up` not null) one int from each of them into the leader's
    // up[node rank] (a member sends its up[0]). Alone on its node a rank has
    // nothing to do (and MPICH 4.0.2 with UCX would crash testing).
    bool node_messages(char* down, int down_count, int* up) {
        const std::vector<int>& ranks = layout_.node_ranks;
        if (ranks.size() == 1) return true;
        const bool leader = layout_.leader();
        std::vector<typename Abi::Request> requests(leader ? ranks.size() - 1 : 1);
        size_t posted = 0;
        for (; posted < requests.size(); ++posted) {
            size_t member = leader ? posted + 1 : 0;
            int peer = leader ? ranks[member] : ranks[0];
            typename Abi::Request* request = &requests[posted];
            int result =
                up ? (leader
                          ? mpi_.Irecv(&up[member], 1, abi_.integer, peer, kNodeTag, comm_, request)
                          : mpi_.Isend(&up[0], 1, abi_.integer, peer, kNodeTag, comm_, request))
                   : (leader
                          ? mpi_.Isend(down, down_count, abi_.byte, peer, kNodeTag, comm_, request)
                          : mpi_.Irecv(down, down_count, abi_.byte, peer, kNodeTag, comm_,
                                       request));
            if (result != mpi_abi::kSuccess) break;
        }
        // What was posted completes either way: its buffers are on our stack.
        return wait_idly(requests.data(), posted, kNodePauseNs) && posted == requests.size();
    }

    bool broadcast_chunked(char* data, uint64_t length, Comm comm, std::string& error) {
        for (uint64_t done = 0; done < length; done += kChunk) {
            int count = static_cast<int>(std::min(kChunk, length - done));
            if (mpi_.Bcast(data + done, count, abi_.byte, 0, comm) != mpi_abi::kSuccess)
                return error = "MPI_Bcast failed", false;
        }
        return true;
    }

    void* library_ = nullptr;
    Abi abi_;
    MpiFunctions<Abi> mpi_;
    bool sessions_ = false;
    typename Abi::Session session_{};
    Comm comm_{};
    NodeLayout layout_;
    Comm leaders_{}; // node leaders, if several (comm_null otherwise)
    int rank_ = 0;
    int size_ = 1;
    bool open_ = false;
};

template <class Abi>
std::unique_ptr<Transport> make(void* library, const std::string& name, bool sessions,
                                std::string& error) {
    auto transport = std::make_unique<MpiTransport<Abi>>();
    if (!transport->load(library, name, sessions, error)) return nullptr;
    return transport;
}

} // namespace

std::unique_ptr<Transport> open_mpi_transport(const std::string& library, bool use_sessions,
                                              std::string& error) {
    void* handle = REAL(dlopen)(library.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char* why = REAL(dlerror)();
        error = std::string("cannot load the MPI library: ") + (why ? why : library.c_str());
        return nullptr;
    }
    // Open MPI exports its predefined objects; the MPICH ABI has none.
    std::unique_ptr<Transport> transport =
        REAL(dlsym)(handle, "ompi_mpi_comm_world")
            ? make<mpi_abi::OpenMpi>(handle, library, false, error)
            : make<mpi_abi::Mpich>(handle, library, use_sessions, error);
    // The library stays loaded either way: it cannot be unloaded safely.
    return transport;
}

} // namespace pyimport
