"""Drive MPICH through ctypes the way mpi4py does, to check that the pyimport
shim (which talks MPI itself while serving imports) does not disturb an
application that initialises and finalises MPI on its own.

    mpiexec -n 4 /usr/bin/python3 tests/e2e/mpi_ctypes.py \
        [--early-exit | --exit-after-finalize]

Normal mode: MPI_Initialized; MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE,
&provided) (only if not yet initialised, like mpi4py); rank and size of
MPI_COMM_WORLD; MPI_Allreduce(MPI_SUM) of the rank; MPI_Finalize; MPI_Finalized.

--early-exit: the application never touches MPI.  After importing a few
modules, rank 1 leaves at once through os._exit(0) (no atexit handlers, no
destructors); every other rank sleeps 1 s, prints a line and exits normally.
Without the shim Hydra lets the other ranks finish (rank 1 never initialised
MPI); with the shim, which did talk MPI/PMI in every rank, the result must be
the same -- in particular Hydra must not treat rank 1 as having died inside
MPI and kill the job.

--exit-after-finalize: the normal sequence, but rank 1 leaves through
os._exit(0) right after MPI_Finalize, and the other ranks sleep 1 s before
printing their last line and exiting normally.

Every stdout line is prefixed with "[rank R] ".
"""

import ctypes
import os
import sys
import time

MPI_THREAD_MULTIPLE = 3
MPI_COMM_WORLD = 0x44000000   # MPICH's handle constants are plain ints
MPI_INT = 0x4C000405
MPI_SUM = 0x58000003
MPI_SUCCESS = 0

LIBMPI = os.environ.get("MPI_CTYPES_LIBRARY", "libmpich.so.12")

PMI_RANK = os.environ.get("PMI_RANK", "?")


def out(text):
    sys.stdout.write("[rank %s] %s\n" % (PMI_RANK, text))
    sys.stdout.flush()


def check(name, rc):
    if rc != MPI_SUCCESS:
        out("%s failed with error %d" % (name, rc))
        sys.stdout.flush()
        os._exit(10)


def early_exit_without_mpi():
    import json
    import numpy
    rank = int(PMI_RANK)
    out("imported json %s numpy %s" % (json.__name__, numpy.__name__))
    if rank == 1:
        os._exit(0)
    time.sleep(1.0)
    out("still alive after rank 1 left")


def main():
    args = sys.argv[1:]
    if "--early-exit" in args:
        early_exit_without_mpi()
        return
    exit_after_finalize = "--exit-after-finalize" in args
    lib = ctypes.CDLL(LIBMPI, mode=ctypes.RTLD_GLOBAL)

    c_int_p = ctypes.POINTER(ctypes.c_int)
    lib.MPI_Initialized.argtypes = [c_int_p]
    lib.MPI_Finalized.argtypes = [c_int_p]
    lib.MPI_Init_thread.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, c_int_p]
    lib.MPI_Comm_rank.argtypes = [ctypes.c_int, c_int_p]
    lib.MPI_Comm_size.argtypes = [ctypes.c_int, c_int_p]
    lib.MPI_Allreduce.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                  ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.MPI_Finalize.argtypes = []
    for f in ("MPI_Initialized", "MPI_Finalized", "MPI_Init_thread", "MPI_Comm_rank",
              "MPI_Comm_size", "MPI_Allreduce", "MPI_Finalize"):
        getattr(lib, f).restype = ctypes.c_int

    flag = ctypes.c_int(-1)
    check("MPI_Initialized", lib.MPI_Initialized(ctypes.byref(flag)))
    out("initialized before init: %d" % flag.value)
    fin = ctypes.c_int(-1)
    check("MPI_Finalized", lib.MPI_Finalized(ctypes.byref(fin)))
    out("finalized before init: %d" % fin.value)

    provided = ctypes.c_int(-1)
    if not flag.value:
        check("MPI_Init_thread",
              lib.MPI_Init_thread(None, None, MPI_THREAD_MULTIPLE, ctypes.byref(provided)))
    out("provided thread level: %d" % provided.value)

    check("MPI_Initialized", lib.MPI_Initialized(ctypes.byref(flag)))
    out("initialized after init: %d" % flag.value)

    rank = ctypes.c_int(-1)
    size = ctypes.c_int(-1)
    check("MPI_Comm_rank", lib.MPI_Comm_rank(MPI_COMM_WORLD, ctypes.byref(rank)))
    check("MPI_Comm_size", lib.MPI_Comm_size(MPI_COMM_WORLD, ctypes.byref(size)))
    out("rank %d size %d (PMI_RANK %s)" % (rank.value, size.value, PMI_RANK))

    send = ctypes.c_int(rank.value)
    recv = ctypes.c_int(-1)
    check("MPI_Allreduce", lib.MPI_Allreduce(ctypes.byref(send), ctypes.byref(recv), 1,
                                             MPI_INT, MPI_SUM, MPI_COMM_WORLD))
    out("allreduce sum of ranks: %d (expected %d)"
        % (recv.value, size.value * (size.value - 1) // 2))

    check("MPI_Finalize", lib.MPI_Finalize())
    if exit_after_finalize:
        if rank.value == 1:
            os._exit(0)
        time.sleep(1.0)
    check("MPI_Finalized", lib.MPI_Finalized(ctypes.byref(fin)))
    out("finalized after finalize: %d" % fin.value)


if __name__ == "__main__":
    main()
