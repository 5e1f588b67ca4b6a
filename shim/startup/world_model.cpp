#include "startup/world_model.hpp"

#include "base/real.hpp"
#include "startup/runtime.hpp"

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

// Locked, and only in the process that initialised MPI.
bool owned(WorldModel& model) {
    return model.state != State::none && model.owner == getpid();
}

} // namespace

void world_model_initialising(void* library) {
    WorldModel& model = world();
    std::lock_guard lock(model.mutex);
    model.state = State::initialising;
    model.owner = getpid();
    model.library = library;
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

bool world_model_init(int* provided, int* result) {
    WorldModel& model = world();
    std::unique_lock lock(model.mutex);
    if (!owned(model)) return false;
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

bool world_model_initialized(int* flag) {
    WorldModel& model = world();
    std::lock_guard lock(model.mutex);
    if (!owned(model) || model.state == State::failed || !flag) return false;
    *flag = model.application_initialised ? 1 : 0;
    return true;
}

bool world_model_finalized(int* flag) {
    WorldModel& model = world();
    std::lock_guard lock(model.mutex);
    if (!owned(model) || model.state == State::failed || !flag) return false;
    *flag = model.application_finalized ? 1 : 0;
    return true;
}

bool world_model_finalize(int* result) {
    WorldModel& model = world();
    {
        std::lock_guard lock(model.mutex);
        if (!owned(model) || model.state != State::initialised || !model.application_initialised ||
            model.application_finalized)
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
    WorldModel& model = world();
    std::lock_guard lock(model.mutex);
    return owned(model) ? model.library : nullptr;
}

bool world_model_defines(void* handle, const char* name) {
    void* library = world_model_library();
    if (!library) return false;
    void* mine = REAL(dlsym)(library, name);
    return mine && REAL(dlsym)(handle, name) == mine;
}

} // namespace pyimport
