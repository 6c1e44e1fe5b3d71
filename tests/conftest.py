"""Shared test set-up.

``make test`` runs pytest with 2 worker processes on 2 cores. The tests' tensors
are tiny, so a second torch thread per worker only adds synchronisation, and a
2-thread pool stalls whenever the other worker holds a core: one thread each.
A test that needs several threads (the batched-LU regression in
test_metrics.py) sets them itself.
"""

import torch

torch.set_num_threads(1)
