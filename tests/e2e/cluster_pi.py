"""The classic mpi4py example, pure Python: compute pi by the midpoint rule.

    mpiexec.openmpi -n 4 python3 cluster_pi.py [N]

Rank 0 broadcasts the number of intervals (comm.bcast of a Python int),
every rank sums its share, comm.reduce adds them up on rank 0. Every rank
prints one line (one os.write), rank 0 also the result. With E2E_FACTS set,
each rank writes E2E_FACTS/pid.<rank> ("<pid> <cwd>", as workload.py does)
for the strace analysis.
"""

import math
import os
import sys

from mpi4py import MPI


def main():
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    facts = os.environ.get("E2E_FACTS")
    if facts:
        with open(os.path.join(facts, "pid.%d" % rank), "w") as f:
            f.write("%d %s\n" % (os.getpid(), os.getcwd()))
    n = comm.bcast(int(sys.argv[1]) if rank == 0 and len(sys.argv) > 1 else 100000, root=0)
    h = 1.0 / n
    s = 0.0
    for i in range(rank, n, size):
        x = h * (i + 0.5)
        s += 4.0 / (1.0 + x * x)
    mypi = s * h
    pi = comm.reduce(mypi, op=MPI.SUM, root=0)
    os.write(1, ("[rank %d] of %d: n %d, my part %.12f\n" % (rank, size, n, mypi)).encode())
    if rank == 0:
        os.write(1, ("[rank 0] pi is approximately %.12f, error %.3e\n"
                     % (pi, abs(pi - math.pi))).encode())


if __name__ == "__main__":
    main()
