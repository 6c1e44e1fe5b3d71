"""Distance matrices in blocks of pairs, resumable on disk and shared out over torch.distributed ranks.

The pairs of a distance matrix are cut into blocks of ``batch_size`` pairs, in
a fixed order; block k belongs to rank k mod world_size. A finished block is
written atomically to ``block-<k>.pt`` in the output directory, with a
fingerprint of everything its distances depend on (the points, the metric and
solver settings, the block's pairs and a user key). A rerun loads the blocks
that are already there instead of solving them again, and refuses a block
whose fingerprint differs: it was computed for other inputs or settings.

A pair's distance does not depend on the other pairs of its batch, and the
blocks are the batches of the single-process computation, so a distributed or
resumed run gives the same matrix as one uninterrupted process.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .._io import atomic_write

BLOCK_PATTERN = "block-{:06d}.pt"


@dataclass(frozen=True)
class Blocks:
    """The pairs (rows, cols) of a matrix cut into blocks of ``size`` pairs, in order."""

    rows: torch.Tensor
    cols: torch.Tensor
    size: int

    def __len__(self) -> int:
        return -(-self.rows.shape[0] // self.size)

    def pairs(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, cols) of block k."""
        span = slice(k * self.size, (k + 1) * self.size)
        return self.rows[span], self.cols[span]


def fingerprint(*parts: torch.Tensor | str) -> str:
    """SHA-256 of tensors (dtype, shape and bytes) and strings, in order."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            data = part.detach().cpu().contiguous()
            digest.update(f"{data.dtype}{tuple(data.shape)}".encode())
            digest.update(data.numpy().tobytes() if data.dtype != torch.bfloat16 else data.float().numpy().tobytes())
        else:
            digest.update(str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()


class BlockStore:
    """Block files in ``directory``, each tagged with the run's fingerprint and its own pairs."""

    def __init__(self, directory: str | os.PathLike, run: str):
        self.directory = Path(directory)
        self.run = run

    def path(self, k: int) -> Path:
        return self.directory / BLOCK_PATTERN.format(k)

    def load(self, k: int, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Block k's results, or None if it is not on disk; ``ValueError`` if the file is not this run's block k."""
        path = self.path(k)
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            tag, distances, converged = stored["fingerprint"], stored["distances"], stored["converged"]
        except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
            raise ValueError(f"{path} is not a readable block file ({type(exc).__name__}: {exc}); remove it to "
                             "recompute that block") from None
        expected = fingerprint(self.run, rows, cols)
        if tag != expected:
            raise ValueError(f"{path} was computed for other inputs or settings (fingerprint {tag[:12]}…, this run "
                             f"{expected[:12]}…): use another output directory, or empty this one to start over")
        if distances.shape != rows.shape or converged.shape != rows.shape:
            raise ValueError(f"{path} holds {tuple(distances.shape)} distances for a block of {rows.shape[0]} pairs")
        return distances, converged

    def save(self, k: int, rows: torch.Tensor, cols: torch.Tensor, distances: torch.Tensor,
             converged: torch.Tensor) -> None:
        """Write block k atomically (a crash leaves either no file or the complete one)."""
        buffer = io.BytesIO()
        torch.save({"fingerprint": fingerprint(self.run, rows, cols), "distances": distances.detach().cpu(),
                    "converged": converged.detach().cpu()}, buffer)
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path(k), lambda fh: fh.write(buffer.getvalue()), binary=True)


def solve_blocks(blocks: Blocks, mine, solve: Callable, store: BlockStore | None,
                 progress=None) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{k: (distances, converged)} of the blocks ``mine`` (indices): loaded from ``store`` when there, else solved.

    ``solve(rows, cols)`` returns (distances, converged) of one block, which is
    then saved to ``store``; ``progress`` (a tqdm bar or None) advances by one
    per block.
    """
    results = {}
    for k in mine:
        rows, cols = blocks.pairs(k)
        found = store.load(k, rows, cols) if store is not None else None
        if found is None:
            found = solve(rows, cols)
            if store is not None:
                store.save(k, rows, cols, *found)
        results[k] = found
        if progress is not None:
            progress.update(1)
    return results
