// What libpyimport-audit.so (the loader's audit library, own namespace, no
// libc) and libpyimport.so (the preload) share: one object the audit library
// exports as `pyimport_audit`, which the preload finds through the loader's
// r_debug list and dlsym on the audit library's link map.
#pragma once

#include <cstdint>

namespace pyimport {

inline constexpr uint32_t kAuditInterfaceVersion = 1;
inline constexpr const char* kAuditInterfaceSymbol = "pyimport_audit";
inline constexpr const char* kAuditLibraryName = "libpyimport-audit.so";

// What the audit library did before main.
enum class AuditRole : uint32_t {
    off,      // not a rank's interpreter, or the companion preload is not set: passes through
    alone,    // a rank, but it shares nothing (no node directory, or a fault): `reason` says
    leader,   // the node's first process of the job: loaded as usual, then made the copies
    follower, // found what the node's leader recorded: no search, the copies
};

struct AuditInterface {
    uint32_t version; // kAuditInterfaceVersion
    AuditRole role;
    int32_t pid;     // the process the role is for (a fork child sees its parent's)
    uint32_t served; // searches answered from the node's manifest before main
    uint32_t copied; // leader: libraries copied to the node directory
    uint64_t copied_bytes;
    char reason[160]; // alone: why
    // The node directory's copies of the libraries: "<dir>/root" + original
    // path. Empty when there are none.
    char root[256];

    // Set by the active preload (nullptr: the loader searches as usual). Asked
    // by la_objsearch at LA_SER_ORIG for a name without a slash, from inside
    // the loader (its lock held): the path the loader should open instead, or
    // nullptr. `requester` is the link map of the object whose dependency or
    // dlopen it is. Must not throw, load, or wait for another thread.
    const char* (*resolve)(const char* name, const void* requester, void* context);
    void* resolve_context;

    // Set by the audit library, called by the preload around the libraries
    // its start-up loads before the resolver exists (the MPI library and what
    // it needs): kLoadsBegin before, kLoadsEnd after, kLoadsNone if it will
    // load none (inert). The node's leader records their searches as before
    // main; a follower waits at kLoadsBegin (at most 2 s) for that record.
    void (*startup_loads)(uint32_t step);

    // The names in each LD_LIBRARY_PATH directory, listed once per node by
    // the leader before main (audit.cpp list_library_path has the format);
    // nullptr without LD_LIBRARY_PATH or a leader.
    const char* library_path_listing;
    uint64_t library_path_listing_size;
};

inline constexpr uint32_t kLoadsBegin = 1, kLoadsEnd = 2, kLoadsNone = 3;

} // namespace pyimport
