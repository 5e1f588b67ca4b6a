/* Wrappers compiled with _FORTIFY_SOURCE so that they call __open_2 & co. */
#ifndef PYIMPORT_PROBE_FORTIFY_H
#define PYIMPORT_PROBE_FORTIFY_H

int fortified_open(const char* path, int flags);                /* -> __open_2 */
int fortified_open64(const char* path, int flags);              /* -> __open64_2 */
int fortified_openat(int dirfd, const char* path, int flags);   /* -> __openat_2 */
int fortified_openat64(int dirfd, const char* path, int flags); /* -> __openat64_2 */

#endif
