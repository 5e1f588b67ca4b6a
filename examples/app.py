"""A small "application" for examples/job.sh: imports numpy and a few scipy
subpackages (hundreds of module files), does a tiny computation and prints one
line per rank with the time the imports took."""

import os
import time

t0 = time.perf_counter()
import numpy as np            # noqa: E402
import scipy.linalg           # noqa: E402
import scipy.optimize         # noqa: E402
import scipy.sparse           # noqa: E402
import scipy.integrate        # noqa: E402
import scipy.stats            # noqa: E402
t1 = time.perf_counter()

rank = os.environ.get("PMI_RANK", "0")
size = os.environ.get("PMI_SIZE", "1")
a = np.eye(3) * 2.0
x = scipy.linalg.solve(a, np.ones(3))
line = ("rank %s/%s: imported numpy %s + scipy %s in %.3f s; solve -> %s\n"
        % (rank, size, np.__version__, scipy.__version__, t1 - t0, x.tolist()))
os.write(1, line.encode())   # one write per line: mpiexec does not interleave it
