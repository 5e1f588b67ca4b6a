#!/usr/bin/env bash
# Writes the fuzz targets' seed corpora, tests/fuzz/corpus/<target>/, which are
# committed (rerun after a change of the image format or of what a parser
# accepts, and commit the result). fuzz_image's seeds are real images of a
# small tree, written by make_image_seeds from the fuzz build directory
# (configured here if needed); fuzz_elf's are tiny shared objects built with gcc.
#
#   tests/fuzz/make_seeds.sh [fuzz build directory, default: build-fuzz]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$(realpath -m "${1:-$root/build-fuzz}")
corpus=$root/tests/fuzz/corpus
cd "$root"

if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYIMPORT_FUZZ=ON \
          -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14
fi
cmake --build "$build" -j2 --target make_image_seeds

rm -rf "$corpus"
mkdir -p "$corpus"/{fuzz_image,fuzz_profile,fuzz_config,fuzz_elf,fuzz_ld_cache,fuzz_stats_json}

# fuzz_image: real images.
ASAN_OPTIONS=detect_leaks=1 "$build/tests/fuzz/make_image_seeds" "$corpus/fuzz_image"

# fuzz_profile: a valid profile, and the ways one is refused.
p=$corpus/fuzz_profile
printf 'pyimport-profile 1\n/a\n/b/c\n' > "$p/valid"
printf 'pyimport-profile 1\n/usr/lib/python3/dist-packages/numpy/__init__.py\n/usr/lib/python3.11/./os.py\n/a//b/../c\n' > "$p/paths"
printf 'pyimport-profile 1\n' > "$p/empty"
printf 'pyimport-profile 1\n/a\nrelative/path\n' > "$p/relative-line"
printf 'pyimport-profile 1\n/a\n\n/b\n' > "$p/empty-line"
printf 'pyimport-profile 1\n/a\n/b' > "$p/cut-short"
printf 'pyimport-profile 2\n/a\n' > "$p/other-version"
printf 'pyimport-profile 1\n/a\0b\n' > "$p/nul-in-path"

# fuzz_config: values of the PYIMPORT_OPTIONS variables in table order
# (DISABLE PREFIX MAX_BYTES CONTENT STAT EXCLUDE PROFILE LIBRARIES NODE_DIR LOG
# STATS TIMEOUT RECHECK ANY_PROGRAM MPI_LIBRARY), separated by '\0'.
c=$corpus/fuzz_config
printf '0\0\0001G\0.py,.pyc,.pth\0.so\0tests,test\0auto\0001\0/dev/shm\0000\0000\000300\0001\0000\0libmpich.so.12' > "$c/defaults"
printf 'yes\0/usr/lib/python3:/opt/env::/x\000512MiB\0.py,,.pyc\0*\0\0off\0on\0/tmp\0003\0true\00086400\0no\0off\0libmpi.so.40' > "$c/other-values"
printf 'maybe\0relative:/abs\00012Q\0a/b\0.so\0tests\0\0002\0tmp\0004\0\0000\0001\0001\0' > "$c/bad-values"
printf '1\0/a\00018446744073709551615\0.py' > "$c/size-limit"
printf '0\0/a\00017179869184G' > "$c/size-overflow"

# fuzz_elf: small shared objects (DT_NEEDED, DT_SONAME, DT_RUNPATH or
# DT_RPATH, DT_FILTER/DT_AUXILIARY), one cut in its dynamic section, one cut
# in its headers.
e=$corpus/fuzz_elf
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo 'int pyimport_seed(int x) { return x + 1; }' > "$work/seed.c"
small=(-shared -fPIC -O2 -nostdlib -s -Wl,-z,norelro -Wl,-z,noseparate-code)
gcc "${small[@]}" -Wl,--no-as-needed -lc -lm -Wl,-soname,libseed.so.1 \
    -Wl,-rpath,'$ORIGIN/../lib:/opt/x' "$work/seed.c" -o "$e/runpath.so"
gcc "${small[@]}" -Wl,--disable-new-dtags -Wl,-rpath,'$ORIGIN:$LIB/x:$PLATFORM' \
    -Wl,-F,libfilter.so.2 -Wl,-f,libaux.so "$work/seed.c" -o "$e/rpath-filter.so"
gcc "${small[@]}" "$work/seed.c" -o "$e/bare.so"
dynamic=$(( $(readelf -lW "$e/runpath.so" | awk '$1 == "DYNAMIC" { print $2 }') ))
head -c $((dynamic + 24)) "$e/runpath.so" > "$e/cut-in-dynamic.so"
head -c 100 "$e/runpath.so" > "$e/cut-in-headers.so"
chmod 644 "$e"/*

# fuzz_ld_cache: a small cache that ldconfig writes for two directories, and
# one cut in its entries.
l=$corpus/fuzz_ld_cache
mkdir -p "$work/lib"
gcc "${small[@]}" -Wl,-soname,libseed.so.1 "$work/seed.c" -o "$work/lib/libseed.so.1"
gcc "${small[@]}" -Wl,-soname,libother.so.2 "$work/seed.c" -o "$work/lib/libother.so.2"
printf '%s\n' "$work/lib" > "$work/ld.so.conf"
ldconfig -f "$work/ld.so.conf" -C "$l/small" -X
head -c 60 "$l/small" > "$l/cut-in-entries"
chmod 644 "$l"/*

# fuzz_stats_json: a path, one with every kind of byte json_string escapes,
# and UTF-8 cut short.
j=$corpus/fuzz_stats_json
printf '/usr/lib/python3.11/json/__init__.py' > "$j/path"
printf '/tmp/\xe6\x97\xa5\xff\xc0\xaf\xed\xa0\x80"\\\n\t\x01' > "$j/mixed"
printf '\xf0\x9f\x98\x80\xf4\x90\x80\x80\xe6\x97' > "$j/utf8"

ls -l "$corpus"/*
