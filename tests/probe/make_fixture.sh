#!/usr/bin/env bash
# make_fixture.sh DIR
#
# Builds, from scratch, the directory tree the differential probe walks:
# DIR itself (the tree the shim snapshots) and DIR.sibling (a directory whose
# name merely starts with DIR, to catch prefix matching without a "/" boundary,
# and a target for symlinks that leave the snapshot).
#
# Timestamps: the fixture lives on a relatime filesystem, where reading a file
# or listing a directory updates its atime whenever atime <= mtime/ctime (or is
# more than a day old).  Any such update would make two otherwise identical
# probe runs print different atimes.  So every entry gets an old mtime and an
# atime in the future, which relatime never touches.  This is done last,
# because creating entries changes a directory's mtime.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$1
sibling=${dir%/}.sibling
umask 022   # modes must not depend on the caller's umask

# A previous run leaves mode-000 directories behind; make them removable first.
for d in "$dir" "$sibling"; do
  if [[ -e $d ]]; then
    chmod -R u+rwx "$d" 2>/dev/null || true
    rm -rf "$d"
  fi
done
mkdir -p "$dir" "$sibling"
dir=$(cd "$dir" && pwd)
sibling=$(cd "$sibling" && pwd)
cd "$dir"

# --- regular files -----------------------------------------------------------
printf 'line one\nline two\nthe third line, a little longer than the others\n' > file.txt
: > empty
printf 'x' > one
printf '#!/bin/sh\necho hi\n' > script.sh
chmod 755 script.sh
printf 'hidden\n' > .hidden
ln file.txt hardlink.txt            # st_nlink == 2 on both names
printf 'secret\n' > noperm.txt
# Exactly one page, and one page-and-a-bit: boundary cases for read/mmap.
python3 -c 'import sys; sys.stdout.buffer.write(bytes(i % 251 for i in range(4096)))' > page.bin
python3 -c 'import sys; sys.stdout.buffer.write(bytes((i * 7) % 256 for i in range(4097)))' > page_plus_one.bin
# Over 4 MiB, not a multiple of the page size, deterministic pseudo-random
# bytes (seeded; never /dev/urandom, so a failure reproduces byte for byte).
python3 -c '
import random, sys
sys.stdout.buffer.write(random.Random(20240611).randbytes(4 * 1024 * 1024 + 12345))
' > big.bin
printf 'print("naive")\n' > 'naïve file.py'

# --- directories --------------------------------------------------------------
mkdir -p pkg/sub/deep pkg/__pycache__ '日本' 'dir with space' many noperm_dir
printf '' > pkg/__init__.py
printf 'X = 1\n' > pkg/mod.py
printf '' > pkg/sub/__init__.py
printf '' > pkg/sub/deep/__init__.py
printf 'LEAF = "leaf"\n' > pkg/sub/deep/leaf.py
# Something shaped like a CPython 3.11 pyc: magic, flags, mtime, size, payload.
printf '\xa7\x0d\x0d\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x06\x00\x00\x00\xe3\x00\x01\x02\x03' \
  > pkg/__pycache__/mod.cpython-311.pyc
printf 'J = "jp"\n' > '日本/語.py'
printf 'S = " "\n' > 'dir with space/x.py'
printf 'inner\n' > noperm_dir/inner.txt

# ~300 entries of mixed types so readdir needs several getdents buffers.
for i in $(seq -w 0 299); do
  case $((10#$i % 10)) in
    0) mkdir "many/d_$i" ;;
    1) ln -s "$(printf 'f_%03d' $((10#$i + 1)))" "many/l_$i" ;;   # to the next file
    *) printf 'entry %s\n' "$i" > "many/f_$i" ;;
  esac
done

# --- special files (the probe never opens the FIFO: that would block) ---------
mkfifo fifo
# A character device (like /dev/null) gives st_rdev != 0; where mknod is not
# allowed, a regular file stands in (never a FIFO: the probe opens this one).
mknod chardev c 1 3 2>/dev/null || : > chardev

# --- symlinks -------------------------------------------------------------------
ln -s file.txt link_file             # to a file
ln -s pkg link_dir                   # to a directory
ln -s pkg/ link_dir_slash            # to a directory, target has a trailing slash
ln -s link_file link_chain           # symlink to a symlink
ln -s ../mod.py pkg/sub/up_link      # relative with ".."
ln -s "$dir/file.txt" link_abs       # absolute, inside the snapshot
ln -s does_not_exist dangling        # dangling
ln -s loop_b loop_a                  # two-element loop
ln -s loop_a loop_b
ln -s self_loop self_loop            # self loop
ln -s "$sibling/outside.txt" link_out  # leaves the snapshot

# --- outside the snapshot ---------------------------------------------------
printf 'outside\n' > "$sibling/outside.txt"
ln -s "$dir/file.txt" "$sibling/link_in"   # enters the snapshot from outside

# --- permissions (before timestamps: chmod changes ctime, not atime/mtime) ---
chmod 000 noperm.txt noperm_dir
chmod 755 "$dir" "$sibling"

# --- timestamps ----------------------------------------------------------------
# Done after every entry exists: changing a child's times does not touch its
# directory, so from here on nothing changes an mtime again.  -h acts on
# symlinks themselves; mtime first, then atime, both explicit.
find "$dir" "$sibling" -depth -print0 |
  xargs -0 touch -h -m -d '2020-01-01 00:00:00.123456789' --
find "$dir" "$sibling" -depth -print0 |
  xargs -0 touch -h -a -d '2035-01-01 00:00:00.987654321' --
