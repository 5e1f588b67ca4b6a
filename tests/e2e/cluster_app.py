"""A small Python rank for the cluster tests (stdlib, numpy and scipy).

    cluster_app.py [--tag TAG] [--pause] [--kill-rank R] [--sleep S] [--exit CODE]

Imports json, decimal, numpy and scipy.linalg (extension modules: with the
shim they load from the node's mirror), prints one deterministic line
"[task R] ..." with one os.write, and, with E2E_FACTS=DIR set, writes
DIR/rank.R.json: pid, size, mount namespace (the emulated node), the
mappings of the shim's image memory file (device, inode, length), the
paths mapped from the node-local mirror (/dev/shm/pyimport-*) and the other
mappings of files in /dev/shm (an MPI library's shared memory segments,
mostly deleted: device, inode, length, path), then DIR/ready.R.

  --pause        then wait (at most 120 s) until DIR/go exists: the driver
                 looks at the nodes while every rank runs
  --kill-rank R  rank R waits (at most 30 s) until every rank is ready, then
                 SIGKILLs itself
  --sleep S      the other ranks sleep S seconds, then print "done"
  --exit CODE    exit with CODE at the end (after "done")

The rank is the launcher's: SLURM_PROCID, PMI_RANK, OMPI_COMM_WORLD_RANK or
PMIX_RANK, the size SLURM_NTASKS, PMI_SIZE or OMPI_COMM_WORLD_SIZE.
"""

import argparse
import json
import os
import signal
import time

import decimal
import numpy
import scipy.linalg


def env_int(names, default):
    for n in names:
        v = os.environ.get(n)
        if v is not None and v.strip().isdigit():
            return int(v)
    return default


RANK = env_int(("SLURM_PROCID", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"), 0)
SIZE = env_int(("SLURM_NTASKS", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"), 1)


def out(text):
    os.write(1, ("[task %d] %s\n" % (RANK, text)).encode())


def mappings():
    image, mirror, other = [], set(), []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) < 6:
                continue
            addr, _perm, _off, dev, inode, path = parts
            path = path.strip()
            if path.startswith("/memfd:pyimport-snapshot"):
                lo, hi = (int(x, 16) for x in addr.split("-"))
                image.append({"dev": dev, "inode": int(inode), "length": hi - lo})
            elif path.startswith("/dev/shm/pyimport-"):
                mirror.add(path)
            elif path.startswith("/dev/shm/"):
                lo, hi = (int(x, 16) for x in addr.split("-"))
                other.append({"dev": dev, "inode": int(inode), "length": hi - lo, "path": path})
    return image, sorted(mirror), other


def wait_for(pred, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tag", default="app")
    p.add_argument("--pause", action="store_true")
    p.add_argument("--kill-rank", type=int, default=-1)
    p.add_argument("--sleep", type=float, default=0)
    p.add_argument("--exit", type=int, default=0)
    a = p.parse_args()

    m = numpy.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.25], [0.5, 0.25, 2.0 + RANK]])
    det = scipy.linalg.det(m)
    out("%s of %d: numpy %s json %s decimal %s det %.6f" % (
        a.tag, SIZE, numpy.__name__, json.dumps([RANK, "x"]),
        decimal.Decimal(1) / decimal.Decimal(8), det))

    facts = os.environ.get("E2E_FACTS")
    if facts:
        image, mirror, other = mappings()
        info = {"rank": RANK, "size": SIZE, "pid": os.getpid(),
                "mntns": os.readlink("/proc/self/ns/mnt"),
                "node": os.environ.get("SLURMD_NODENAME", ""),
                "image": image, "mirror": mirror, "other_shm": other}
        tmp = os.path.join(facts, "rank.%d.json.tmp" % RANK)
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, os.path.join(facts, "rank.%d.json" % RANK))
        open(os.path.join(facts, "ready.%d" % RANK), "w").close()
        if a.pause:
            wait_for(lambda: os.path.exists(os.path.join(facts, "go")), 120)
        if RANK == a.kill_rank:
            wait_for(lambda: all(os.path.exists(os.path.join(facts, "ready.%d" % r))
                                 for r in range(SIZE)), 30)
    if RANK == a.kill_rank:
        os.kill(os.getpid(), signal.SIGKILL)
    if a.sleep:
        time.sleep(a.sleep)
    out("done")
    if a.exit:
        raise SystemExit(a.exit)


if __name__ == "__main__":
    main()
