#!/usr/bin/env bash
# Configure, build and run every test (unit, probe and end-to-end MPI tests).
#
#   scripts/test.sh [extra ctest arguments, e.g. -R e2e_ -V]
#
# BUILD_DIR (default: build) selects the build directory.  Exits non-zero if
# configuring, building or any test fails.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/install-deps.sh
build=${BUILD_DIR:-build}

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j2
ctest --test-dir "$build" --output-on-failure "$@"
