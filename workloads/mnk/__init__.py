"""The reference workload: m,n,k-games (3x3 tic-tac-toe, 4x4 three in a row, 5x5 four).

``python -m workloads.mnk selfplay|train|evaluate|prefetch`` runs one job of the
self-play loop as a node agent starts it; ``solve``, ``vs-random`` and ``loop``
measure models and run the loop without a cluster. numpy only, on the CPU.
"""

import os as _os

# Jobs share a node's few cores and the matrices here are small: one BLAS thread per
# process is faster than several fighting for the same cores. Set before numpy loads.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_name, "1")
