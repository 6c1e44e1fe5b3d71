"""The inverse score metric G(x) = (α I + λ s(x) s(x)ᵀ)⁻¹."""

from __future__ import annotations

import torch

from .._checks import check_nonnegative, check_positive
from .score import ScoreMetric


class InverseScoreMetric(ScoreMetric):
    """G(x) = (α I + λ s sᵀ)⁻¹ = (1/α) (I − λ s sᵀ / (α + λ |s|²)) for a score field s (α > 0).

    What it measures: the reverse of :class:`~scoregeo.ScoreMetric`. Moving
    across the level sets of log p (along s) costs 1/(α + λ|s|²) per unit
    squared instead of α + λ|s|², moving along them costs 1/α: where the
    density changes fast, curves are cheap along the score, so geodesics run
    down the score towards the modes and along the steep walls of the density
    rather than following its contours. It degenerates where λ|s|² ≫ α: the
    direction of s becomes nearly free, and distances between points on the
    same steep score line collapse towards 0.

    Every operation is closed-form (Sherman–Morrison both ways, no d×d matrix);
    ``dim`` may be left out for a score source. The geodesic acceleration is the
    base class's matrix-free −G⁻¹ Γ♭(v, v) from one JVP and one VJP of G(x)v.
    """

    def __init__(self, score, dim: int | None = None, lam: float = 1.0, alpha: float = 1.0,
                 symmetric_jacobian: bool | None = None):
        check_positive(alpha, "alpha")  # G = (αI + λ s sᵀ)⁻¹ needs α > 0
        check_nonnegative(lam, "lam")
        super().__init__(score, dim, lam=lam, alpha=alpha, symmetric_jacobian=symmetric_jacobian)

    def _matrix(self, x: torch.Tensor) -> torch.Tensor:
        s = self._s(x)
        eye = torch.eye(self.dim, dtype=s.dtype, device=s.device)
        c = self._shrink(s).unsqueeze(-1)
        return (eye - c * (s.unsqueeze(-1) * s.unsqueeze(-2))) / self.alpha

    def _shrink(self, s: torch.Tensor) -> torch.Tensor:
        """c = λ / (α + λ|s|²), (..., 1): G = (I − c s sᵀ)/α."""
        return self.lam / (self.alpha + self.lam * (s * s).sum(-1, keepdim=True))

    def _apply(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        s = self._s(x)
        return (v - self._shrink(s) * (s * v).sum(-1, keepdim=True) * s) / self.alpha

    def _solve(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        s = self._s(x)  # G⁻¹ = α I + λ s sᵀ
        return self.alpha * b + self.lam * (s * b).sum(-1, keepdim=True) * s

    def _inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        s = self._s(x)
        s_u, s_v = (s * u).sum(-1, keepdim=True), (s * v).sum(-1, keepdim=True)
        return ((u * v).sum(-1, keepdim=True) - self._shrink(s) * s_u * s_v).squeeze(-1) / self.alpha

    def _low_rank(self, x: torch.Tensor):
        return None  # a scaled identity minus a rank-one term: no αI + UᵀU form

    def _acceleration(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return super(ScoreMetric, self)._acceleration(x, v)  # the base class's matrix-free form

    def __repr__(self) -> str:
        return f"InverseScoreMetric(dim={self.dim}, lam={self.lam}, alpha={self.alpha})"
