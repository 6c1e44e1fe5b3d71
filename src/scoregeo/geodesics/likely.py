"""Curves of least action under a metric and the likelihood potential: the "likely geometry" of Rygaard et al.

A geodesic minimises the energy ∫ ẋᵀ G ẋ dt alone, and so may cross regions
of low density if the metric does not forbid them. Adding the potential
λ_S (−log p(x)) gives the action

    A[x] = ∫₀¹ ẋᵀ G(x) ẋ + λ_S (−log p(x)) dt,

whose minimisers trade length for likelihood: for λ_S → 0 they are geodesics,
for large λ_S they are pulled into high density. On a grid of n points the
action is discretised by the midpoint rule,
A ≈ N Σ ⟨Δᵢ, G(mᵢ) Δᵢ⟩ + (λ_S/N) Σ (−log p(mᵢ)), N = n − 1, and minimised by
the same L-BFGS as the "energy" solver (error O(1/n²)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .._checks import check_nonnegative, check_positive_int
from ..metrics import Metric
from .discrete import discrete_energy
from .energy import minimize_energy
from .interpolation import lerp
from .ivp import validated_points


@dataclass
class LikelyCurve:
    """A curve of least action (...): its points (..., n, d), action, energy part, mean −log p, convergence."""

    points: torch.Tensor
    action: torch.Tensor
    energy: torch.Tensor
    mean_neg_log_prob: torch.Tensor
    converged: torch.Tensor
    gradient_norm: torch.Tensor


def likely_curve(
    metric: Metric,
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    x1: torch.Tensor,
    lam_s: float,
    n_points: int = 64,
    gtol: float | None = None,
    max_iter: int = 2000,
) -> LikelyCurve:
    """The curve from x0 to x1 (..., d) minimising ∫ ẋᵀGẋ + λ_S (−log p(x)) dt (see the module docstring).

    Args:
        metric: any metric (``sg.Euclidean(d)`` for the plain likelihood-weighted curves).
        log_prob: (..., d) → (...), differentiable.
        lam_s: λ_S >= 0, the weight of the potential (0 gives the discrete geodesic).
        n_points: points of the curve (>= 3), uniform in t.
        gtol, max_iter: as for the "energy" solver (``minimize_energy``).
    """
    x0, x1 = validated_points(metric, x0, x1, ("x0", "x1"))
    lam_s = check_nonnegative(lam_s, "lam_s")
    n_points = check_positive_int(n_points, "n_points", minimum=3)
    if not callable(log_prob):
        raise ValueError(f"log_prob must be callable, got {type(log_prob).__name__}")
    batch = x0.shape[:-1]
    a, b = x0.reshape(-1, metric.dim), x1.reshape(-1, metric.dim)

    def mean_surprisal(points: torch.Tensor) -> torch.Tensor:
        mids = 0.5 * (points[:, 1:] + points[:, :-1])
        return -log_prob(mids).mean(-1)

    def potential(points: torch.Tensor) -> torch.Tensor:
        return lam_s * mean_surprisal(points)

    solved = minimize_energy(metric, lerp(a, b, n_points), gtol=gtol, max_iter=max_iter, potential=potential)
    with torch.no_grad():
        energy = discrete_energy(metric, solved.points)
        surprisal = mean_surprisal(solved.points)
    shape = lambda t: t.reshape(batch + t.shape[1:])  # noqa: E731
    return LikelyCurve(points=shape(solved.points), action=shape(energy + lam_s * surprisal), energy=shape(energy),
                       mean_neg_log_prob=shape(surprisal), converged=shape(solved.converged),
                       gradient_norm=shape(solved.gradient_norm))
