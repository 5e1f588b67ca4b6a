#!/usr/bin/env python3
"""CTest slowfs_mirror: slowfs mirrors a fixture tree exactly, counts requests,
refuses writes and bad arguments, and unmounts cleanly.

usage: test_slowfs.py SLOWFS_BINARY [WORKDIR]

Stdlib only.  Prints every check; exits non-zero on the first failure.
FUSE being unavailable is a failure, not a skip.
"""
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

SLOWFS = None
FUSERMOUNT = None
COUNTER_LINE = re.compile(
    r"^slowfs: getattr=\d+ open=\d+ opendir=\d+ readdir=\d+ readlink=\d+ "
    r"access=\d+ read=\d+ statfs=\d+ other=\d+ read_bytes=\d+$", re.M)


def fail(msg):
    print("FAIL: " + msg, flush=True)
    raise SystemExit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print("ok: " + msg, flush=True)


def unescape_mount_field(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/mounts", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and unescape_mount_field(fields[1]) == path:
                return fields[2].startswith("fuse")
    return False


def wait_mounted(path, proc=None, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_mounted(path):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def unmount(path):
    if is_mounted(path):
        subprocess.run([FUSERMOUNT, "-u", path], check=False)
    if is_mounted(path):
        subprocess.run([FUSERMOUNT, "-u", "-z", path], check=False)


# ------------------------------------------------------------------ fixture

def build_fixture(src):
    os.makedirs(src)
    def write(rel, data, mode=None):
        p = os.path.join(src, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        if mode is not None:
            os.chmod(p, mode)
        return p
    write("empty", b"")
    write("small.txt", b"hello slowfs\n")
    write("big.bin", os.urandom(5 * 1024 * 1024))
    write("name with spaces.txt", b"spaces\n")
    write("ünïcødé-файл-名前.txt", "utf-8 ✓\n".encode())
    write("exec.sh", b"#!/bin/sh\necho hi\n", 0o755)
    write("private", b"secret\n", 0o600)
    write("a/b/c/deep.txt", b"deep\n" * 1000)
    write("a/sibling.py", b"x = 1\n")
    write("stat-probe.txt", b"probe\n")
    write("open-probe.txt", b"open\n")
    os.makedirs(os.path.join(src, "emptydir"))
    os.makedirs(os.path.join(src, "dir with space/ünï"))
    write("dir with space/ünï/f", b"f\n")
    os.link(os.path.join(src, "small.txt"), os.path.join(src, "hardlink.txt"))
    os.symlink("small.txt", os.path.join(src, "link-rel"))
    os.symlink("a/b", os.path.join(src, "link-dir"))
    os.symlink("does/not/exist", os.path.join(src, "link-dangling"))
    os.symlink(os.path.join(src, "a/sibling.py"), os.path.join(src, "link-abs"))
    os.symlink("../../small.txt", os.path.join(src, "a/b/link-up"))
    os.symlink("ünïcødé-файл-名前.txt", os.path.join(src, "link ünï"))
    # Nanosecond mtimes, which must come through exactly.
    os.utime(os.path.join(src, "small.txt"), ns=(1_600_000_000_123_456_789, 1_700_000_000_987_654_321))
    os.utime(os.path.join(src, "a/b"), ns=(1_600_000_000_000_000_001, 1_650_000_000_000_000_007))
    os.utime(os.path.join(src, "link-dangling"), ns=(1_600_000_000_000_000_003, 1_610_000_000_000_000_009),
             follow_symlinks=False)


def all_paths(root):
    out = [""]
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        rel = "" if rel == "." else rel
        for n in dirnames + filenames:
            out.append(os.path.join(rel, n))
    return sorted(out)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def scandir_set(path):
    return {(e.name, e.inode(), e.is_dir(follow_symlinks=False), e.is_symlink(),
             e.is_file(follow_symlinks=False)) for e in os.scandir(path)}


# ----------------------------------------------------------------- counters

class Counters:
    def __init__(self, proc, path):
        self.proc, self.path, self.seq = proc, path, 0

    def read_file(self):
        try:
            with open(self.path) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return None

    def snapshot(self):
        """SIGUSR1, then wait for a dump newer than the last one seen."""
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            d = self.read_file()
            if d is not None and d["seq"] > self.seq:
                self.seq = d["seq"]
                return d
            time.sleep(0.02)
        fail("no counters dump after SIGUSR1")


def delta(a, b):
    return {k: b[k] - a[k] for k in a if k != "seq"}


# -------------------------------------------------------------------- tests

def test_bad_args(work, src):
    afile = os.path.join(work, "not-a-dir")
    open(afile, "w").close()
    mnt = os.path.join(work, "badmnt")
    os.makedirs(mnt)
    cases = [
        ("nonexistent source", [os.path.join(work, "nope"), mnt]),
        ("source not a directory", [afile, mnt]),
        ("mountpoint not a directory", [src, afile]),
        ("nonexistent mountpoint", [src, os.path.join(work, "nomnt")]),
        ("--meta-us=abc", ["--meta-us=abc", src, mnt]),
        ("--meta-us=-1", ["--meta-us=-1", src, mnt]),
        ("--meta-us=", ["--meta-us=", src, mnt]),
        ("--read-us=1.5", ["--read-us=1.5", src, mnt]),
        ("unknown option", ["--frobnicate", src, mnt]),
        ("missing mountpoint", [src]),
        ("no arguments", []),
        ("extra argument", [src, mnt, mnt]),
    ]
    for name, args in cases:
        r = subprocess.run([SLOWFS] + args, capture_output=True, text=True, timeout=30)
        lines = r.stderr.strip().splitlines()
        check(r.returncode == 2 and len(lines) == 1 and lines[0].startswith("slowfs: error:")
              and not is_mounted(mnt),
              f"bad arguments ({name}) -> exit 2, one line: {r.returncode} {r.stderr.strip()!r}")
    r = subprocess.run([SLOWFS, "--help"], capture_output=True, text=True, timeout=30)
    check(r.returncode == 0 and "usage: slowfs" in r.stdout and "--meta-us" in r.stdout,
          "--help prints usage, exit 0")


def compare_tree(src, mnt):
    paths = all_paths(src)
    check(len(paths) > 20, f"fixture has {len(paths)} paths")
    for rel in paths:
        s = os.path.join(src, rel) if rel else src
        m = os.path.join(mnt, rel) if rel else mnt
        a, b = os.lstat(s), os.lstat(m)
        for f in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size",
                  "st_mtime_ns", "st_ctime_ns", "st_ino"):
            if getattr(a, f) != getattr(b, f):
                fail(f"{rel!r}: {f} source={getattr(a, f)} mount={getattr(b, f)}")
        if stat.S_ISLNK(a.st_mode):
            if os.readlink(s) != os.readlink(m):
                fail(f"{rel!r}: readlink differs")
            if os.path.exists(s) != os.path.exists(m):
                fail(f"{rel!r}: symlink target existence differs")
        elif stat.S_ISDIR(a.st_mode):
            if scandir_set(s) != scandir_set(m):
                fail(f"{rel!r}: listing differs: {scandir_set(s) ^ scandir_set(m)}")
        elif stat.S_ISREG(a.st_mode):
            if sha256(s) != sha256(m):
                fail(f"{rel!r}: content differs")
    check(True, f"all {len(paths)} paths: lstat fields, readlink, listings (d_ino/d_type), sha256 identical")
    # Following symlinks through the mount.
    check(os.stat(os.path.join(mnt, "link-dir")).st_ino == os.stat(os.path.join(src, "a/b")).st_ino,
          "stat through a directory symlink")
    try:
        os.stat(os.path.join(mnt, "link-dangling"))
        fail("stat of dangling symlink succeeded")
    except FileNotFoundError:
        check(True, "stat of dangling symlink -> ENOENT")
    try:
        os.lstat(os.path.join(mnt, "no-such-file"))
        fail("lstat of missing path succeeded")
    except FileNotFoundError:
        check(True, "lstat of missing path -> ENOENT")
    # mmap works (no direct_io).
    import mmap
    with open(os.path.join(mnt, "big.bin"), "rb") as f, \
            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        h = hashlib.sha256(mm).hexdigest()
    check(h == sha256(os.path.join(src, "big.bin")), "mmap of a 5 MiB file gives the same bytes")


def test_counters(ctr, src, mnt):
    probe = os.path.join(mnt, "stat-probe.txt")
    k = 5
    c0 = ctr.snapshot()
    for _ in range(k):
        os.stat(probe)
    c1 = ctr.snapshot()
    for _ in range(2 * k):
        os.stat(probe)
    c2 = ctr.snapshot()
    d1, d2 = delta(c0, c1), delta(c1, c2)
    print(f"info: {k} stats -> {d1}; {2 * k} stats -> {d2}")
    check(d1["getattr"] >= k and d1["getattr"] % k == 0 and d2["getattr"] == 2 * d1["getattr"],
          f"getattr scales exactly with stats (no caching): {d1['getattr']} per {k}, "
          f"{d2['getattr']} per {2 * k}")
    check(all(d1[x] == 0 for x in ("open", "read", "readdir", "opendir")),
          "stats cause no open/read/readdir")

    n = 7
    path = os.path.join(mnt, "open-probe.txt")
    c0 = ctr.snapshot()
    for _ in range(n):
        os.close(os.open(path, os.O_RDONLY))
    c1 = ctr.snapshot()
    d = delta(c0, c1)
    print(f"info: {n} opens -> {d}")
    check(d["open"] == n, f"{n} opens -> open += {n} (got {d['open']})")
    check(d["read"] == 0, "open/close without read -> no read requests")

    m = 4
    c0 = ctr.snapshot()
    for _ in range(m):
        os.readlink(os.path.join(mnt, "link-rel"))
    c1 = ctr.snapshot()
    d = delta(c0, c1)
    check(d["readlink"] == m, f"{m} readlinks -> readlink += {m} (got {d['readlink']})")

    c0 = ctr.snapshot()
    os.listdir(os.path.join(mnt, "a"))
    c1 = ctr.snapshot()
    d = delta(c0, c1)
    check(d["opendir"] == 1 and d["readdir"] >= 1,
          f"one listdir -> opendir += 1, readdir >= 1 (got {d['opendir']}, {d['readdir']})")

    size = os.path.getsize(os.path.join(src, "big.bin"))
    c0 = ctr.snapshot()
    with open(os.path.join(mnt, "big.bin"), "rb") as f:
        while f.read(1 << 20):
            pass
    c1 = ctr.snapshot()
    d = delta(c0, c1)
    check(d["read"] >= 1 and d["read_bytes"] >= size,
          f"reading a {size}-byte file -> read_bytes += {d['read_bytes']} (>= size), reads += {d['read']}")

    c0 = ctr.snapshot()
    os.statvfs(mnt)
    c1 = ctr.snapshot()
    check(delta(c0, c1)["statfs"] == 1, "statvfs -> statfs += 1")


def test_readonly(src, mnt):
    def expect_erofs(what, fn):
        try:
            fn()
        except OSError as e:
            check(e.errno == errno.EROFS, f"{what} -> EROFS (got {errno.errorcode.get(e.errno)})")
            return
        fail(f"{what} succeeded on the read-only mount")
    before = sha256(os.path.join(src, "small.txt"))
    expect_erofs("open existing file for writing",
                 lambda: os.close(os.open(os.path.join(mnt, "small.txt"), os.O_WRONLY)))
    expect_erofs("open O_RDWR", lambda: os.close(os.open(os.path.join(mnt, "small.txt"), os.O_RDWR)))
    expect_erofs("create a file", lambda: open(os.path.join(mnt, "newfile"), "w").close())
    expect_erofs("mkdir", lambda: os.mkdir(os.path.join(mnt, "newdir")))
    expect_erofs("unlink", lambda: os.unlink(os.path.join(mnt, "small.txt")))
    expect_erofs("rename", lambda: os.rename(os.path.join(mnt, "small.txt"), os.path.join(mnt, "x")))
    expect_erofs("chmod", lambda: os.chmod(os.path.join(mnt, "small.txt"), 0o777))
    expect_erofs("symlink", lambda: os.symlink("x", os.path.join(mnt, "newlink")))
    check(sha256(os.path.join(src, "small.txt")) == before and
          not os.path.exists(os.path.join(src, "newfile")), "source unchanged")


def main():
    global SLOWFS, FUSERMOUNT
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    SLOWFS = os.path.abspath(sys.argv[1])
    if not os.path.exists("/dev/fuse"):
        fail("/dev/fuse does not exist: FUSE is unavailable on this machine, cannot test slowfs")
    FUSERMOUNT = shutil.which("fusermount3")
    if FUSERMOUNT is None:
        fail("fusermount3 not found (install the fuse3 package)")
    base = sys.argv[2] if len(sys.argv) > 2 else None
    if base:
        os.makedirs(base, exist_ok=True)
    work = tempfile.mkdtemp(prefix="slowfs-test-", dir=base)
    src = os.path.join(work, "src")
    mnt = os.path.join(work, "mnt ünï")     # a mountpoint with a space, too
    os.makedirs(mnt)
    counters_file = os.path.join(work, "counters.json")
    build_fixture(src)
    procs = []
    mounts = [mnt]
    try:
        test_bad_args(work, src)

        # --- main mount: foreground process, run in the background --------
        errlog = open(os.path.join(work, "slowfs.stderr"), "w+")
        proc = subprocess.Popen([SLOWFS, "--meta-us=0", "--counters=" + counters_file, src, mnt],
                                stderr=errlog)
        procs.append(proc)
        if not wait_mounted(mnt, proc):
            errlog.seek(0)
            fail(f"slowfs did not mount (exit {proc.poll()}): {errlog.read().strip()}")
        check(True, "mounted")
        compare_tree(src, mnt)
        test_counters(Counters(proc, counters_file), src, mnt)
        test_readonly(src, mnt)

        r = subprocess.run([FUSERMOUNT, "-u", mnt], capture_output=True, text=True)
        check(r.returncode == 0, f"fusermount3 -u: {r.stderr.strip()}")
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            fail("slowfs did not exit after fusermount3 -u")
        check(rc == 0, f"slowfs exited 0 after unmount (got {rc})")
        check(not is_mounted(mnt), "no longer mounted")
        errlog.seek(0)
        err = errlog.read()
        lines = COUNTER_LINE.findall(err)
        check(len(lines) >= 1 and err.rstrip("\n").splitlines()[-1] == lines[-1],
              f"counter line printed at exit: {lines[-1] if lines else err!r}")
        final = json.load(open(counters_file))
        check(final["open"] >= 7 and final["read_bytes"] >= 5 * 1024 * 1024,
              f"counters file at exit: {final}")

        # --- SIGTERM / SIGINT unmount; --meta-us costs time ----------------
        # Started with a relative mountpoint and SIGINT ignored, as `slowfs &`
        # from a script would be: it must still unmount cleanly.
        for sig in (signal.SIGTERM, signal.SIGINT):
            errlog2 = open(os.path.join(work, "slowfs2.stderr"), "w+")
            proc2 = subprocess.Popen([SLOWFS, "--meta-us=5000", src, os.path.basename(mnt)],
                                     cwd=work, stderr=errlog2,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
            procs.append(proc2)
            if not wait_mounted(mnt, proc2):
                fail("second mount failed")
            if sig == signal.SIGTERM:
                os.stat(os.path.join(mnt, "small.txt"))
                t0 = time.monotonic()
                for _ in range(20):
                    os.stat(os.path.join(mnt, "small.txt"))
                dt = time.monotonic() - t0
                check(dt >= 20 * 0.005, f"--meta-us=5000: 20 stats took {dt * 1000:.0f} ms (>= 100 ms)")
            proc2.send_signal(sig)
            try:
                rc = proc2.wait(timeout=20)
            except subprocess.TimeoutExpired:
                fail(f"slowfs did not exit on {sig.name}")
            errlog2.seek(0)
            err2 = errlog2.read()
            check(rc == 0 and not is_mounted(mnt) and COUNTER_LINE.search(err2)
                  and "failed" not in err2,
                  f"{sig.name}: exit {rc}, unmounted, counter line printed: {err2.strip()!r}")
            errlog2.close()

        # --- --background daemonizes; --cache; relative --counters ---------
        if os.path.exists(counters_file):
            os.unlink(counters_file)
        r = subprocess.run([SLOWFS, "--background", "--cache", "--meta-us=0",
                            "--counters", "counters.json", src, os.path.basename(mnt)],
                           cwd=work, capture_output=True, text=True, timeout=30)
        check(r.returncode == 0 and is_mounted(mnt), f"--background returns 0 and stays mounted ({r.stderr.strip()})")
        for _ in range(10):
            os.stat(os.path.join(mnt, "stat-probe.txt"))
        subprocess.run([FUSERMOUNT, "-u", mnt], check=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(counters_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        check(os.path.exists(counters_file), "daemon wrote the (relative) counters file at exit")
        d = json.load(open(counters_file))
        check(d["getattr"] < 10, f"--cache: 10 stats served by the kernel cache (getattr={d['getattr']})")
        print("PASS", flush=True)
        return 0
    finally:
        for m in mounts:
            unmount(m)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
