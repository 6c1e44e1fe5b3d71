"""The torch.distributed plumbing of training and distance matrices: rank, world size, collectives.

Processes are launched by ``torchrun`` (which sets RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT); scoregeo manages no process of its own. A process
group that the caller has not initialised is initialised from that
environment: gloo for CPU tensors, NCCL for CUDA tensors.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

_ENVIRONMENT = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """This process belongs to a group of several: an initialised group, or a torchrun environment with WORLD_SIZE > 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_and_world(distributed: bool | None, device: torch.device) -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless ``distributed`` (None: whether :func:`launched`)."""
    if distributed is None:
        distributed = launched()
    if not distributed:
        return 0, 1
    if not dist.is_available():
        raise RuntimeError("distributed=True, but this PyTorch build has no torch.distributed")
    if not dist.is_initialized():
        missing = [name for name in _ENVIRONMENT if name not in os.environ]
        if missing:
            raise RuntimeError(f"distributed=True needs a torch.distributed process group: launch with torchrun "
                               f"(the environment lacks {', '.join(missing)}) or call "
                               "torch.distributed.init_process_group first")
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """Rank 0 of an initialised group, or a process outside any group (which writes files and logs)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait until every rank of the default group gets here."""
    dist.barrier()


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The average of a tensor over the ranks of the default group (a copy)."""
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def gather_objects(obj) -> list:
    """``obj`` of every rank, in rank order, on every rank."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
