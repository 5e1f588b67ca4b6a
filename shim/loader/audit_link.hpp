// The preload's side of the audit library (audit/interface.hpp): finding it,
// when LD_AUDIT loaded it, and giving it the loader's search (search.hpp).
#pragma once

#include "audit/interface.hpp"

#include <string>

namespace pyimport {

class EarlySearch;
class LibrarySearch;

// The audit library's interface, nullptr if it is not loaded (or another
// version). It lives in a namespace of its own: found through the loader's
// list of namespaces (r_debug_extended, glibc >= 2.35) and dlsym on its link map.
AuditInterface* find_audit_interface();

// The same, found once by the preload's constructor (remember_audit_interface)
// and then only read: the dl* entry points must not call into libdl between
// the real dlerror and its answer (a dlsym frees the pending message).
void remember_audit_interface();
AuditInterface* audit_interface();

// Hands the audit library `search` for every search by name of this process
// (`pid`; its fork children search as usual). `search` stays alive.
void connect_audit(AuditInterface& audit, LibrarySearch* search, int pid);
// Before the snapshot: `early` until connect_audit replaces it.
void connect_audit_early(AuditInterface& audit, EarlySearch* early, int pid);
// No full search came (no snapshot): the early one stops answering, its
// listings being of the start-up's time.
void disconnect_audit_early();

// One line on what the audit library did before main.
std::string audit_summary(const AuditInterface& audit);

// Whether `name` is a copy the audit library made, and the original's name.
const char* audit_original(const AuditInterface* audit, const char* name);

} // namespace pyimport
