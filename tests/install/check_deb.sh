#!/usr/bin/env bash
# The Debian package of a build (packaging/deb/cpack.cmake): `cpack -G DEB`
# in the build directory, then its control fields, its files (what the
# build installs, under /usr, and nothing else: no tests, nothing naming the
# build or staging directories), `dpkg --dry-run -i`, and the extracted
# package at work: a 2-rank MPICH job with its libpyimport.so preloaded
# (and its libpyimport-audit.so audited) builds and broadcasts the snapshot
# and prints what it prints without it. Nothing is installed on the system.
#
#   check_deb.sh <build directory> <python> <mpiexec of MPICH>
set -euo pipefail
build=$(realpath "$1")
python=$2
mpiexec=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "check_deb: $*" >&2; exit 1; }
cache() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"; }
on() { case "$(cache "$1")" in ON|TRUE|YES|1) return 0 ;; *) return 1 ;; esac; }

cpack --config "$build/CPackConfig.cmake" -G DEB -B "$work/out" > "$work/cpack.log" 2>&1 ||
    { cat "$work/cpack.log"; fail "cpack -G DEB failed"; }
version=$(cache CMAKE_PROJECT_VERSION)
arch=$(dpkg --print-architecture)
deb=$work/out/pyimport_${version}_${arch}.deb
[ -f "$deb" ] || { ls -l "$work/out"; fail "no pyimport_${version}_${arch}.deb"; }
[ "$(find "$work/out" -maxdepth 1 -name '*.deb' | wc -l)" = 1 ] || fail "more than one package: $(ls "$work/out")"

# The control fields.
field() { dpkg-deb --field "$deb" "$1"; }
[ "$(field Package)" = pyimport ] || fail "Package: $(field Package)"
[ "$(field Version)" = "$version" ] || fail "Version: $(field Version), the project's is $version"
[ "$(field Architecture)" = "$arch" ] || fail "Architecture: $(field Architecture)"
depends=$(field Depends)
# The packages named (alternatives split), without their versions.
names() { tr ',|' '\n\n' | sed 's/^ *//; s/[ (].*//'; }
for package in libc6 libstdc++6 libunwind8 libxxhash0 python3; do
    names <<< "$depends" | grep -qxF "$package" || fail "Depends lacks $package: $depends"
done
grep -Eq '(^|, )mpich \| openmpi-bin($|,)' <<< "$(field Recommends)" || fail "Recommends: $(field Recommends)"
for f in Maintainer Section Priority Description; do
    [ -n "$(field $f)" ] || fail "no $f field"
done

# The files: exactly what the build installs, under /usr.
lib=usr/$(cache CMAKE_INSTALL_LIBDIR)
libexec=usr/$(cache CMAKE_INSTALL_LIBEXECDIR)
dpkg-deb --fsys-tarfile "$deb" | tar -tv > "$work/listing"
awk '{print $2}' "$work/listing" | sort -u | grep -v '^root/root$' | sed 's/^/owner /' > "$work/owners" || true
[ ! -s "$work/owners" ] || fail "files not owned by root/root: $(cat "$work/owners")"
dpkg-deb --contents "$deb" | awk '{print $NF}' | sed 's|^\./||' | grep -v '/$' | sort > "$work/files"
required=("$lib/libpyimport.so" usr/bin/pyimport-options usr/include/pyimport/pyimport.h
          "$lib/pkgconfig/pyimport.pc" "$lib/cmake/pyimport/pyimportConfig.cmake"
          "$lib/cmake/pyimport/pyimportConfigVersion.cmake")
allowed="^($lib/libpyimport\\.so|$lib/libpyimport-audit\\.so|usr/bin/pyimport-options|usr/bin/pyimport"
allowed+="|usr/include/pyimport/pyimport\\.h|$lib/pkgconfig/pyimport\\.pc|$lib/cmake/pyimport/pyimport[A-Za-z]*\\.cmake"
allowed+="|$libexec/pyimport/pyimport-check"
allowed+="|usr/share/man/man[1-8]/pyimport[^/]*|usr/share/modulefiles/pyimport/[^/]+|usr/share/doc/pyimport/[^/]+)$"
if [ -e "$build/shim/libpyimport-audit.so" ]; then required+=("$lib/libpyimport-audit.so"); fi
if on PYIMPORT_MODULEFILES; then
    required+=("usr/share/modulefiles/pyimport/$version" "usr/share/modulefiles/pyimport/$version.lua")
fi
if on PYIMPORT_COMMAND; then
    required+=(usr/bin/pyimport "$libexec/pyimport/pyimport-check" usr/share/man/man1/pyimport.1
               usr/share/man/man7/pyimport.7)
fi
for f in "${required[@]}"; do
    grep -qxF "$f" "$work/files" || fail "the package lacks /$f; it holds: $(tr '\n' ' ' < "$work/files")"
done
unexpected=$(grep -Ev "$allowed" "$work/files" || true)
[ -z "$unexpected" ] || fail "the package holds files it should not (tests? another directory?): $unexpected"

# Nothing in it names the build directory or CPack's staging directory:
# no file (stripped binaries included), no RUNPATH.
root=$work/root
dpkg-deb -x "$deb" "$root"
if grep -rlF -e "$build" -e "$work" -e _CPack_Packages "$root" > "$work/naming"; then
    fail "files naming the build or staging directory: $(cat "$work/naming")"
fi
while read -r f; do
    if file -b "$root/$f" | grep -q '^ELF'; then
        if readelf -d "$root/$f" | grep -Eq 'RUNPATH|RPATH'; then fail "/$f has a RUNPATH"; fi
        if file -b "$root/$f" | grep -q 'not stripped'; then fail "/$f is not stripped"; fi
    fi
done < "$work/files"
pc=$root/$lib/pkgconfig/pyimport.pc
grep -qx 'prefix=/usr' "$pc" || fail "pyimport.pc: $(grep '^prefix=' "$pc")"
grep -qx "libdir=\${prefix}/${lib#usr/}" "$pc" || fail "pyimport.pc: $(grep '^libdir=' "$pc")"

# The command runs with the python3 the package depends on, and finds the
# rest of the package from where it is.
if on PYIMPORT_COMMAND; then
    shebang=$(head -1 "$root/usr/bin/pyimport")
    [ "$shebang" = '#!/usr/bin/python3' ] || fail "/usr/bin/pyimport starts with $shebang, not #!/usr/bin/python3"
    [ "$("$python" "$root/usr/bin/pyimport" --version)" = "pyimport $version" ] ||
        fail "pyimport --version: $("$python" "$root/usr/bin/pyimport" --version 2>&1)"
fi

# dpkg would install it (its dependencies are met); simulated only.
dpkg --dry-run -i "$deb" > "$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg --dry-run -i failed"; }

# The extracted package at work: MPICH, 2 ranks, profile off (rank 0 walks
# the interpreter's trees), with the preload alone and with the audit
# library too. Rank 0 builds and broadcasts the snapshot; both print ok
# (in one write: print's two, unbuffered, may interleave across ranks).
run() {
    local name=$1
    shift
    "$mpiexec" -n 2 env "$@" PYIMPORT_SERVE_LOCAL=1 PYIMPORT_LOG=1 PYIMPORT_PROFILE=off \
        "$python" -c "import json, email, os; os.write(1, b'ok\n')" > "$work/$name.out" 2> "$work/$name.err" ||
        { cat "$work/$name.err"; fail "$name: the job failed"; }
    [ "$(cat "$work/$name.out")" = "$(printf 'ok\nok')" ] || fail "$name: the job printed $(cat "$work/$name.out")"
    rank0() { grep -Eq "^pyimport\[[0-9]+ r0 [^]]*\]: $1" "$work/$name.err"; }
    rank0 'built the snapshot' || { cat "$work/$name.err"; fail "$name: rank 0 built no snapshot"; }
    rank0 'broadcast ' || { cat "$work/$name.err"; fail "$name: rank 0 did not broadcast the snapshot"; }
}
run preload LD_PRELOAD="$root/$lib/libpyimport.so"
if [ -e "$root/$lib/libpyimport-audit.so" ]; then
    run audit LD_AUDIT="$root/$lib/libpyimport-audit.so" LD_PRELOAD="$root/$lib/libpyimport.so"
    grep -q "the loader's audit library" "$work/audit.err" || { cat "$work/audit.err"; fail "audit: the audit library did nothing"; }
fi
echo "check_deb: $(basename "$deb") ($(wc -l < "$work/files") files, Depends: $depends) installs, and its library serves a 2-rank MPICH job"
