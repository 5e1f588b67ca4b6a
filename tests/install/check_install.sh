#!/usr/bin/env bash
# The install tree of a build: `cmake --install` into a fresh prefix holds
# the libraries, the command, the header, the pkg-config module and the CMake
# package, and each finds the installed libraries: pkg-config from the prefix,
# find_package(pyimport) from a small CMake project configured against it.
#
#   check_install.sh <build directory>
set -euo pipefail
build=$(realpath "$1")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" > "$work/install.log"
fail() { echo "check_install: $*" >&2; exit 1; }
lib=$(sed -n 's/^CMAKE_INSTALL_LIBDIR:PATH=//p' "$build/CMakeCache.txt")
libexec=$(sed -n 's/^CMAKE_INSTALL_LIBEXECDIR:PATH=//p' "$build/CMakeCache.txt")
mandir=$(sed -n 's/^CMAKE_INSTALL_MANDIR:PATH=//p' "$build/CMakeCache.txt")
mandir=${mandir:-share/man} # empty: GNUInstallDirs' default
for f in "$lib/libpyimport.so" "$lib/libpyimport-audit.so" bin/pyimport-options \
         bin/pyimport "$libexec/pyimport/pyimport-check" "$mandir/man1/pyimport.1" "$mandir/man7/pyimport.7" \
         include/pyimport/pyimport.h "$lib/pkgconfig/pyimport.pc" \
         "$lib/cmake/pyimport/pyimportConfig.cmake" "$lib/cmake/pyimport/pyimportConfigVersion.cmake"; do
    [ -e "$prefix/$f" ] || fail "missing $f in the install tree"
done
# Nothing in the tree points back into the build directory: no text file
# names it, no RUNPATH of the libraries and the command (debug information
# may: it names where the sources were compiled).
if grep -rlIF "$build" "$prefix" >/dev/null; then fail "a file of the install tree names the build directory"; fi
for f in "$lib/libpyimport.so" "$lib/libpyimport-audit.so" bin/pyimport-options; do
    if readelf -d "$prefix/$f" | grep -E 'RUNPATH|RPATH' | grep -qF "$build"; then
        fail "$f keeps a RUNPATH into the build directory"
    fi
done

export PKG_CONFIG_PATH=$prefix/$lib/pkgconfig
[ "$(pkg-config --variable=preload pyimport)" = "$prefix/$lib/libpyimport.so" ] ||
    fail "pkg-config's preload is $(pkg-config --variable=preload pyimport)"
[ "$(pkg-config --variable=audit pyimport)" = "$prefix/$lib/libpyimport-audit.so" ] || fail "pkg-config's audit"
libs=$(pkg-config --libs pyimport)
[ "${libs% }" = "-L$prefix/$lib -lpyimport" ] || fail "pkg-config --libs: $libs"
[ "$(pkg-config --modversion pyimport)" = "$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")" ] ||
    fail "pkg-config --modversion: $(pkg-config --modversion pyimport)"

# A project that finds the package, builds against the header and writes
# what it found.
mkdir "$work/user"
cat > "$work/user/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.25)
project(user C)
find_package(pyimport 0.1 REQUIRED)
get_target_property(location pyimport::pyimport IMPORTED_LOCATION)
get_target_property(includes pyimport::pyimport INTERFACE_INCLUDE_DIRECTORIES)
file(WRITE ${CMAKE_BINARY_DIR}/found.txt "${location}\n${includes}\n${PYIMPORT_AUDIT}\n")
add_executable(user user.c)
target_include_directories(user PRIVATE ${includes})
CMAKE
printf '#include <pyimport/pyimport.h>\n#include <stdio.h>\nint main(void) { puts(PYIMPORT_ENV_PREFIX); return 0; }\n' > "$work/user/user.c"
cmake -S "$work/user" -B "$work/user/build" -DCMAKE_PREFIX_PATH="$prefix" > "$work/user.log" 2>&1 ||
    { cat "$work/user.log"; fail "find_package(pyimport) failed"; }
cmake --build "$work/user/build" > "$work/user-build.log" 2>&1 ||
    { cat "$work/user-build.log"; fail "a build against the installed header failed"; }
[ "$("$work/user/build/user")" = PYIMPORT_PREFIX ] || fail "the header's names"
expected=$(printf '%s\n%s\n%s' "$prefix/$lib/libpyimport.so" "$prefix/include" "$prefix/$lib/libpyimport-audit.so")
[ "$(cat "$work/user/build/found.txt")" = "$expected" ] || fail "find_package found: $(cat "$work/user/build/found.txt")"

# A version it is not.
mkdir "$work/other"
printf 'cmake_minimum_required(VERSION 3.25)\nproject(other NONE)\nfind_package(pyimport 9.0 QUIET)\nif(pyimport_FOUND)\n  message(FATAL_ERROR "9.0 accepted")\nendif()\n' \
    > "$work/other/CMakeLists.txt"
cmake -S "$work/other" -B "$work/other/build" -DCMAKE_PREFIX_PATH="$prefix" > "$work/other.log" 2>&1 ||
    { cat "$work/other.log"; fail "find_package(pyimport 9.0) accepted the installed version"; }
# The installed command finds the installed libraries and its helper, from
# wherever the tree is.
mv "$prefix" "$work/moved"
prefix=$work/moved
[ "$("$prefix/bin/pyimport" --version)" = "pyimport $(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")" ] ||
    fail "pyimport --version"
"$prefix/bin/pyimport" check --python /usr/bin/python3 > "$work/check.log" 2>&1 ||
    { cat "$work/check.log"; fail "the installed pyimport check failed"; }
grep -qxF "library: $prefix/$lib/libpyimport.so" "$work/check.log" || fail "pyimport check's library"
# (Whole output first: grep -q stops reading at its match, and under pipefail
# the writer's SIGPIPE would fail the line.)
"$prefix/bin/pyimport" options > "$work/options.txt" &&
    grep -q '^PYIMPORT_STATS_FILE  (' "$work/options.txt" || fail "pyimport options"
grep -q '^\.TH PYIMPORT 7' "$prefix/$mandir/man7/pyimport.7" &&
    grep -q '^\.B PYIMPORT_NODE_DIR' "$prefix/$mandir/man7/pyimport.7" || fail "pyimport(7)"
grep -q '^\.TH PYIMPORT 1' "$prefix/$mandir/man1/pyimport.1" &&
    grep -q '^\.B report FILE\.json' "$prefix/$mandir/man1/pyimport.1" || fail "pyimport(1)"

echo "check_install: the install tree in $prefix is whole and found by pkg-config and find_package"
