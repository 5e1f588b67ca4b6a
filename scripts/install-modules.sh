#!/usr/bin/env bash
# Installs the two module systems the module-file tests (modules_lmod,
# modules_tcl) run: Debian's Lmod by apt, and Debian's environment-modules,
# which conflicts with lmod as a package, unpacked (not installed) into a
# private directory with its runtime dependency tcl by apt. Idempotent: does
# nothing when both are there. Run as root.
#
#   install-modules.sh            (called by install-deps.sh)
#
# Where the tests find them:
#   Lmod:                /usr/share/lmod/lmod/libexec/lmod
#   environment-modules: $PYIMPORT_ENVMODULES_DIR (default below)/usr/lib/x86_64-linux-gnu/modulecmd.tcl
set -euo pipefail

envmodules_dir=${PYIMPORT_ENVMODULES_DIR:-/opt/pyimport-test/environment-modules}
cache_dir=${PYIMPORT_ENVMODULES_CACHE:-/var/cache/pyimport-test}

installed() { dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

missing=()
for p in lmod tcl; do installed "$p" || missing+=("$p"); done
# The unpacked package counts as there when its modulecmd.tcl is.
have_envmodules() { [ -n "$(find "$envmodules_dir" -name modulecmd.tcl -print -quit 2>/dev/null)" ]; }
if [ ${#missing[@]} -eq 0 ] && have_envmodules; then exit 0; fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-modules: run as root (needs: ${missing[*]:-} environment-modules unpacked in $envmodules_dir)" >&2
    exit 1
fi
updated=0
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-modules: installing ${missing[*]}"
    apt-get update
    updated=1
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

if ! have_envmodules; then
    mkdir -p "$cache_dir"
    # apt-get download fetches as _apt (else it warns and fetches as root).
    if id -u _apt >/dev/null 2>&1; then chown _apt "$cache_dir"; fi
    deb=$(find "$cache_dir" -maxdepth 1 -name 'environment-modules_*.deb' -print -quit)
    if [ -z "$deb" ]; then
        if ! (cd "$cache_dir" && apt-get download environment-modules); then
            [ "$updated" -eq 1 ] || apt-get update
            (cd "$cache_dir" && apt-get download environment-modules)
        fi
        deb=$(find "$cache_dir" -maxdepth 1 -name 'environment-modules_*.deb' -print -quit)
    fi
    echo "install-modules: unpacking $deb into $envmodules_dir"
    rm -rf "$envmodules_dir.tmp"
    mkdir -p "$envmodules_dir.tmp"
    dpkg -x "$deb" "$envmodules_dir.tmp"
    rm -rf "$envmodules_dir"
    mv "$envmodules_dir.tmp" "$envmodules_dir"
    have_envmodules || { echo "install-modules: no modulecmd.tcl in $deb" >&2; exit 1; }
fi
