/* An rtld-audit library that audits nothing (la_version returns its
 * argument, the interface glibc offers; AUDIT_INACTIVE=1 in the environment
 * makes it return 0, which unloads it). For e2e_with_ld_audit: the shim must
 * work next to another tool's LD_AUDIT, which fixes the static TLS block
 * before the preloaded libraries load. */
#include <link.h>
#include <stdlib.h>

unsigned int la_version(unsigned int version) {
    return getenv("AUDIT_INACTIVE") ? 0 : version;
}
