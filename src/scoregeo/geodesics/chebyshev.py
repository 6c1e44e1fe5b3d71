"""Chebyshev spectral tools on [0, 1]: nodes, differentiation, quadrature, interpolation.

Nodes are the Chebyshev–Lobatto points τ_j = (1 − cos(πj/N)) / 2, j = 0 … N,
increasing from 0 to 1. Formulas: Trefethen, *Spectral Methods in MATLAB*
(differentiation matrix, Clenshaw–Curtis weights) and Berrut & Trefethen,
*Barycentric Lagrange interpolation* (SIAM Review 2004).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ChebyshevGrid:
    """N + 1 Chebyshev–Lobatto nodes on [0, 1] with the operators that act on values there.

    Attributes:
        nodes: (N+1,) τ_0 = 0 < … < τ_N = 1.
        diff: (N+1, N+1) D with (D f)(τ_j) = f′(τ_j) for the interpolant of f.
        weights: (N+1,) Clenshaw–Curtis weights: Σ w_j f(τ_j) ≈ ∫₀¹ f dτ.
        barycentric: (N+1,) barycentric interpolation weights (−1)^j, halved at the ends.
    """

    nodes: torch.Tensor
    diff: torch.Tensor
    weights: torch.Tensor
    barycentric: torch.Tensor

    @property
    def order(self) -> int:
        """N, the polynomial degree."""
        return self.nodes.shape[0] - 1


def chebyshev_grid(order: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> ChebyshevGrid:
    """The :class:`ChebyshevGrid` of polynomial degree ``order`` (>= 2)."""
    n = order
    j = torch.arange(n + 1, dtype=torch.float64)
    theta = math.pi * j / n
    x = -torch.cos(theta)  # −1 … 1, increasing; τ = (x + 1) / 2
    sign = torch.where(j % 2 == 0, 1.0, -1.0).to(torch.float64)
    bary = sign.clone()  # barycentric weights (−1)^j, halved at the ends
    bary[0] *= 0.5
    bary[-1] *= 0.5
    diffs = x[:, None] - x[None, :] + torch.eye(n + 1, dtype=torch.float64)
    D = (bary[None, :] / bary[:, None]) / diffs
    D = D - torch.diag(D.sum(1))  # negative-sum trick: rows of D annihilate constants exactly
    k = torch.arange(1, n // 2 + 1, dtype=torch.float64)
    b = torch.where(2 * k == n, 1.0, 2.0).to(torch.float64)
    cos_terms = torch.cos(2 * k[None, :] * theta[:, None]) * (b / (4 * k**2 - 1))[None, :]
    w = (1 - cos_terms.sum(1)) * 2 / n
    w[0] = w[-1] = 1.0 / (n * n - 1) if n % 2 == 0 else 1.0 / (n * n)
    return ChebyshevGrid(
        nodes=((x + 1) / 2).to(dtype=dtype, device=device),
        diff=(2 * D).to(dtype=dtype, device=device),
        weights=(w / 2).to(dtype=dtype, device=device),
        barycentric=bary.to(dtype=dtype, device=device),
    )


def interpolate(grid: ChebyshevGrid, values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Evaluate the interpolant of ``values`` (B, N+1, k) at ``targets`` (B, m) or (m,) in [0, 1] → (B, m, k).

    Barycentric formula of the second kind; a target on a node returns that node's value exactly.
    """
    if targets.ndim == 1:
        targets = targets.expand(values.shape[0], -1)
    gaps = targets[..., :, None] - grid.nodes  # (B, m, N+1)
    exact = gaps == 0
    kernel = grid.barycentric / torch.where(exact, torch.ones_like(gaps), gaps)
    blended = (kernel @ values) / kernel.sum(-1, keepdim=True)
    hit = exact.any(-1, keepdim=True)
    on_node = exact.to(values.dtype) @ values
    return torch.where(hit, on_node, blended)


def resample_polylines(curves: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Points of polylines (B, m, d) at fractions ``targets`` (n,) of their Euclidean arc length → (B, n, d)."""
    seg = (curves[:, 1:] - curves[:, :-1]).norm(dim=-1)
    cum = torch.cat([torch.zeros_like(seg[:, :1]), seg.cumsum(-1)], -1)
    total = cum[:, -1:].clamp_min(torch.finfo(curves.dtype).tiny)
    arc = cum / total  # (B, m) from 0 to 1
    goal = targets.expand(curves.shape[0], -1).contiguous()
    right = torch.searchsorted(arc.contiguous(), goal, right=True).clamp(1, curves.shape[1] - 1)
    left = right - 1
    a0, a1 = arc.gather(1, left), arc.gather(1, right)
    frac = ((goal - a0) / (a1 - a0).clamp_min(torch.finfo(curves.dtype).tiny)).clamp(0, 1).unsqueeze(-1)
    pick = lambda idx: curves.gather(1, idx.unsqueeze(-1).expand(-1, -1, curves.shape[-1]))  # noqa: E731
    return pick(left) + frac * (pick(right) - pick(left))
