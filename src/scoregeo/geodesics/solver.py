"""Boundary-value solvers are objects: the protocol, and the registry behind ``sg.geodesic(..., solver=...)``.

A solver is configured once (its options are constructor arguments) and
called on flat batches:

* ``refine(metric, starts, groups, n_points) → Path``: local solves from start
  curves ``starts`` (C, m, d) (polylines from x0 to x1, uniform in t), one
  Path entry per start curve; ``groups`` (C,) labels curves that join the same
  end points, so that a solver may stop refining a curve that can no longer
  become the shortest of its group.
* ``shortest(metric, starts, n_points) → Path``: from start curves ``starts``
  (C, B, m, d), C per pair, the shortest converged local geodesic of each pair
  (B entries, with ``n_local`` and ``local_lengths``); by default ``refine``
  on the flat batch, then :func:`~scoregeo.geodesics.selection.select_shortest`.
* ``solve(metric, x0, x1, n_points) → Path``: one geodesic per pair (B, d); by
  default ``refine`` from the straight line.

Registered names map to default-configured solvers; a new solver is a new
module in ``geodesics/`` and one line in :data:`SOLVERS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import torch

from ..metrics import Metric
from .path import Path
from .selection import select_shortest


class BVPSolver(ABC):
    """A boundary-value geodesic solver (see the module docstring)."""

    name: str = "solver"

    @abstractmethod
    def refine(self, metric: Metric, starts: torch.Tensor, groups: torch.Tensor, n_points: int) -> Path:
        """Local geodesics (flat Path of C entries) from start curves (C, m, d)."""

    def shortest(self, metric: Metric, starts: torch.Tensor, n_points: int) -> Path:
        """Per pair, the shortest converged local geodesic from start curves (C, B, m, d) (B entries)."""
        C, B = starts.shape[:2]
        groups = torch.arange(B, device=starts.device).repeat(C)
        return select_shortest(self.refine(metric, starts.flatten(0, 1), groups, n_points), C, B)

    def solve(self, metric: Metric, x0: torch.Tensor, x1: torch.Tensor, n_points: int) -> Path:
        """Geodesics between the pairs x0, x1 (B, d), from the straight lines."""
        groups = torch.arange(x0.shape[0], device=x0.device)
        return self.refine(metric, straight_lines(x0, x1, 2), groups, n_points)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def straight_lines(a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
    """n points (B, n, d) uniformly spaced on the segments from a to b (B, d)."""
    t = torch.linspace(0, 1, n, dtype=a.dtype, device=a.device)[:, None]
    return a[:, None] + t * (b - a)[:, None]


SOLVERS: dict[str, Callable[[], BVPSolver]] = {}


def register(name: str, factory: Callable[[], BVPSolver]) -> None:
    """Make ``sg.geodesic(..., solver=name)`` use ``factory()``."""
    SOLVERS[name] = factory


def get_solver(spec: str | BVPSolver, dim: int) -> BVPSolver:
    """The solver for ``spec``: a :class:`BVPSolver` as is, or a registered name (``"auto"`` depends on ``dim``)."""
    if isinstance(spec, BVPSolver):
        return spec
    if spec == "auto":
        from .shortest import default_solver

        return default_solver(dim)
    if not isinstance(spec, str) or spec not in SOLVERS:
        raise ValueError(f"solver (or method, its former name) must be a BVPSolver or one of {('auto', *sorted(SOLVERS))}, got {spec!r}")
    return SOLVERS[spec]()
