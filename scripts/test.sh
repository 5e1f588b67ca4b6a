#!/usr/bin/env bash
# Configure, build and run every test, in four stages:
#
#   main  the normal build and every CTest test (unit, probe, end to end MPI,
#         the emulated clusters: Slurm, Hydra over nodes, Open MPI), on this
#         machine as install-deps.sh leaves it: Open MPI is the default MPI
#         alternative (python3-mpi4py makes it so), MPICH installed beside it;
#   mpich-only  a Release build from scratch and the MPICH tests again as on a
#         machine with MPICH alone (scripts/without-openmpi.sh hides Open MPI);
#   asan  the unit tests again, a Debug build with -fsanitize=address,undefined
#         (PYIMPORT_SANITIZE=ON): any sanitizer report, a leak included, fails;
#
# Every build has PYIMPORT_WERROR=ON: with the main stage's RelWithDebInfo
# (also what no build type gives) and the test build_types' MinSizeRel, each
# build type is built without a warning.
#   fuzz  each libFuzzer target of tests/fuzz (a clang build, PYIMPORT_FUZZ=ON)
#         for FUZZ_SECONDS on a scratch copy of its seed corpus: a crash, leak,
#         timeout, out-of-memory or sanitizer report fails.
#
#   scripts/test.sh [extra ctest arguments for the main stage, e.g. -R e2e_ -V]
#
# BUILD_DIR (default: build) selects the main build directory; the others go
# next to it: ASAN_BUILD_DIR (default: $BUILD_DIR-asan), FUZZ_BUILD_DIR
# (default: $BUILD_DIR-fuzz). STAGES (default: "main asan fuzz") selects the
# stages, FUZZ_SECONDS (default: 30) each fuzz target's time; MPICH_BUILD_DIR
# (default: $BUILD_DIR-mpich) the mpich-only stage's build. A failing input
# is kept in $FUZZ_BUILD_DIR/artifacts/. Exits non-zero if configuring,
# building or any test fails.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/install-deps.sh
build=${BUILD_DIR:-build}
asan=${ASAN_BUILD_DIR:-$build-asan}
fuzz=${FUZZ_BUILD_DIR:-$build-fuzz}
mpich_build=${MPICH_BUILD_DIR:-$build-mpich}
stages=${STAGES:-main mpich-only asan fuzz}
fuzz_seconds=${FUZZ_SECONDS:-30}

times=()
stage_started=0
begin() {
    stage_started=$SECONDS
    echo "test.sh: stage $1"
}
end() { times+=("$1 $((SECONDS - stage_started)) s"); }
wants() { [[ " $stages " == *" $1 "* ]]; }

if wants main; then
    begin main
    # The command's interpreter: the system's, whose matplotlib report --plot uses.
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYIMPORT_WERROR=ON \
          -DPython3_EXECUTABLE=/usr/bin/python3
    cmake --build "$build" -j2
    ctest --test-dir "$build" --output-on-failure "$@"
    end main
fi

if wants mpich-only; then
    begin mpich-only
    # The library, and the tests of what depends on which MPI is there: the
    # launcher and library choice, the start-up and exit, MPI jobs through
    # MPICH's launcher (the rest is the same build as the main stage's).
    bash scripts/without-openmpi.sh bash -c '
        set -euo pipefail
        if [ -s "$(readlink -f /usr/lib/x86_64-linux-gnu/libmpi.so.40)" ]; then
            echo "test.sh: Open MPI is still visible" >&2; exit 1
        fi
        cmake -S . -B "$1" -DCMAKE_BUILD_TYPE=Release -DPYIMPORT_WERROR=ON
        cmake --build "$1" -j2 --target pyimport pyimport-symbols pyimport-options probe \
              unit_activation unit_startup unit_mpi_abi unit_config
        ctest --test-dir "$1" --output-on-failure \
              -R "^(unit_(activation|startup|mpi_abi|config)|probe_differential|symbols_.*|e2e_(workload|inert|exit_code|mpi_ctypes|libraries))$"
    ' mpich-only "$mpich_build"
    end mpich-only
fi

if wants asan; then
    begin asan
    cmake -S . -B "$asan" -DCMAKE_BUILD_TYPE=Debug -DPYIMPORT_SANITIZE=ON -DPYIMPORT_WERROR=ON
    # Every test labelled "unit" is a suite whose executable has its name.
    mapfile -t units < <(ctest --test-dir "$asan" -N -L unit 2>/dev/null |
                         sed -n 's/^ *Test *#[0-9]*: *//p')
    if [ ${#units[@]} -eq 0 ]; then
        echo "test.sh: no unit tests registered in $asan" >&2
        exit 1
    fi
    cmake --build "$asan" -j2 --target "${units[@]}"
    # Criterion runs each test in a child process: abort_on_error turns a
    # report there (a leak at the child's exit too) into a crash, which fails
    # the test; the suite then exits non-zero.
    ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=1:print_stacktrace=1:strict_string_checks=1:check_initialization_order=1:detect_stack_use_after_return=1 \
    UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1 \
        ctest --test-dir "$asan" -L unit --output-on-failure --timeout 600
    end asan
fi

if wants fuzz && [ "$fuzz_seconds" -gt 0 ]; then
    begin fuzz
    cmake -S . -B "$fuzz" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYIMPORT_FUZZ=ON -DPYIMPORT_WERROR=ON \
          -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14
    # Every directory of tests/fuzz/corpus/ is the seed corpus of the target it names.
    targets=()
    for dir in tests/fuzz/corpus/*/; do
        targets+=("$(basename "$dir")")
    done
    cmake --build "$fuzz" -j2 --target "${targets[@]}"
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    mkdir -p "$fuzz/artifacts" "$fuzz/logs"
    failed=()
    for target in "${targets[@]}"; do
        cp -r "tests/fuzz/corpus/$target" "$scratch/$target"
        log=$fuzz/logs/$target.log
        echo "test.sh: $target for ${fuzz_seconds} s (log: $log)"
        if ! ASAN_OPTIONS=detect_leaks=1:print_stacktrace=1 \
             UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
             "$fuzz/tests/fuzz/$target" -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 \
                 -timeout=10 -print_final_stats=1 -artifact_prefix="$fuzz/artifacts/$target-" \
                 "$scratch/$target" > "$log" 2>&1; then
            tail -n 60 "$log" >&2
            echo "test.sh: $target failed; the input is in $fuzz/artifacts/" >&2
            failed+=("$target")
        else
            grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" | tr -s ' \n' ' '
            echo
        fi
    done
    end fuzz
    if [ ${#failed[@]} -gt 0 ]; then
        echo "test.sh: fuzz targets failed: ${failed[*]}" >&2
        exit 1
    fi
fi

printf 'test.sh: %s\n' "${times[@]}"
echo "test.sh: passed"
