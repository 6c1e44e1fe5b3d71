"""The score of any log-density, by automatic differentiation."""

from __future__ import annotations

from typing import Callable

import torch
from torch.func import grad

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def score_of(log_prob: Callable[[torch.Tensor], torch.Tensor]) -> ScoreFn:
    """Return s(x) = ∇x log p(x) for a log-density callable.

    ``log_prob`` maps points (..., d) to log-densities (...), each value depending
    only on its own point (no coupling across the batch). The returned callable
    maps (..., d) to (..., d). It is built with ``torch.func.grad``, so it composes
    with ``jvp``/``vjp``/``vmap`` (the geodesic solvers differentiate it again).
    An unnormalised log-density gives the same score.
    """
    if not callable(log_prob):
        raise ValueError(f"log_prob must be callable, got {type(log_prob).__name__}")

    summed_grad = grad(lambda x: log_prob(x).sum())

    def score(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 0:
            raise ValueError("x must have shape (..., d), got a scalar")
        return summed_grad(x)

    score.__doc__ = f"Score of {getattr(log_prob, '__qualname__', repr(log_prob))} by autograd."
    score.symmetric_jacobian = True  # a gradient field: ScoreMetric skips the Jᵀv pass
    return score
