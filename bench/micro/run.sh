#!/usr/bin/env bash
# bench/micro/run.sh [LIBRARY]: cost per call of stat (hit, miss), open+read+close
# and a directory listing, plain and under the shim (mpiexec -n 1, same run), and
# Python's own import time at 1 rank with and without the shim. Prints ratios.
# Local disk, warm page cache: this measures the shim's overhead, not its gain
# (the gain is on a slow metadata server: bench/run).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
lib=${1:-$root/build/shim/libpyimport.so}
python=${PYTHON:-/usr/bin/python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -o "$work/micro" "$root/bench/micro/micro.c"
dir=/usr/lib/python3.11/json
file=__pycache__/decoder.cpython-311.pyc
n=${ITERATIONS:-20000}

plain=$("$work/micro" "$dir" "$file" "$n")
shim=$(LD_PRELOAD=$lib PYIMPORT_ANY_PROGRAM=1 PYIMPORT_PREFIX=$dir mpiexec -n 1 "$work/micro" "$dir" "$file" "$n")
echo "machine: $(nproc) cores, $(uname -r); $dir, $n iterations"
printf '%-20s %12s %12s %8s\n' call plain_ns shim_ns ratio
paste <(echo "$plain") <(echo "$shim") | while read -r name a _ b; do
    printf '%-20s %12s %12s %8.2f\n' "${name%_ns}" "$a" "$b" "$(echo "$b / $a" | bc -l)"
done

# Python's import time, median of 5, in-process, 1 rank.
snippet='import time; t=time.perf_counter(); import numpy, scipy.linalg, scipy.sparse, scipy.optimize; print(time.perf_counter()-t)'
median() { sort -n | sed -n 3p; }
p=$(for i in 1 2 3 4 5; do mpiexec -n 1 "$python" -c "$snippet"; done | median)
s=$(for i in 1 2 3 4 5; do LD_PRELOAD=$lib mpiexec -n 1 "$python" -c "$snippet"; done | median)
printf 'python import (s)     %12.4f %12.4f %8.2f\n' "$p" "$s" "$(echo "$s / $p" | bc -l)"
