#!/usr/bin/env bash
# bench/make-prefix.sh DEST [PYTHON]: a self-contained Python prefix for the
# benchmark, copied from an installed interpreter (PYTHON, default Debian's
# /usr/bin/python3.11): the interpreter, its stdlib (without its test suite),
# and the numpy and scipy that PYTHON imports (with their compiled
# __pycache__, .so files, *.libs directories and package metadata).  Python
# finds its stdlib from DEST/bin/python3, so nothing outside DEST is searched
# for modules.  Idempotent: an existing complete DEST made from the same
# PYTHON is kept.
set -euo pipefail
dest=${1:?usage: make-prefix.sh DEST [PYTHON]}
python=${2:-/usr/bin/python3.11}
[ -x "$python" ] || { echo "make-prefix: $python is not an executable" >&2; exit 2; }
real=$(readlink -f "$python")
if [ -f "$dest/.complete" ] && [ "$(cat "$dest/.complete")" = "$real" ]; then exit 0; fi
# What the interpreter says about itself: version, stdlib, where numpy and
# scipy are (their directories and their .libs and metadata beside them).
info=$("$python" -I -c '
import glob, os, sys, sysconfig
print("%d.%d" % sys.version_info[:2])
print(sysconfig.get_path("stdlib"))
for name in ("numpy", "scipy"):
    try:
        module = __import__(name)
    except ImportError:
        sys.exit("make-prefix: %s cannot import %s (Debian: apt-get install python3-%s)"
                 % (sys.executable, name, name))
    package = os.path.dirname(module.__file__)
    site = os.path.dirname(package)
    print(package)
    for extra in sorted(glob.glob(os.path.join(site, name + ".libs")) +
                        glob.glob(os.path.join(site, name + "-*.egg-info")) +
                        glob.glob(os.path.join(site, name + "-*.dist-info"))):
        print(extra)
') || exit 2
version=$(sed -n 1p <<<"$info")
stdlib=$(sed -n 2p <<<"$info")
[ -f "$stdlib/os.py" ] || { echo "make-prefix: no stdlib at $stdlib" >&2; exit 2; }
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib"
cp -a "$real" "$dest/bin/python$version"
ln -s "python$version" "$dest/bin/python3"
# The stdlib without its test suite (not imported; 30% of the files).
tar -C "$(dirname "$stdlib")" --exclude="$(basename "$stdlib")/test" \
    --exclude="$(basename "$stdlib")/*/tests" -cf - "$(basename "$stdlib")" |
    tar -C "$dest/lib" -xf -
# The copy's own site directory: Debian's lib/python3/dist-packages, else
# lib/pythonX.Y/site-packages.
site=$("$dest/bin/python3" -I -S -c '
import site, sys
dirs = site.getsitepackages([sys.prefix])
print(next((d for d in dirs if d.endswith("/lib/python3/dist-packages")),
           next((d for d in dirs if d.endswith("/site-packages")), dirs[0])))')
mkdir -p "$site"
tail -n +3 <<<"$info" | while IFS= read -r path; do
    cp -a "$path" "$site/"
done
# Compile what is missing (Debian compiles at install time; a copy keeps it).
"$dest/bin/python3" -m compileall -q -j0 "$dest/lib" >/dev/null 2>&1 || true
echo "$real" >"$dest/.complete"
