"""Start curves for boundary-value solves: the straight line, bowed arcs and graph paths.

A local solver finds the geodesic whose basin its start curve lies in. To find
the *shortest* geodesic, the solvers start from several curves per pair:

* the straight line;
* parabolic arcs bowed away from the chord by ``bends`` × |x1 − x0| at their
  middle, to both sides, in several directions orthogonal to the chord: the
  metric's own stiff direction at the midpoint (the score there, for a score
  metric, from ``Metric._low_rank``), and fixed random directions, so that in
  d ≥ 3 starts leave every plane;
* the shortest path through a graph of points with metric edge lengths
  (:mod:`scoregeo.geodesics.graph`): the user's ``anchors`` (for example
  training samples) when given, otherwise points drawn near the pair.

Every start depends on its own pair only (random directions come from a fixed
seed and are the same for every pair), so a pair gets the same starts alone or
inside any batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..metrics import Metric
from .graph import graph_paths
from .solver import straight_lines

_DIRECTION_SEED = 20261204


@dataclass
class StartCurves:
    """Which start curves to build (see the module docstring).

    Args:
        n_points: points of each start polyline.
        bends: bulges of the bowed arcs, relative to the chord length.
        n_directions: directions orthogonal to the chord to bow in (capped at
            d − 1); the first is the metric's stiff direction when it has one.
        graph: add the graph path.
        anchors: (M, d) points to use as graph nodes instead of random ones.
    """

    n_points: int = 24
    bends: tuple[float, ...] = (0.4, 1.2)
    n_directions: int = 2
    graph: bool = True
    anchors: torch.Tensor | None = None

    def __post_init__(self):
        if not (isinstance(self.n_points, int) and self.n_points >= 2):
            raise ValueError(f"n_points must be an integer >= 2, got {self.n_points!r}")
        if not all(isinstance(b, (int, float)) and 0 < b < float("inf") for b in self.bends):
            raise ValueError(f"bends must be finite numbers > 0, got {self.bends!r}")
        if not (isinstance(self.n_directions, int) and self.n_directions >= 0):
            raise ValueError(f"n_directions must be an integer >= 0, got {self.n_directions!r}")
        if self.anchors is not None and not (
            isinstance(self.anchors, torch.Tensor) and self.anchors.ndim == 2 and bool(torch.isfinite(self.anchors).all())
        ):
            raise ValueError("anchors must be a finite tensor of shape (M, d)")

    def build(self, metric: Metric, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Start curves (C, B, n_points, d) for the pairs a, b (B, d)."""
        if self.anchors is not None and self.anchors.shape[-1] != metric.dim:
            raise ValueError(f"anchors must have shape (M, {metric.dim}), got {tuple(self.anchors.shape)}")
        line = straight_lines(a, b, self.n_points)
        if metric.dim == 1:
            return line.unsqueeze(0)
        curves = [line]
        if self.graph:
            curves.append(graph_paths(metric, a, b, self.n_points, anchors=self.anchors))
        for direction in bow_directions(metric, a, b, min(self.n_directions, metric.dim - 1)):
            for bend in self.bends:
                for side in (1.0, -1.0):
                    curves.append(bowed_lines(a, b, self.n_points, side * bend, direction))
        return torch.stack(curves)


def bow_directions(metric: Metric, a: torch.Tensor, b: torch.Tensor, count: int) -> list[torch.Tensor]:
    """``count`` orthonormal directions (each (B, d)) orthogonal to the chords b − a.

    The first is the metric's stiff direction at the midpoint (the leading
    low-rank factor, when the metric has one and it is not along the chord);
    the others come from a fixed random matrix, each orthogonalised per pair
    (a candidate that is along a pair's chord is skipped for that pair only).
    """
    d = a.shape[-1]
    chord = b - a
    basis = chord / chord.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    candidates = []
    with torch.no_grad():
        structure = metric._low_rank(0.5 * (a + b))
    if structure is not None and structure[1].shape[-2] > 0:
        candidates.append(structure[1][..., 0, :])
    gen = torch.Generator(device="cpu").manual_seed(_DIRECTION_SEED)
    fixed = torch.randn(count + 1, d, generator=gen, dtype=torch.float64).to(dtype=a.dtype, device=a.device)
    candidates += [row.expand_as(a) for row in fixed]  # count + 1 of them: at most one is lost to the stiff one
    slots = torch.zeros(count, *a.shape, dtype=a.dtype, device=a.device)  # zero until filled, per pair
    filled = torch.zeros(count, a.shape[0], dtype=torch.bool, device=a.device)
    for candidate in candidates:
        v = candidate - (candidate * basis).sum(-1, keepdim=True) * basis
        for k in range(count):
            v = v - (v * slots[k]).sum(-1, keepdim=True) * slots[k]
        norm = v.norm(dim=-1, keepdim=True)
        usable = (torch.isfinite(norm) & (norm > 1e-6 * candidate.norm(dim=-1, keepdim=True)))[:, 0]
        for k in range(count):
            take = usable & ~filled[k]
            slots[k][take] = (v / norm)[take]
            filled[k] |= take
            usable &= ~take
    return list(slots)


def bowed_lines(a: torch.Tensor, b: torch.Tensor, n: int, bend: float, direction: torch.Tensor) -> torch.Tensor:
    """Parabolic arcs (B, n, d) from a to b bulging by ``bend`` · |b − a| along the unit ``direction`` (B, d)."""
    t = torch.linspace(0, 1, n, dtype=a.dtype, device=a.device)[:, None]
    size = (b - a).norm(dim=-1, keepdim=True)
    return straight_lines(a, b, n) + (4 * bend * t * (1 - t)) * (size * direction)[:, None]
