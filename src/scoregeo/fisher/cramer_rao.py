"""The Cramér–Rao bound F(θ)⁻¹ / n of a parametric family of torch distributions."""

from __future__ import annotations

from numbers import Integral

import torch

from .families import fisher_cholesky

__all__ = ["cramer_rao_bound"]


def cramer_rao_bound(family, theta: torch.Tensor, n: int, *, mc_samples: int | None = None, generator=None):
    """Cramér–Rao lower bound F(θ)⁻¹ / n on the covariance of an unbiased estimator of θ.

    For n i.i.d. observations of p_θ the Fisher information is n·F(θ), so every
    unbiased estimator θ̂ has Cov(θ̂) ⪰ F(θ)⁻¹ / n (in the Loewner order).

    Args:
        family: maps θ (..., k) to a ``torch.distributions.Distribution`` with
            batch shape (...) (as for ``sg.FisherRaoMetric``), e.g.
            ``lambda t: Normal(t[..., 0], t[..., 1])``.
        theta: (k,) or (..., k) parameter values.
        n: number of observations, an integer >= 1.
        mc_samples, generator: passed to ``sg.FisherRaoMetric`` for families
            without a closed-form KL divergence (Monte Carlo Fisher).

    Returns:
        (..., k, k): F(θ)⁻¹ / n, with F(θ) = ``FisherRaoMetric(family, k).matrix(theta)``
        (the Hessian of the closed-form KL divergence).

    Raises:
        ValueError: n not an integer >= 1, theta not a floating (..., k) tensor,
        or a singular Fisher information (θ not identifiable there).
    """
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (the number of i.i.d. observations), got {n!r}")
    if not isinstance(theta, torch.Tensor) or theta.ndim == 0 or not theta.is_floating_point():
        raise ValueError("theta must be a floating-point tensor of shape (k,) or (..., k)")
    return torch.cholesky_inverse(fisher_cholesky(family, theta, mc_samples, generator)) / int(n)
