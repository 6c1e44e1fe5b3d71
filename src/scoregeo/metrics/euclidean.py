"""The flat metric G = I."""

from __future__ import annotations

import torch

from .base import Metric


class Euclidean(Metric):
    """The Euclidean metric on R^d: straight lines are geodesics."""

    def _matrix(self, x: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        return eye.expand(*x.shape[:-1], self.dim, self.dim)

    def _inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u * v).sum(-1)

    def _acceleration(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(torch.broadcast_tensors(x, v)[0])

    def _christoffel(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(*x.shape[:-1], self.dim, self.dim, self.dim)
