"""The classic mpi4py example with NumPy buffers: compute pi by the midpoint
rule, the interval count broadcast with comm.Bcast and the partial sums
added with comm.Reduce, both on numpy arrays (the buffer interface).

    mpiexec.openmpi -n 4 python3 cluster_pi_numpy.py [N]

Every rank prints one line (one os.write), rank 0 also the result. With
E2E_FACTS set, each rank writes E2E_FACTS/pid.<rank> ("<pid> <cwd>").
"""

import math
import os
import sys

import numpy as np
from mpi4py import MPI


def main():
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    facts = os.environ.get("E2E_FACTS")
    if facts:
        with open(os.path.join(facts, "pid.%d" % rank), "w") as f:
            f.write("%d %s\n" % (os.getpid(), os.getcwd()))
    n = np.zeros(1, dtype="i")
    if rank == 0:
        n[0] = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    comm.Bcast([n, MPI.INT], root=0)
    h = 1.0 / n[0]
    x = h * (np.arange(rank, n[0], size, dtype="d") + 0.5)
    mypi = np.array([np.sum(4.0 / (1.0 + x * x)) * h], dtype="d")
    pi = np.zeros(1, dtype="d")
    comm.Reduce([mypi, MPI.DOUBLE], [pi, MPI.DOUBLE], op=MPI.SUM, root=0)
    os.write(1, ("[rank %d] of %d: n %d, my part %.12f\n" % (rank, size, n[0], mypi[0])).encode())
    if rank == 0:
        os.write(1, ("[rank 0] pi is approximately %.12f, error %.3e\n"
                     % (pi[0], abs(pi[0] - math.pi))).encode())


if __name__ == "__main__":
    main()
