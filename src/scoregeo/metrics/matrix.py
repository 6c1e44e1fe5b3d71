"""A metric given by any user function x ↦ G(x)."""

from __future__ import annotations

from typing import Callable

import torch

from .base import Metric, check_spd, dense_acceleration, solve_spd


class MatrixMetric(Metric):
    """Metric from a callable ``fn`` mapping x (..., d) to G(x) (..., d, d).

    A dense metric: G(x) is formed wherever the metric is used (``matrix``,
    ``apply``, ``inner``, ``norm``, ``solve``, ``acceleration``, Christoffel
    symbols, and the solvers' inner loops through the underscored methods), and
    every time it is checked: finite, symmetric (to a relative 1e-8 in float64;
    see :func:`~scoregeo.metrics.base.check_spd`), and
    positive-definite (Cholesky), with a ``ValueError`` naming the point where it
    fails. ``solve`` is a Cholesky solve. Christoffel symbols and geodesic
    accelerations come from automatic differentiation of ``fn``, so ``fn`` must be
    written with differentiable torch operations.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], dim: int):
        super().__init__(dim)
        if not callable(fn):
            raise ValueError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn

    def _matrix(self, x: torch.Tensor) -> torch.Tensor:
        return self._checked(x, "x")

    def _checked(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """G(x) after its shape and :func:`check_spd` (errors name the point as ``name``)."""
        G = self._shaped(x)
        check_spd(G, x, name)
        return G

    def _shaped(self, x: torch.Tensor) -> torch.Tensor:
        """G(x) after its shape check only."""
        G = self.fn(x)
        expected = (*x.shape[:-1], self.dim, self.dim)
        if not isinstance(G, torch.Tensor) or tuple(G.shape) != expected:
            got = tuple(G.shape) if isinstance(G, torch.Tensor) else type(G).__name__
            raise ValueError(f"fn must map x of shape {tuple(x.shape)} to G of shape {expected}, got {got}")
        return G

    def _check_domain(self, x: torch.Tensor, name: str) -> None:
        self._checked(x, name)

    def _solve(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x, b = torch.broadcast_tensors(x, b)
        return solve_spd(self._matrix(x), b, x, checked=True)

    def _acceleration(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return dense_acceleration(self, x, v, checked=True, again=self._shaped)
