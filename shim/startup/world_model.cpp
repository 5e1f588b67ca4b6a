#include "startup/world_model.hpp"

#include "base/real.hpp"
#include "startup/runtime.hpp"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <unistd.h>

namespace pyimport {
namespace {

enum class State { none, initialising, initialised, failed };

struct WorldModel {
    std::mutex mutex;
    std::condition_variable changed;
    State state = State::none;
    pid_t owner = 0;
    void* library = nullptr;
    int provided = 0;
    bool application_initialised = false;
    bool application_finalized = false;
    bool ended = false; // the real MPI_Finalize ran
    int end_result = 0;
};

// Never destroyed: the application may call MPI_Finalize from a destructor.
WorldModel& world() {
    static WorldModel* model = new WorldModel;
    return *model;
}

// The process that initialised MPI, read before any lock: a fork child
// (which may inherit the mutex locked) never takes it.
std::atomic<pid_t> g_owner{0};

bool in_owner() {
    return g_owner.load(std::memory_order_acquire) == getpid();
}

// Locked, and only in the process that initialised MPI.
bool owned(WorldModel& model) {
    return model.state != State::none && model.owner == getpid();
}

// A call the caller meant for the library the shim initialised.
bool meant_for(const WorldModel& model, const void* definition, const char* name) {
    return definition && model.library && REAL(dlsym)(model.library, name) == definition;
}

} // namespace

void world_model_initialising(void* library) {
    WorldModel& model = world();
    std::lock_guard lock(model.mutex);
    model.state = State::initialising;
    model.owner = getpid();
    model.library = library;
    g_owner.store(model.owner, std::memory_order_release);
}

void world_model_initialised(bool ok, int provided) {
    WorldModel& model = world();
    {
        std::lock_guard lock(model.mutex);
        model.state = ok ? State::initialised : State::failed;
        model.provided = provided;
    }
    model.changed.notify_all();
}

void world_model_ended(int result) {
    WorldModel& model = world();
    std::lock_guard lock(model.mutex);
    model.ended = true;
    model.end_result = result;
}

bool world_model_init(const void* definition, const char* name, int* provided, int* result) {
    if (!in_owner()) return false;
    WorldModel& model = world();
    std::unique_lock lock(model.mutex);
    if (!owned(model) || !meant_for(model, definition, name)) return false;
    // The shim's MPI_Init_thread is collective as the application's would
    // be: waiting for it is what the application's own call would do.
    model.changed.wait(lock, [&] { return model.state != State::initialising; });
    // A failed start, a second initialisation or one after the end: the
    // real function answers, as without the shim.
    if (model.state != State::initialised || model.application_initialised || model.ended)
        return false;
    model.application_initialised = true;
    if (provided) *provided = model.provided;
    *result = 0;
    return true;
}

namespace {

// MPI_Initialized and MPI_Finalized: `said` is what the application was told.
bool answer_query(const void* definition, const char* name, int* flag, bool WorldModel::*said) {
    if (!in_owner()) return false;
    WorldModel& model = world();
    std::lock_guard lock(model.mutex);
    if (!owned(model) || model.state == State::failed || !flag ||
        !meant_for(model, definition, name))
        return false;
    *flag = model.*said ? 1 : 0;
    return true;
}

} // namespace

bool world_model_initialized(const void* definition, const char* name, int* flag) {
    return answer_query(definition, name, flag, &WorldModel::application_initialised);
}

bool world_model_finalized(const void* definition, const char* name, int* flag) {
    return answer_query(definition, name, flag, &WorldModel::application_finalized);
}

bool world_model_finalize(const void* definition, const char* name, int* result) {
    if (!in_owner()) return false;
    WorldModel& model = world();
    {
        std::lock_guard lock(model.mutex);
        if (!owned(model) || model.state != State::initialised || !model.application_initialised ||
            model.application_finalized || !meant_for(model, definition, name))
            return false;
        model.application_finalized = true;
    }
    // The shim's exit step, which ends with the real MPI_Finalize; not
    // bounded: the application's own MPI_Finalize waits for the others too.
    shutdown_at_exit(ExitPath::application_finalize);
    std::lock_guard lock(world().mutex);
    if (model.ended) {
        *result = model.end_result;
        return true;
    }
    // The start-up never finished (its thread is still inside MPI) or the
    // exit step already ran: the real MPI_Finalize is called.
    return false;
}

void* world_model_library() {
    if (!in_owner()) return nullptr;
    WorldModel& model = world();
    std::lock_guard lock(model.mutex);
    return owned(model) ? model.library : nullptr;
}

bool world_model_defines(void* handle, const char* name) {
    if (!in_owner()) return false;
    WorldModel& model = world();
    std::lock_guard lock(model.mutex);
    return owned(model) && meant_for(model, REAL(dlsym)(handle, name), name);
}

} // namespace pyimport
