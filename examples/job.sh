#!/usr/bin/env bash
# examples/job.sh -- show what libpyimport.so does for an MPI Python job.
#
# Usage:  examples/job.sh [LIBRARY] [PROGRAM [ARGS...]]
#
#   LIBRARY  path of libpyimport.so (installed or built);
#            default: build/shim/libpyimport.so under the repository root.
#   PROGRAM  Python script to run; default: examples/app.py, which imports
#            numpy and scipy and prints one line per rank with its import time.
#
# Environment: PYTHON (default /usr/bin/python3, Debian's interpreter with
# numpy/scipy), MPIEXEC (default mpiexec.mpich), RANKS (default "1 4").
#
# For each rank count it runs the program twice with `mpiexec -n N`:
#   1. plain (every rank reads the module files itself), and
#   2. with LD_PRELOAD=LIBRARY and PYIMPORT_STATS=1: rank 0 reads the files
#      once and broadcasts them; at exit rank 0 prints a "pyimport: ..."
#      summary on stderr saying how many file calls were served from memory.
# and prints the wall time of each run (bash `time`).  With 1 rank there is
# nothing to share, so expect no gain there; the gain grows with the number of
# ranks and with how slow the file system holding the modules is (a parallel
# file system under load, rather than a local disk with a warm page cache).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

lib=${1:-$root/build/shim/libpyimport.so}
shift || true
if [ $# -gt 0 ]; then prog=("$@"); else prog=("$here/app.py"); fi
python=${PYTHON:-/usr/bin/python3}
# MPICH's by name: the default mpiexec may be Open MPI's (which wants more options as root).
mpiexec=${MPIEXEC:-$(command -v mpiexec.mpich || echo mpiexec)}
ranks=${RANKS:-1 4}

if [ ! -f "$lib" ]; then
    echo "job.sh: $lib not found; build it first (scripts/example.sh does)" >&2
    exit 2
fi
lib=$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")

# Same deterministic, single-threaded BLAS for both runs.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
TIMEFORMAT='    wall time: %3R s (user %3U s, sys %3S s)'

echo "library: $lib"
echo "python:  $python"
echo "program: ${prog[*]}"
for n in $ranks; do
    echo
    echo "=== $n rank(s), without the shim"
    { time "$mpiexec" -n "$n" "$python" "${prog[@]}"; } 2>&1
    echo
    echo "=== $n rank(s), LD_PRELOAD=$(basename "$lib") PYIMPORT_STATS=1"
    { time env LD_PRELOAD="$lib" PYIMPORT_STATS=1 "$mpiexec" -n "$n" "$python" "${prog[@]}"; } 2>&1
done
