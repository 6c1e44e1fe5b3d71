"""Jeffreys priors: the log-density ½ log det F(θ) of a parametric family's Fisher information."""

from __future__ import annotations

import torch

from ..metrics.fisher_rao import Family
from .families import fisher_cholesky


def jeffreys_log_prior(
    family: Family,
    theta: torch.Tensor,
    mc_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Unnormalised log-density of the Jeffreys prior, ½ log det F(θ), at θ (..., k); returns (...).

    The Jeffreys prior p(θ) ∝ √det F(θ) is invariant under reparametrisation;
    it is usually improper, so only differences of this log-density carry
    meaning (it is not normalised, and no constant is added).

    Args:
        family: maps θ (..., k) to a ``torch.distributions.Distribution`` with
            batch shape (...), as for :class:`~scoregeo.FisherRaoMetric`.
        theta: parameters (..., k), float32 or float64, finite.
        mc_samples, generator: Monte Carlo estimate of F for families with no
            closed-form KL divergence in torch (otherwise F is the exact Hessian
            of the KL divergence and these are unused). The Monte Carlo log-density
            is stochastic, with error O(1/√mc_samples).

    Raises:
        ValueError: when F(θ) is singular or not positive-definite at a point
            (a redundant parameterisation, or θ on the boundary of the family),
            naming the point.
    """
    return fisher_cholesky(family, theta, mc_samples, generator).diagonal(dim1=-2, dim2=-1).log().sum(-1)
