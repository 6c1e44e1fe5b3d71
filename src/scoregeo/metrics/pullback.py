"""The score-Jacobian pullback metric G(x) = α I + λ J(x)ᵀ J(x), J = ∂s/∂x."""

from __future__ import annotations

import torch
from torch.func import jvp, vjp

from .._checks import check_nonnegative, check_positive
from .base import solve_spd
from .score import ScoreFn, ScoreMetric

DENSE_SOLVE_MAX_DIM = 256


class ScoreJacobianMetric(ScoreMetric):
    """G(x) = α I + λ JᵀJ with J = ∂s/∂x the Jacobian of the score field (α > 0), matrix-free.

    What it measures: ‖ẋ‖² = α|ẋ|² + λ |d s(x(t))/dt|², the Euclidean speed plus
    how fast the score changes along the curve. For an exact score J = ∇² log p,
    so moving is expensive where log p is strongly curved (across the thin
    directions of the data, near sharp ridges) and cheap where it is flat; unlike
    the rank-one metric, every direction in which the score varies counts, not
    only the score's own direction. It degenerates where J is constant: for a
    Gaussian, J = −Σ⁻¹ everywhere, G is constant and geodesics are straight lines
    (distances are those of the fixed quadratic form αI + λΣ⁻²).

    G v = α v + λ Jᵀ(J v): one JVP and one VJP of the score, no d×d matrix;
    G⁻¹ b by the base class's conjugate gradient; the geodesic acceleration
    −G⁻¹ λ Jᵀ D²s[v, v] (the pullback form, see ``_acceleration``).
    """

    def __init__(self, score: ScoreFn, dim: int | None = None, lam: float = 1.0, alpha: float = 1.0):
        check_positive(alpha, "alpha")
        check_nonnegative(lam, "lam")
        super().__init__(score, dim, lam=lam, alpha=alpha, symmetric_jacobian=False)

    def _jacobian_products(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(J v, Jᵀ J v) at x, (..., d) each."""
        x, v = (t.contiguous() for t in torch.broadcast_tensors(x, v))
        _, j_v = jvp(self._s, (x,), (v,))
        _, pullback = vjp(self._s, x)
        return j_v, pullback(j_v)[0]

    def _matrix(self, x: torch.Tensor) -> torch.Tensor:
        jacobian = torch.func.vmap(torch.func.jacrev(self._s))(x.reshape(-1, self.dim)).reshape(*x.shape, self.dim)
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        return self.alpha * eye + self.lam * jacobian.mT @ jacobian

    def _apply(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.alpha * v + self.lam * self._jacobian_products(x, v)[1]

    def _inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        x, u, v = torch.broadcast_tensors(x, u, v)
        j_u = jvp(self._s, (x.contiguous(),), (u.contiguous(),))[1]
        j_v = jvp(self._s, (x.contiguous(),), (v.contiguous(),))[1]
        return self.alpha * (u * v).sum(-1) + self.lam * (j_u * j_v).sum(-1)

    def _solve(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """G⁻¹ b: Cholesky of the dense G for d ≤ ``DENSE_SOLVE_MAX_DIM``, else conjugate gradient on G v.

        G = αI + λJᵀJ is badly conditioned (λ|J|² ≈ λ/σ⁴ for a score at noise
        level σ), so conjugate gradient needs on the order of d iterations of a
        JVP and a VJP each, and geodesic solvers differentiate through all of
        them; the dense J costs d VJPs in one batched call.
        """
        if self.dim <= DENSE_SOLVE_MAX_DIM:
            x, b = torch.broadcast_tensors(x, b)
            return solve_spd(self._matrix(x), b, x, checked=True)  # α > 0: G is positive-definite
        return super(ScoreMetric, self)._solve(x, b)

    def _low_rank(self, x: torch.Tensor):
        return None

    def _acceleration(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """−G⁻¹ Γ♭(v, v) with Γ♭(v, v) = λ Jᵀ D²s[v, v].

        G is the pullback of the Euclidean metric by f(x) = (√α x, √λ s(x)), and
        for any pullback G = DfᵀDf the lowered contraction is Dfᵀ D²f[v, v]: the
        terms with ∂J cancel (for any smooth field s, not only gradients).
        D²s[v, v] is a JVP of a JVP, Jᵀ(·) one VJP, then conjugate gradient.
        """
        x, v = (t.contiguous() for t in torch.broadcast_tensors(x, v))

        def along_v(y: torch.Tensor) -> torch.Tensor:
            return jvp(self._s, (y,), (v,))[1]

        _, second_derivative = jvp(along_v, (x,), (v,))
        _, pullback = vjp(self._s, x)
        return -self._solve(x, self.lam * pullback(second_derivative)[0])

    def __repr__(self) -> str:
        return f"ScoreJacobianMetric(dim={self.dim}, lam={self.lam}, alpha={self.alpha})"
