"""The flat metric G = I."""

from __future__ import annotations

import torch

from .base import Metric


class Euclidean(Metric):
    """The Euclidean metric on R^d: G = I, straight lines are geodesics; every point is in the domain."""

    def _matrix(self, x: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        return eye.expand(*x.shape[:-1], self.dim, self.dim)

    def _apply(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return v.expand(torch.broadcast_shapes(x.shape, v.shape)).clone()

    def _solve(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return b.expand(torch.broadcast_shapes(x.shape, b.shape)).clone()

    def _inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u * v).sum(-1).expand(torch.broadcast_shapes(x.shape, u.shape, v.shape)[:-1])

    def _acceleration(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(torch.broadcast_tensors(x, v)[0])

    def _low_rank(self, x: torch.Tensor) -> tuple[float, torch.Tensor]:
        return 1.0, x.new_zeros(*x.shape[:-1], 0, self.dim)

    def _check_domain(self, x: torch.Tensor, name: str) -> None:
        """Every finite point is in the domain (finiteness is checked by ``check_domain``)."""

    def _christoffel(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(*x.shape[:-1], self.dim, self.dim, self.dim)
