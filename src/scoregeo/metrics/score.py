"""The score metric g(x) = α I + λ s(x) s(x)ᵀ of a Stein score field s."""

from __future__ import annotations

from typing import Callable

import torch
from torch.func import vjp

from .._checks import check_nonnegative
from .base import Metric

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


class ScoreMetric(Metric):
    """Metric g(x) = α I + λ s(x) s(x)ᵀ built from a score field s: (..., d) → (..., d).

    The score may be analytic (``Gaussian.score``), come from a log-density
    (``sg.score_of``) or be a learned network; it must be differentiable with
    ``torch.func`` and act on each point independently.

    ``inner``, ``norm`` and ``acceleration`` never form a d×d matrix. The
    acceleration uses the closed form (J = ∂s/∂x, not assumed symmetric, so it is
    exact for learned non-conservative fields too)::

        Γ♭(v, v) = λ [ (vᵀ J v) s + (s·v) (J − Jᵀ) v ]
        ẍ = −G⁻¹ Γ♭,   G⁻¹ = (1/α) (I − λ s sᵀ / (α + λ |s|²))

    with s, Jᵀv and Jv from one VJP of s and one VJP of that VJP (the transpose
    trick), about three score evaluations whatever d is.

    ``alpha=0`` is the pure rank-one metric s sᵀ: ``inner`` and ``norm`` work
    (the length of a curve is then the total variation of log p along it), but
    geodesic solvers refuse it because G is singular.
    """

    def __init__(self, score: ScoreFn, dim: int, lam: float = 1.0, alpha: float = 1.0):
        super().__init__(dim)
        if not callable(score):
            raise ValueError(f"score must be callable, got {type(score).__name__}")
        self.score = score
        self.lam = check_nonnegative(lam, "lam")
        self.alpha = check_nonnegative(alpha, "alpha")
        if self.alpha == 0 and self.lam == 0:
            raise ValueError("alpha and lam cannot both be 0: the metric would vanish")

    def check_solvable(self) -> None:
        if self.alpha == 0:
            raise ValueError(
                "alpha=0 gives the degenerate metric λ s sᵀ (rank one, singular): the length of any curve is "
                "the total variation of log p along it, so geodesics are not unique and the geodesic equation "
                "has no solution; use alpha > 0 (for example alpha=1.0) for geodesics, distances and curvature"
            )

    def _matrix(self, x: torch.Tensor) -> torch.Tensor:
        s = self.score(x)
        eye = torch.eye(self.dim, dtype=s.dtype, device=s.device)
        return self.alpha * eye + self.lam * s.unsqueeze(-1) * s.unsqueeze(-2)

    def _inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        s = self.score(x)
        return self.alpha * (u * v).sum(-1) + self.lam * (s * u).sum(-1) * (s * v).sum(-1)

    def _acceleration(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        x, v = torch.broadcast_tensors(x, v)
        s, pullback = vjp(self.score, x)
        Jt_v, transpose_of_pullback = vjp(lambda u: pullback(u)[0], v)
        (J_v,) = transpose_of_pullback(v)
        vJv = (v * J_v).sum(-1, keepdim=True)
        s_dot_v = (s * v).sum(-1, keepdim=True)
        lowered = self.lam * (vJv * s + s_dot_v * (J_v - Jt_v))
        # Sherman–Morrison: G⁻¹ b = (b − λ s (s·b) / (α + λ|s|²)) / α
        s_dot_b = (s * lowered).sum(-1, keepdim=True)
        denom = self.alpha + self.lam * (s * s).sum(-1, keepdim=True)
        return -(lowered - self.lam * s * s_dot_b / denom) / self.alpha

    def __repr__(self) -> str:
        return f"ScoreMetric(dim={self.dim}, lam={self.lam}, alpha={self.alpha})"
