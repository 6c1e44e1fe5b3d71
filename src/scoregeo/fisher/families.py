"""The Fisher information F(θ) of a parametric family of torch distributions, factored for its uses."""

from __future__ import annotations

import torch

from ..metrics.base import _first_bad, describe_point
from ..metrics.fisher_rao import Family, FisherRaoMetric


def fisher_cholesky(
    family: Family, theta: torch.Tensor, mc_samples: int | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Lower Cholesky factor (..., k, k) of F(θ) = ``FisherRaoMetric(family, k).matrix(θ)``, symmetrised.

    Raises a ValueError naming the first θ where F is singular or not
    positive-definite (a redundant parameterisation, or θ on the family's boundary).
    """
    if not isinstance(theta, torch.Tensor) or theta.ndim == 0:
        got = tuple(theta.shape) if isinstance(theta, torch.Tensor) else type(theta).__name__
        raise ValueError(f"theta must be a torch.Tensor of shape (..., k), got {got}")
    fisher = FisherRaoMetric(family, theta.shape[-1], mc_samples=mc_samples, generator=generator).matrix(theta)
    factor, info = torch.linalg.cholesky_ex((fisher + fisher.mT) / 2)
    if bool((info != 0).any()):
        index = _first_bad(info != 0)
        raise ValueError(
            f"the Fisher information is singular or not positive-definite at theta = {describe_point(theta[index])} "
            f"(batch index {index}): θ is not identifiable there (a redundant parameter, or θ on the boundary "
            "of the family?)"
        )
    return factor
