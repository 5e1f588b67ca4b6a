#!/usr/bin/env bash
# Build libpyimport.so and run the example job (examples/job.sh) with it:
# numpy+scipy imports at 1 and 4 ranks, with and without the shim, with
# PYIMPORT_STATS=1 and wall times.
#
#   scripts/example.sh [PROGRAM [ARGS...]]     (default program: examples/app.py)
#
# BUILD_DIR (default: build) selects the build directory.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/install-deps.sh
build=${BUILD_DIR:-build}
case $build in /*) ;; *) build=$root/$build ;; esac

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j2 --target pyimport
exec "$root/examples/job.sh" "$build/shim/libpyimport.so" "$@"
