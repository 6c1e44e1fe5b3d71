"""Shared matrix-free linear algebra: conjugate gradient for symmetric positive-definite operators.

One implementation serves the metrics (G(x)⁻¹ b for a batch of points, reduction
over the last dimension) and the Fisher curvature operators ((F + λI)⁻¹ V,
column-wise, reduction over the first dimension).
"""

from __future__ import annotations

import warnings
from typing import Callable, NamedTuple

import torch

__all__ = ["CGResult", "NotPositiveDefiniteError", "conjugate_gradient", "default_rtol"]


class CGResult(NamedTuple):
    """Outcome of :func:`conjugate_gradient`.

    Attributes:
        solution: X with the shape of B.
        residual: ‖B − A X‖ / ‖B‖ per system (the true residual, recomputed at
            the end; 0 where B = 0), shape of B without the reduced dimension.
        converged: per system (bool, same shape), the recursive residual that
            stops the iteration reached rtol and the recomputed one is ≤ 10·rtol
            (the factor allows the drift between the two in finite precision).
        iterations: number of iterations run (for the slowest system).
    """

    solution: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    iterations: int


class NotPositiveDefiniteError(ValueError):
    """Conjugate gradient met pᵀ A p ≤ 0: A is not positive-definite.

    ``index`` is the index (a tuple over the non-reduced dimensions of B) of the
    first system where it happened.
    """

    def __init__(self, message: str, index: tuple[int, ...]):
        super().__init__(message)
        self.index = index


def default_rtol(dtype: torch.dtype) -> float:
    """Relative residual targeted by default: 1e-10 in float64, 1e-5 in lower precision."""
    return 1e-10 if dtype == torch.float64 else 1e-5


def conjugate_gradient(
    apply: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    *,
    dim: int = -1,
    rtol: float | None = None,
    max_iter: int | None = None,
    on_failure: str = "warn",
    hint: str = "",
) -> CGResult:
    """Solve A X = B for a symmetric positive-definite A given only as a product.

    Many independent systems are solved at once: ``dim`` is the dimension of B
    that holds one right-hand side; every other dimension indexes systems (points
    for a metric, columns for a Fisher operator). Each system stops on its own
    (its step sizes are zeroed once ‖r‖ ≤ rtol·‖b‖), so one system's answer does
    not depend on the others in the batch.

    Args:
        apply: X ↦ A X on tensors shaped like B; it must act on each system
            independently.
        b: right-hand sides.
        dim: the dimension of B that holds one vector.
        rtol: target ‖B − A X‖ ≤ rtol·‖B‖ per system (default
            :func:`default_rtol` of B's dtype).
        max_iter: iteration cap (default min(2n + 100, 10 000), n = B.shape[dim]).
        on_failure: what to do when a system misses the tolerance: "warn"
            (``RuntimeWarning`` with the residual reached), "raise"
            (``RuntimeError``) or "ignore" (the caller reads ``converged``).
        hint: appended to the warning or error message (what the caller can do).

    Raises:
        NotPositiveDefiniteError: (a ``ValueError``) when pᵀ A p ≤ 0 for a system
            that has not converged: A is not positive-definite there.

    Returns:
        a :class:`CGResult`.
    """
    if on_failure not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_failure must be 'warn', 'raise' or 'ignore', got {on_failure!r}")
    rtol = default_rtol(b.dtype) if rtol is None else float(rtol)
    if not rtol > 0:
        raise ValueError(f"rtol must be > 0, got {rtol!r}")
    size = b.shape[dim]
    max_iter = min(2 * size + 100, 10_000) if max_iter is None else int(max_iter)
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter!r}")

    def dot(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (u * w).sum(dim, keepdim=True)

    bnorm = dot(b, b).sqrt()
    target = rtol * bnorm
    x = torch.zeros_like(b)
    r = b
    p = r
    rs = dot(r, r)
    one = torch.ones_like(rs)
    iterations = 0
    while iterations < max_iter:
        active = rs.sqrt() > target
        if not bool(active.any()):
            break
        ap = apply(p)
        pap = dot(p, ap)
        bad = active & (pap <= 0)
        if bool(bad.any()):
            index = tuple(bad.squeeze(dim).nonzero()[0].tolist())
            raise NotPositiveDefiniteError(
                f"conjugate gradient met a non-positive curvature pᵀAp = {float(pap[bad][0]):.3e} "
                f"(system {index}): the matrix is not positive definite",
                index,
            )
        alpha = torch.where(active, rs / torch.where(active, pap, one), torch.zeros_like(rs))
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = dot(r, r)
        beta = torch.where(active, rs_new / torch.where(active, rs, one), torch.zeros_like(rs))
        p = r + beta * p
        rs = rs_new
        iterations += 1
    # the recursive residual drifts from the true one in finite precision: recompute it
    left = b - apply(x)
    residual = (dot(left, left).sqrt() / bnorm.clamp_min(torch.finfo(b.dtype).tiny)).squeeze(dim)
    converged = (rs.sqrt() <= target).squeeze(dim) & (residual <= 10 * rtol)
    if on_failure != "ignore" and not bool(converged.all()):
        message = (
            f"conjugate gradient did not converge: relative residual {float(residual.max()):.3e} > rtol {rtol:.1e} "
            f"after {iterations} iterations (max_iter={max_iter})" + (f"; {hint}" if hint else "")
        )
        if on_failure == "raise":
            raise RuntimeError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return CGResult(x, residual, converged, iterations)
