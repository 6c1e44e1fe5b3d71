"""A metric given by any user function x ↦ G(x)."""

from __future__ import annotations

from typing import Callable

import torch

from .._checks import check_finite
from .base import Metric, cholesky_checked


class MatrixMetric(Metric):
    """Metric from a callable ``fn`` mapping x (..., d) to G(x) (..., d, d).

    G must be symmetric positive-definite wherever it is evaluated; ``matrix``
    checks this (symmetry to a relative 1e-8, positive-definiteness by Cholesky)
    and raises a ``ValueError`` naming the point where it fails. Christoffel
    symbols and geodesic accelerations come from automatic differentiation of
    ``fn``, so ``fn`` must be written with differentiable torch operations.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], dim: int):
        super().__init__(dim)
        if not callable(fn):
            raise ValueError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn

    def matrix(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x=x)
        G = self._matrix(x)
        self._check_spd(G, x)
        return G

    def _matrix(self, x: torch.Tensor) -> torch.Tensor:
        G = self.fn(x)
        expected = (*x.shape[:-1], self.dim, self.dim)
        if tuple(G.shape) != expected:
            raise ValueError(f"fn must map x of shape {tuple(x.shape)} to G of shape {expected}, got {tuple(G.shape)}")
        return G

    @staticmethod
    def _check_spd(G: torch.Tensor, x: torch.Tensor) -> None:
        check_finite(G, "G(x)")
        asym = (G - G.transpose(-1, -2)).abs().amax(dim=(-1, -2))
        scale = G.abs().amax(dim=(-1, -2)).clamp_min(torch.finfo(G.dtype).tiny)
        bad = asym > 1e-8 * scale
        if bool(bad.any()):
            idx = tuple(bad.nonzero()[0].tolist())
            raise ValueError(f"metric matrix G(x) is not symmetric at x = {x[idx].tolist()} (batch index {idx})")
        cholesky_checked(G, x)
