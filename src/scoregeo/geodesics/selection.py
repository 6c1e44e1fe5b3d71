"""Per pair, the shortest of several local geodesics, and the count of distinct ones.

Multi-start solves produce C local solutions per pair in one flat batch of
C·B entries ordered start-major (entry c·B + b is start c of pair b).
"""

from __future__ import annotations

import torch

from .path import Path


def pick_shortest(lengths: torch.Tensor, converged: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Flat indices (B,) of the shortest converged of C solutions per pair, from (C, B) tensors.

    A pair none of whose solutions converged gets the one with the smallest residual.
    """
    C, B = lengths.shape
    score = torch.where(converged, lengths, torch.inf)
    best = torch.where(converged.any(0), score.argmin(0), torch.nan_to_num(residual, nan=torch.inf).argmin(0))
    return best * B + torch.arange(B, device=lengths.device)


def select_shortest(solved: Path, C: int, B: int) -> Path:
    """Per pair, the shortest converged of C solutions (the smallest residual if none converged).

    ``solved`` is a flat Path of C·B entries ordered start-major. Two converged
    solutions are the same local geodesic when their initial velocities agree
    to 1e-4 relative (a geodesic is determined by its initial velocity);
    ``local_lengths`` lists the distinct ones, shortest first, and ``n_local``
    counts them.
    """
    lengths, converged = solved.length.reshape(C, B), solved.converged.reshape(C, B)
    pick = pick_shortest(lengths, converged, solved.residual.reshape(C, B))
    local, count = distinct_local(solved.initial_velocity.reshape(C, B, -1), lengths, converged)
    evaluations = None if solved.evaluations is None else solved.evaluations.reshape(C, B).sum(0)
    return Path(
        points=solved.points[pick],
        times=solved.times,
        length=solved.length[pick],
        energy=solved.energy[pick],
        converged=solved.converged[pick],
        initial_velocity=solved.initial_velocity[pick],
        residual=solved.residual[pick],
        speed_drift=solved.speed_drift[pick],
        method=solved.method,
        local_lengths=local,
        n_local=count,
        evaluations=evaluations,
    )


def distinct_local(velocities, lengths, converged) -> tuple[torch.Tensor, torch.Tensor]:
    """Lengths (B, C) of the distinct converged geodesics (NaN padded, shortest first) and their count (B,)."""
    C, B, _ = velocities.shape
    out = torch.full((B, C), float("nan"), dtype=lengths.dtype, device=lengths.device)
    count = torch.zeros(B, dtype=torch.long, device=lengths.device)
    for pair in range(B):
        kept: list[int] = []
        for c in lengths[:, pair].argsort().tolist():
            if not bool(converged[c, pair]):
                continue
            v = velocities[c, pair]
            scale = 1e-4 * (v.norm() + 1e-12)
            if all(bool((v - velocities[k, pair]).norm() > scale) for k in kept):
                kept.append(c)
        out[pair, : len(kept)] = lengths[kept, pair]
        count[pair] = len(kept)
    return out, count


