"""Run under torchrun by tests/test_distributed.py: one distance matrix over the ranks of torch.distributed.

    torchrun --standalone --nproc_per_node 2 distances_worker.py OUT_DIR RESULT [--kill-rank R]

The matrix is that of a score metric on a Gaussian mixture between 7 points
(21 pairs, blocks of 2). Rank 0 saves the matrix to RESULT. With
``--kill-rank R``, rank R kills itself (SIGKILL, as a pre-empted node would
be) right after writing its first block.
"""

from __future__ import annotations

import argparse
import os
import signal

import torch

import scoregeo as sg
from scoregeo.geodesics import blocks


def problem() -> tuple[sg.ScoreMetric, torch.Tensor]:
    mixture = sg.GaussianMixture(torch.tensor([[0.0, -1.3], [0.0, 1.3]], dtype=torch.float64),
                                 0.5 * torch.eye(2, dtype=torch.float64))
    points = torch.randn(7, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1.5
    return sg.ScoreMetric(mixture.score, 2, lam=4.0), points


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("result")
    parser.add_argument("--kill-rank", type=int)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    if args.kill_rank == rank:
        save = blocks.BlockStore.save

        def save_then_die(self, *a, **kw):
            save(self, *a, **kw)
            os.kill(os.getpid(), signal.SIGKILL)

        blocks.BlockStore.save = save_then_die
    metric, points = problem()
    matrix = sg.pairwise_distances(metric, points, batch_size=2, out_dir=args.out_dir, distributed=True,
                                   progress=False, key="worker")
    if rank == 0:
        torch.save(matrix, args.result)


if __name__ == "__main__":
    main()
