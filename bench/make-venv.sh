#!/usr/bin/env bash
# bench/make-venv.sh DEST PREFIX [AS_PREFIX AS_DEST]: a virtual environment
# for the benchmark (bench/run --venv), made with PREFIX/bin/python3 -m venv
# (PREFIX from bench/make-prefix.sh: the copy of the interpreter, and of its
# stdlib, that the benchmark runs) without pip, and with its own copies of
# numpy and scipy (their directories, *.libs and metadata, taken from
# PREFIX's site directory) in DEST/lib/pythonX.Y/site-packages.  No system
# site packages: the base's site directory is not on the venv's sys.path.
#
# The benchmark runs it through a mount (slowfs), where PREFIX is seen as
# AS_PREFIX and DEST as AS_DEST: pyvenv.cfg's home, executable and command
# and the bin/python symlink are written with those paths, so the venv's
# python, run by path, finds its base where the job sees it.  Idempotent: an
# existing complete DEST for the same PREFIX and paths is kept.
set -euo pipefail
dest=${1:?usage: make-venv.sh DEST PREFIX [AS_PREFIX AS_DEST]}
prefix=${2:?usage: make-venv.sh DEST PREFIX [AS_PREFIX AS_DEST]}
as_prefix=${3:-$prefix}
as_dest=${4:-$dest}
base="$prefix/bin/python3"
[ -f "$prefix/.complete" ] || { echo "make-venv: $prefix is not a complete prefix" >&2; exit 2; }
stamp="$(cat "$prefix/.complete") $as_prefix $as_dest"
if [ -f "$dest/.complete" ] && [ "$(cat "$dest/.complete")" = "$stamp" ]; then exit 0; fi
rm -rf "$dest"
"$base" -m venv --without-pip "$dest"
version=$("$base" -I -c 'import sys; print("%d.%d" % sys.version_info[:2])')
site="$dest/lib/python$version/site-packages"
[ -d "$site" ] || { echo "make-venv: the venv has no $site" >&2; exit 2; }
from=$("$base" -I -S -c '
import site, sys
dirs = site.getsitepackages([sys.prefix])
print(next((d for d in dirs if d.endswith("/lib/python3/dist-packages")),
           next((d for d in dirs if d.endswith("/site-packages")), dirs[0])))')
for pkg in numpy scipy; do
    [ -d "$from/$pkg" ] || { echo "make-venv: no $pkg in $from" >&2; exit 2; }
    for path in "$from/$pkg" "$from/$pkg".libs "$from/$pkg"-*.egg-info "$from/$pkg"-*.dist-info; do
        [ -e "$path" ] && cp -a "$path" "$site/"
    done
done
# Point the venv at its base as the job sees it: the symlinks that -m venv
# made to the base interpreter, and pyvenv.cfg.
for link in "$dest"/bin/*; do
    if [ -L "$link" ]; then
        target=$(readlink "$link")
        case "$target" in
        "$prefix"/*) ln -sfn "$as_prefix${target#"$prefix"}" "$link" ;;
        esac
    fi
done
cfg="$dest/pyvenv.cfg"
sed -i -e "s|^\(home *= *\)$prefix/|\1$as_prefix/|" \
    -e "s|^\(executable *= *\)$prefix/|\1$as_prefix/|" \
    -e "s|^command *=.*|command = $as_prefix/bin/python3 -m venv --without-pip $as_dest|" "$cfg"
grep -q "^home *= *$as_prefix/bin" "$cfg" || { echo "make-venv: $cfg: home not set" >&2; exit 2; }
"$base" -m compileall -q -j0 "$site" >/dev/null 2>&1 || true
echo "$stamp" >"$dest/.complete"
