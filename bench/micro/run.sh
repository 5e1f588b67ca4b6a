#!/usr/bin/env bash
# bench/micro/run.sh [LIBRARY]: cost per call of stat (present, absent),
# open+read+close and a directory listing, plain and under the shim (mpiexec
# -n 1, same run), for a directory the shim serves ("served") and one it
# forwards ("forwarded", outside the prefixes); and Python's own import time at
# 1 rank with and without the shim (median of 5, after one job that writes the
# program's profile). Prints ratios shim/plain.
# Local disk, warm page cache: this measures the shim's overhead, not its gain
# (the gain is on a slow metadata server: bench/run).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
lib=${1:-$root/build/shim/libpyimport.so}
python=${PYTHON:-/usr/bin/python3}
mpiexec=$(command -v mpiexec.mpich || echo mpiexec) # the default may be Open MPI's
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -o "$work/micro" "$root/bench/micro/micro.c"
dir=/usr/lib/python3.11/json
file=__pycache__/decoder.cpython-311.pyc
mkdir -p "$work/outside/__pycache__"
cp -a "$dir/." "$work/outside/"
n=${ITERATIONS:-20000}
points=("$n" served "$dir" "$file" forwarded "$work/outside" "$file")
export PYIMPORT_PROFILE=$work/profiles

plain=$("$work/micro" "${points[@]}")
shim=$(LD_PRELOAD=$lib PYIMPORT_ANY_PROGRAM=1 PYIMPORT_PREFIX=$dir "$mpiexec" -n 1 "$work/micro" "${points[@]}")
echo "machine: $(nproc) cores, $(uname -r); served: $dir, forwarded: a copy outside the prefixes; $n iterations"
printf '%-28s %12s %12s %8s\n' call plain_ns shim_ns ratio
paste <(echo "$plain") <(echo "$shim") | while read -r name a _ b; do
    printf '%-28s %12s %12s %8.2f\n' "${name%_ns}" "$a" "$b" "$(echo "$b / $a" | bc -l)"
done

# Python's import time, median of 5, in-process, 1 rank.
snippet='import time; t=time.perf_counter(); import numpy, scipy.linalg, scipy.sparse, scipy.optimize; print(time.perf_counter()-t)'
median() { sort -n | sed -n 3p; }
LD_PRELOAD=$lib "$mpiexec" -n 1 "$python" -c "$snippet" >/dev/null # writes the profile
p=$(for i in 1 2 3 4 5; do "$mpiexec" -n 1 "$python" -c "$snippet"; done | median)
s=$(for i in 1 2 3 4 5; do LD_PRELOAD=$lib "$mpiexec" -n 1 "$python" -c "$snippet"; done | median)
printf '%-28s %12.4f %12.4f %8.2f\n' 'python import (s)' "$p" "$s" "$(echo "$s / $p" | bc -l)"
