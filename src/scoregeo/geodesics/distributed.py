"""The little torch.distributed plumbing the distance matrices need: rank, world size, barrier.

Processes are launched by ``torchrun`` (which sets RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT); scoregeo manages no process of its own. A process
group that the caller has not initialised is initialised from that
environment: gloo for CPU tensors, NCCL for CUDA tensors.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def rank_and_world(distributed: bool, device: torch.device) -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless ``distributed``."""
    if not distributed:
        return 0, 1
    if not dist.is_available():
        raise RuntimeError("distributed=True, but this PyTorch build has no torch.distributed")
    if not dist.is_initialized():
        missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise RuntimeError(f"distributed=True needs a torch.distributed process group: launch with torchrun "
                               f"(the environment lacks {', '.join(missing)}) or call "
                               "torch.distributed.init_process_group first")
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def barrier() -> None:
    """Wait until every rank of the default group gets here."""
    dist.barrier()
