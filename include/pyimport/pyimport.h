/* pyimport: the public face of libpyimport.so.
 *
 * The library has no API to call: it is preloaded (LD_PRELOAD) and configured
 * through environment variables. This header names them, for job launchers
 * and wrappers that set them programmatically; their meaning, type and
 * default are in shim/config.hpp (PYIMPORT_OPTIONS) and the README. */
#ifndef PYIMPORT_PYIMPORT_H
#define PYIMPORT_PYIMPORT_H

#define PYIMPORT_VERSION_MAJOR 0
#define PYIMPORT_VERSION_MINOR 1

#define PYIMPORT_ENV_DISABLE "PYIMPORT_DISABLE"
#define PYIMPORT_ENV_PREFIX "PYIMPORT_PREFIX"
#define PYIMPORT_ENV_MAX_BYTES "PYIMPORT_MAX_BYTES"
#define PYIMPORT_ENV_CONTENT "PYIMPORT_CONTENT"
#define PYIMPORT_ENV_STAT "PYIMPORT_STAT"
#define PYIMPORT_ENV_EXCLUDE "PYIMPORT_EXCLUDE"
#define PYIMPORT_ENV_PROFILE "PYIMPORT_PROFILE"
#define PYIMPORT_ENV_LIBRARIES "PYIMPORT_LIBRARIES"
#define PYIMPORT_ENV_NODE_DIR "PYIMPORT_NODE_DIR"
#define PYIMPORT_ENV_LOG "PYIMPORT_LOG"
#define PYIMPORT_ENV_STATS "PYIMPORT_STATS"
#define PYIMPORT_ENV_STATS_FILE "PYIMPORT_STATS_FILE"
#define PYIMPORT_ENV_MIN_RANKS "PYIMPORT_MIN_RANKS"
#define PYIMPORT_ENV_TIMEOUT "PYIMPORT_TIMEOUT"
#define PYIMPORT_ENV_RECHECK "PYIMPORT_RECHECK"
#define PYIMPORT_ENV_ANY_PROGRAM "PYIMPORT_ANY_PROGRAM"
#define PYIMPORT_ENV_EXIT_TIMEOUT "PYIMPORT_EXIT_TIMEOUT"
#define PYIMPORT_ENV_MPI_SESSIONS "PYIMPORT_MPI_SESSIONS"
#define PYIMPORT_ENV_MPI_LIBRARY "PYIMPORT_MPI_LIBRARY"

/* Set by an active process in its own environment (its pid): every
 * descendant sees it and stays inert. */
#define PYIMPORT_ENV_ACTIVE_PID "PYIMPORT_ACTIVE_PID"

#endif
