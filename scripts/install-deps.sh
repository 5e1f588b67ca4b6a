#!/usr/bin/env bash
# Installs the Debian 12 packages that building and testing pyimport need
# (skipped when all are installed). Run as root.
set -euo pipefail

packages=(
    build-essential cmake pkg-config
    mpich libmpich-dev
    libunwind-dev libxxhash-dev libcriterion-dev
    python3 python3-dev python3-numpy python3-scipy
    strace util-linux procps
    fuse3 libfuse3-dev bc gnuplot-nox
    clang-14 libclang-rt-14-dev clang-format # the fuzz targets (libFuzzer, -fsanitize=fuzzer)
    # the cluster tests (tests/cluster/, e2e_hydra_nodes, e2e_slurm, e2e_openmpi): a Slurm
    # cluster on this host (libpmix-dev: slurmd's PMIx plugin loads libpmix.so), Open MPI
    # and mpi4py built against it, nsenter/unshare/getent for the emulated nodes.
    # Installing python3-mpi4py makes Open MPI the default mpiexec/mpicc through
    # update-alternatives; nothing here changes them back (the tests call every
    # launcher and compiler by its own name).
    slurm-wlm slurmctld slurmd munge slurm-client libpmix-dev
    openmpi-bin libopenmpi-dev python3-mpi4py
    libc-bin mount
    python3-matplotlib # pyimport report --plot
    locales # unit_stats makes a locale with a decimal comma (localedef)
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done
bash "$(dirname "$0")/install-modules.sh" # Lmod and environment-modules (modules_lmod, modules_tcl)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: run as root (or install: ${missing[*]})" >&2
    exit 1
fi
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
