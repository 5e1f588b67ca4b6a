"""An application that drives MPI itself through ctypes and calls MPI_Init
unconditionally (not mpi4py-style: it never asks MPI_Initialized first), in
either MPI family, to check that the pyimport shim (which has its own MPI
session, or initialises MPI itself where the library has no sessions) keeps
the application's MPI_Init, MPI_Initialized, MPI_Finalize and MPI_Finalized
working.

    mpiexec.mpich   -n 2 python3 cluster_mpi_ctypes.py mpich   [EXIT_RANK]
    mpiexec.openmpi -n 2 python3 cluster_mpi_ctypes.py openmpi [EXIT_RANK]

mpich: libmpich.so.12, handles are plain ints (MPI_COMM_WORLD 0x44000000 ...).
openmpi: libmpi.so.40 (loaded RTLD_GLOBAL, as mpi4py does: Open MPI's
components need it), handles are the addresses of exported globals
(ompi_mpi_comm_world, ompi_mpi_int, ompi_mpi_op_sum).

Sequence: MPI_Initialized (printed), MPI_Init(NULL, NULL), MPI_Initialized,
rank and size of MPI_COMM_WORLD, MPI_Allreduce(MPI_SUM) of the rank,
MPI_Finalize, MPI_Finalized; then, if EXIT_RANK is this rank, exit status 4
(sys.exit after MPI_Finalize). Every stdout line is "[rank R] ..." and
written with one os.write.
"""

import ctypes
import os
import sys

MPI_SUCCESS = 0


def out(rank, text):
    os.write(1, ("[rank %s] %s\n" % (rank, text)).encode())


def main():
    family = sys.argv[1] if len(sys.argv) > 1 else "mpich"
    exit_rank = int(sys.argv[2]) if len(sys.argv) > 2 else -1
    # "pmpi": start and end MPI through the profiling names (as tools such as
    # Darshan, and Open MPI's Fortran bindings, do).
    prefix = "PMPI_" if len(sys.argv) > 3 and sys.argv[3] == "pmpi" else "MPI_"
    launcher_rank = (os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK")
                     or os.environ.get("PMIX_RANK") or "?")
    c_int_p = ctypes.POINTER(ctypes.c_int)
    if family == "mpich":
        lib = ctypes.CDLL("libmpich.so.12", mode=ctypes.RTLD_GLOBAL)
        handle = ctypes.c_int
        comm_world, mpi_int, mpi_sum = 0x44000000, 0x4C000405, 0x58000003
    elif family == "openmpi":
        lib = ctypes.CDLL("libmpi.so.40", mode=ctypes.RTLD_GLOBAL)
        handle = ctypes.c_void_p

        def addr(name):
            return ctypes.addressof(ctypes.c_char.in_dll(lib, name))
        comm_world = addr("ompi_mpi_comm_world")
        mpi_int = addr("ompi_mpi_int")
        mpi_sum = addr("ompi_mpi_op_sum")
    else:
        sys.exit("family must be mpich or openmpi, not %r" % family)

    lib.MPI_Initialized.argtypes = [c_int_p]
    lib.MPI_Finalized.argtypes = [c_int_p]
    lib.MPI_Init.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.MPI_Comm_rank.argtypes = [handle, c_int_p]
    lib.MPI_Comm_size.argtypes = [handle, c_int_p]
    lib.MPI_Allreduce.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                  handle, handle, handle]
    lib.MPI_Finalize.argtypes = []
    for f in ("MPI_Initialized", "MPI_Finalized", "MPI_Init", "MPI_Comm_rank",
              "MPI_Comm_size", "MPI_Allreduce", "MPI_Finalize"):
        getattr(lib, f).restype = ctypes.c_int
    init = getattr(lib, prefix + "Init")
    init.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    init.restype = ctypes.c_int
    finalize = getattr(lib, prefix + "Finalize")
    finalize.argtypes = []
    finalize.restype = ctypes.c_int

    def check(name, rc):
        if rc != MPI_SUCCESS:
            out(launcher_rank, "%s failed with error %d" % (name, rc))
            os._exit(10)

    flag = ctypes.c_int(-1)
    check("MPI_Initialized", lib.MPI_Initialized(ctypes.byref(flag)))
    before = flag.value
    check(prefix + "Init", init(None, None))
    check("MPI_Initialized", lib.MPI_Initialized(ctypes.byref(flag)))
    rank, size = ctypes.c_int(-1), ctypes.c_int(-1)
    check("MPI_Comm_rank", lib.MPI_Comm_rank(comm_world, ctypes.byref(rank)))
    check("MPI_Comm_size", lib.MPI_Comm_size(comm_world, ctypes.byref(size)))
    r = rank.value
    out(r, "%s: initialized before MPI_Init %d, after %d; rank %d size %d (launcher rank %s)"
        % (family, before, flag.value, r, size.value, launcher_rank))
    send, recv = ctypes.c_int(r), ctypes.c_int(-1)
    check("MPI_Allreduce", lib.MPI_Allreduce(ctypes.byref(send), ctypes.byref(recv), 1,
                                             mpi_int, mpi_sum, comm_world))
    out(r, "allreduce sum of ranks %d (expected %d)"
        % (recv.value, size.value * (size.value - 1) // 2))
    check(prefix + "Finalize", finalize())
    fin = ctypes.c_int(-1)
    check("MPI_Finalized", lib.MPI_Finalized(ctypes.byref(fin)))
    out(r, "finalized after MPI_Finalize %d" % fin.value)
    if r == exit_rank:
        out(r, "exiting with status 4")
        sys.exit(4)


if __name__ == "__main__":
    main()
