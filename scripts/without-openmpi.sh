#!/usr/bin/env bash
# Runs a command as on a machine with MPICH alone, on one where Open MPI is
# installed too (scripts/test.sh's mpich-only stage):
#
#   scripts/without-openmpi.sh COMMAND [ARGS...]
#
# In a private mount namespace (nothing changes outside it): every file of
# the Open MPI and mpi4py packages is covered by an empty one (so libmpi.so.40
# does not load and mpiexec.openmpi does not run), their directories by empty
# tmpfs, and the MPI alternatives point to MPICH. Root only.
set -euo pipefail

if [ "${1:-}" != --inside ]; then
    [ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
    exec unshare --mount --propagation private "$0" --inside "$@"
fi
shift

hidden_dirs=(/usr/lib/x86_64-linux-gnu/openmpi /usr/lib/python3/dist-packages/mpi4py
             /usr/include/x86_64-linux-gnu/openmpi /etc/openmpi)
# Scratch space in this namespace only (nothing left in the host's /tmp).
scratch=/mnt
mount -t tmpfs -o size=32m,mode=700 tmpfs "$scratch"
empty=$scratch/empty
: > "$empty"
packages=$(dpkg-query -W -f='${Package} ${Status}\n' 'libopenmpi*' 'openmpi-*' \
               'python3-mpi4py*' 2>/dev/null | awk '/install ok installed/ {print $1}')
for package in $packages; do
    while IFS= read -r file; do
        [ -f "$file" ] || continue # directories and diversions stay
        real=$(readlink -f "$file")
        under=0
        for dir in "${hidden_dirs[@]}"; do
            case "$real" in "$dir"/*) under=1 ;; esac
        done
        [ $under -eq 1 ] || mount --bind "$empty" "$real"
    done < <(dpkg -L "$package")
done
for dir in "${hidden_dirs[@]}"; do
    [ -d "$dir" ] && mount -t tmpfs -o size=1m,mode=755 tmpfs "$dir"
done

# The alternatives, in private copies, set to MPICH.
for dir in /etc/alternatives /var/lib/dpkg/alternatives; do
    copy=$scratch/$(basename "$dir")-$(basename "$(dirname "$dir")")
    mkdir "$copy"
    cp -a "$dir"/. "$copy"/
    mount --bind "$copy" "$dir"
done
for group in mpi mpirun; do
    choice=$(update-alternatives --list "$group" 2>/dev/null | grep mpich | head -n 1 || true)
    if [ -n "$choice" ]; then update-alternatives --set "$group" "$choice" >/dev/null; fi
done
exec "$@"
