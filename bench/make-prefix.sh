#!/usr/bin/env bash
# bench/make-prefix.sh DEST: a self-contained Python prefix for the benchmark,
# copied from Debian's packages: the python3.11 interpreter, its stdlib, and
# numpy and scipy (with their compiled __pycache__ and .so files).  Python
# finds its stdlib from DEST/bin/python3.11, so nothing outside DEST is
# searched for modules.  Idempotent: an existing complete DEST is kept.
set -euo pipefail
dest=${1:?usage: make-prefix.sh DEST}
version=3.11
if [ -f "$dest/.complete" ]; then exit 0; fi
for need in /usr/bin/python$version /usr/lib/python$version/os.py \
    /usr/lib/python3/dist-packages/numpy /usr/lib/python3/dist-packages/scipy; do
    [ -e "$need" ] || { echo "make-prefix: $need missing (install python3-numpy python3-scipy)" >&2; exit 2; }
done
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib/python3/dist-packages"
cp -a /usr/bin/python$version "$dest/bin/"
ln -s python$version "$dest/bin/python3"
# The stdlib without its test suite (not imported; 30% of the files).
tar -C /usr/lib --exclude="python$version/test" --exclude='python3.11/*/tests' \
    -cf - "python$version" | tar -C "$dest/lib" -xf -
for pkg in numpy scipy; do
    cp -a "/usr/lib/python3/dist-packages/$pkg" "$dest/lib/python3/dist-packages/"
    for extra in /usr/lib/python3/dist-packages/"$pkg"-*.egg-info /usr/lib/python3/dist-packages/"$pkg"-*.dist-info; do
        [ -e "$extra" ] && cp -a "$extra" "$dest/lib/python3/dist-packages/"
    done
done
# Compile what is missing (Debian compiles at install time; a copy keeps it).
"$dest/bin/python$version" -m compileall -q -j0 "$dest/lib" >/dev/null 2>&1 || true
touch "$dest/.complete"
