"""Run under torchrun by tests/test_distributed.py: sg.train_score on the ranks of torch.distributed.

    torchrun --standalone --nproc_per_node 2 train_worker.py MODE OUT [--kill-at STEP [--kill-rank R]]

Modes:
  gradient  one step of exact score matching (global batch 8, float64, no clipping) with a
            network that records its inputs; rank 0 saves {"batches": [per rank],
            "gradients": {name: DDP gradient}} to OUT.
  run       12 steps of dsm with checkpoints every 4 into the directory OUT (resumed if it holds
            a checkpoint); with --kill-at S, rank 1 kills itself (SIGKILL) after step S. Every
            rank writes the SHA-256 of its final EMA weights to OUT/ema-<rank>.txt.
  fail      rank 1 raises ValueError("rank 1 fails on purpose") before training.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal

import torch
from torch import nn

import scoregeo as sg


class RecordingMLP(nn.Module):
    """A small unconditional score network that keeps the inputs of its first forward pass."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
        self.first_input = None

    def forward(self, x, sigma=None):
        if self.first_input is None:
            self.first_input = x.detach().clone()
        return self.body(x)


def data() -> torch.Tensor:
    return sg.datasets.make("moons", 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["gradient", "run", "fail"])
    parser.add_argument("out")
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--kill-rank", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    if args.mode == "fail":
        if rank == 1:
            raise ValueError("rank 1 fails on purpose")
        sg.train_score(data(), "dsm", steps=50, batch_size=8, progress=False)
    elif args.mode == "gradient":
        torch.manual_seed(0)
        net = RecordingMLP().to(torch.float64)
        gradients = {}

        def keep_gradients(step, loss, model):
            gradients.update({name: p.grad.clone() for name, p in net.named_parameters()})

        sg.train_score(data(), "exact", steps=1, batch_size=8, network=net, grad_clip=None, progress=False,
                       callback=keep_gradients, seed=5)
        batches = [None, None]
        torch.distributed.all_gather_object(batches, net.first_input)
        if rank == 0:
            torch.save({"batches": batches, "gradients": gradients}, args.out)
    else:
        def maybe_die(step, loss, model):
            if rank == args.kill_rank and step == args.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        model = sg.train_score(data(), "dsm", steps=12, batch_size=8, checkpoint_every=4, out=args.out,
                               resume=True, progress=False, callback=maybe_die, seed=3)
        digest = hashlib.sha256()
        for value in model.network.state_dict().values():
            digest.update(value.detach().cpu().numpy().tobytes())
        with open(os.path.join(args.out, f"ema-{rank}.txt"), "w") as fh:
            fh.write(digest.hexdigest())


if __name__ == "__main__":
    main()
