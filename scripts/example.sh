#!/usr/bin/env bash
# Build everything and show what libpyimport.so does, in about a minute: a
# Python prefix with numpy and scipy on a simulated parallel filesystem
# (bench/slowfs: one metadata request queue, 200 us per request), and
# `import numpy, scipy.linalg, scipy.sparse, scipy.optimize` at 1 and 4 ranks,
# plain and with the shim. Prints wall times, the metadata requests each job
# sent to the filesystem, and the node's memory.
#
#   scripts/example.sh [bench/run options]   (e.g. --ranks 1,2,4,8 --program my_app.py)
#
# BUILD_DIR (default: build) selects the build directory. The full benchmark
# is bench/run (docs/benchmarks.md); examples/job.sh runs your own program on
# your own filesystem, plain and with the shim.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/install-deps.sh
build=${BUILD_DIR:-build}
case $build in /*) ;; *) build=$root/$build ;; esac

exec /usr/bin/python3 "$root/bench/run" --build "$build" --ranks 1,4 --repeats 1 \
    --methods plain,pyimport --out "$build/example-results" "$@"
