// A fake Transport for unit tests: the ranks of one job are threads of the
// test process, placed on nodes as the test says. Collectives are
// rendezvous between those threads. Failures can be injected per call and
// rank: the rank still takes part in the collective (so nobody hangs) and
// then reports the failure, as an MPI error return would.
#pragma once

#include "startup/transport.hpp"

#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace pyimport::testing {

class FakeJob {
  public:
    // `nodes[r]` is the node of rank r.
    explicit FakeJob(std::vector<int> nodes) : nodes_(std::move(nodes)) {
        world_.size = static_cast<int>(nodes_.size());
        for (size_t r = 0; r < nodes_.size(); ++r) {
            Group& node = node_groups_[nodes_[r]];
            if (node.size == 0) leaders_.size++;
            node_rank_.push_back(node.size++);
        }
    }
    int size() const { return world_.size; }
    int node_rank(int rank) const { return node_rank_[rank]; }

    // The call named `call` ("connect", "broadcast", "split_by_node",
    // "leaders_broadcast", "node_broadcast", "node_all", "node_barrier",
    // "gather_at_exit") fails on `rank` (-1: every rank).
    void fail(const std::string& call, int rank = -1) { failures_.insert({call, rank}); }
    // The bytes a node leader receives from leaders_broadcast get one bit
    // flipped (a damaged transfer).
    void damage_leaders_broadcast(int rank) { damaged_.insert(rank); }

    std::unique_ptr<Transport> transport(int rank);

    // How many ranks called finish().
    int finished() {
        std::lock_guard lock(world_.mutex);
        return finished_;
    }

  private:
    friend class FakeTransport;
    struct Group {
        int size = 0;
        std::mutex mutex;
        std::condition_variable changed;
        int arrived = 0;
        uint64_t generation = 0;
        // What the members deposit for the exchange in progress.
        const void* root_data = nullptr;
        uint64_t root_length = 0;
        std::vector<std::vector<uint64_t>> values;
        std::vector<std::string> texts;
        std::vector<int> flags;
    };

    // Every member deposits (under the group's lock), waits for all, then
    // consumes, then waits again so that no deposit is overwritten early.
    void exchange(Group& group, const std::function<void()>& deposit,
                  const std::function<void()>& consume) {
        std::unique_lock lock(group.mutex);
        if (group.flags.size() != size_t(group.size)) {
            group.flags.assign(group.size, 0);
            group.values.assign(group.size, {});
            group.texts.assign(group.size, {});
        }
        deposit();
        wait_all(group, lock);
        consume();
        wait_all(group, lock);
    }
    static void wait_all(Group& group, std::unique_lock<std::mutex>& lock) {
        uint64_t generation = group.generation;
        if (++group.arrived == group.size) {
            group.arrived = 0;
            ++group.generation;
            group.changed.notify_all();
        } else {
            group.changed.wait(lock, [&] { return group.generation != generation; });
        }
    }
    bool fails(const std::string& call, int rank) const {
        return failures_.count({call, rank}) || failures_.count({call, -1});
    }

    std::vector<int> nodes_;
    std::vector<int> node_rank_;
    Group world_, leaders_;
    std::map<int, Group> node_groups_;
    std::set<std::pair<std::string, int>> failures_;
    std::set<int> damaged_;
    int finished_ = 0;
};

class FakeTransport final : public Transport {
  public:
    FakeTransport(FakeJob& job, int rank) : job_(job), rank_(rank) {}

    bool connect(std::string& error) override {
        job_.exchange(
            job_.world_, [] {}, [] {});
        return result("connect", error);
    }
    int rank() const override { return rank_; }
    int size() const override { return job_.size(); }

    bool broadcast(std::vector<char>& bytes, std::string& error) override {
        FakeJob::Group& g = job_.world_;
        job_.exchange(
            g,
            [&] {
                if (rank_ == 0) g.root_data = bytes.data(), g.root_length = bytes.size();
            },
            [&] {
                if (rank_ == 0) return;
                bytes.resize(g.root_length);
                if (g.root_length) std::memcpy(bytes.data(), g.root_data, g.root_length);
            });
        return result("broadcast", error);
    }

    bool split_by_node(uint64_t, std::string& error) override { // the test places the nodes
        job_.exchange(
            job_.world_, [] {}, [] {});
        split_ = true;
        return result("split_by_node", error);
    }
    int node_rank() const override { return split_ ? job_.node_rank(rank_) : 0; }

    bool leaders_broadcast(char* data, uint64_t length, std::string& error) override {
        if (!split_ || node_rank() != 0) return error = "not a node leader", false;
        copy_from_root(job_.leaders_, rank_ == 0, data, length);
        if (job_.damaged_.count(rank_) && length > 0) data[length - 1] ^= 1;
        return result("leaders_broadcast", error);
    }

    bool node_broadcast(void* data, uint64_t length, std::string& error) override {
        copy_from_root(node_group(), node_rank() == 0, static_cast<char*>(data), length);
        return result("node_broadcast", error);
    }

    bool node_all(bool mine, bool& all, std::string& error) override {
        FakeJob::Group& g = node_group();
        int me = node_rank();
        job_.exchange(
            g, [&] { g.flags[me] = mine; },
            [&] {
                all = true;
                for (int f : g.flags)
                    all = all && f;
            });
        return result("node_all", error);
    }

    bool node_barrier(std::string& error) override {
        job_.exchange(
            node_group(), [] {}, [] {});
        return result("node_barrier", error);
    }

    bool gather_at_exit(std::vector<uint64_t>& values, const std::string& text,
                        std::vector<std::string>& texts) override {
        FakeJob::Group& g = job_.world_;
        std::vector<uint64_t> sums;
        job_.exchange(
            g,
            [&] {
                g.values[rank_] = values;
                g.texts[rank_] = text;
            },
            [&] {
                if (rank_ != 0) return;
                sums.assign(values.size(), 0);
                for (const auto& v : g.values)
                    for (size_t i = 0; i < v.size() && i < sums.size(); ++i)
                        sums[i] += v[i];
                texts = g.texts;
            });
        if (rank_ == 0) values = sums;
        std::string error;
        return result("gather_at_exit", error);
    }

    int finish() override {
        std::lock_guard lock(job_.world_.mutex);
        ++job_.finished_;
        return 0;
    }

  private:
    FakeJob::Group& node_group() { return job_.node_groups_[job_.nodes_[rank_]]; }

    void copy_from_root(FakeJob::Group& g, bool root, char* data, uint64_t length) {
        job_.exchange(
            g,
            [&] {
                if (root) g.root_data = data, g.root_length = length;
            },
            [&] {
                if (!root && length && g.root_length == length)
                    std::memcpy(data, g.root_data, length);
            });
    }

    bool result(const char* call, std::string& error) {
        if (!job_.fails(call, rank_)) return true;
        error = std::string("injected failure of ") + call;
        return false;
    }

    FakeJob& job_;
    int rank_;
    bool split_ = false;
};

inline std::unique_ptr<Transport> FakeJob::transport(int rank) {
    return std::make_unique<FakeTransport>(*this, rank);
}

} // namespace pyimport::testing
