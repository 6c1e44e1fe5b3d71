"""Log-densities from a noise-conditional score, by the probability-flow ODE.

Let p_σ = p_data * N(0, σ² I) and s(x, σ) = ∇ log p_σ(x) (the convention of
scoregeo's noise-conditional models). The probability-flow ODE in σ,

    dx/dσ = −σ s(x, σ),

carries a point x distributed as p_σ₀ at σ₀ to one distributed as p_σ₁ at σ₁,
and along its solution (the instantaneous change of variables)

    d log p_σ(x(σ)) / dσ = σ ∇·s(x(σ), σ),

so log p_σ₀(x) = log p_σ₁(x(σ₁)) − ∫_{σ₀}^{σ₁} σ ∇·s dσ. The prior term
log p_σ₁ is exact when known (tests) and otherwise approximated by
N(0, (σ₁² + v) I) for large σ₁ (v: the data variance per coordinate, if given).

The divergence is exact (d vector-Jacobian products per evaluation: small d) or
Hutchinson's estimate ∇·s ≈ εᵀ (∂s/∂x) ε with ``n_probes`` Rademacher vectors ε,
each held fixed along its own ODE solution (so each probe gives an unbiased
estimate of the whole integral); the result is their mean and its standard
error is reported. The ODE is solved by ``torchdiffeq.odeint`` (dopri5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.func import vjp, vmap
from torchdiffeq import odeint

from .._checks import check_positive, check_positive_int

NoiseScore = Callable[[torch.Tensor, float | torch.Tensor], torch.Tensor]
DIVERGENCES = ("exact", "hutchinson")


@dataclass
class FlowLogProb:
    """Result of :func:`flow_log_prob`, per point (...).

    Attributes:
        log_prob: the estimate of log p_σ₀(x).
        stderr: its standard error over the Hutchinson probes (0 for the exact divergence).
        prior_log_prob: log p_σ₁ at the end of each flow (the prior term).
        end: (..., d) the points x(σ₁).
        evaluations: evaluations of the ODE's right-hand side (each one score forward and
            d (exact) or ``n_probes`` (Hutchinson) vector-Jacobian products).
    """

    log_prob: torch.Tensor
    stderr: torch.Tensor
    prior_log_prob: torch.Tensor
    end: torch.Tensor
    evaluations: int


def flow_log_prob(
    score: NoiseScore,
    x: torch.Tensor,
    sigma: float,
    sigma_max: float,
    prior_log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None,
    divergence: str = "exact",
    n_probes: int = 16,
    generator: torch.Generator | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    data_variance: float = 0.0,
) -> FlowLogProb:
    """log p_σ(x) for points x (..., d) from a noise-conditional score s(x, σ) (see the module docstring).

    Args:
        score: callable (N, d), σ (a float) → (N, d): the score of p_σ.
        x: (..., d) points.
        sigma: σ₀ > 0, the noise level whose log-density is wanted.
        sigma_max: σ₁ > σ₀, where the flow ends and the prior is evaluated.
        prior_log_prob: log p_σ₁, (..., d) → (...); default N(0, (σ₁² + v) I).
        divergence: "exact" or "hutchinson".
        n_probes: Hutchinson probes (>= 2, for the standard error).
        generator: for the probes.
        rtol, atol: tolerances of the ODE solve (also on the log-density).
        data_variance: v, the per-coordinate variance of the data in the default prior.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 1:
        raise ValueError(f"x must be a floating-point tensor of shape (..., d), got {getattr(x, 'shape', type(x))}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or Inf")
    sigma, sigma_max = check_positive(sigma, "sigma"), check_positive(sigma_max, "sigma_max")
    if not sigma_max > sigma:
        raise ValueError(f"sigma_max must be > sigma, got sigma_max={sigma_max!r} <= sigma={sigma!r}")
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    n_probes = check_positive_int(n_probes, "n_probes", minimum=2)
    check_positive(rtol, "rtol")
    check_positive(atol, "atol")
    lead, d = x.shape[:-1], x.shape[-1]
    start = x.reshape(-1, d)
    if divergence == "hutchinson":
        signs = torch.randint(0, 2, (n_probes, *start.shape), generator=generator, dtype=torch.int64)
        probes = (2 * signs - 1).to(start)  # (P, N, d), fixed along the flow
    else:
        probes = torch.eye(d, dtype=start.dtype, device=start.device).unsqueeze(1).expand(d, *start.shape)
    counter = [0]

    def field(level: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        points = state[0]
        with torch.enable_grad():
            values, pullback = vjp(lambda y: score(y, float(level)), points)
            products = vmap(pullback)(probes)[0] * probes  # (P, N, d): εᵀ J ε terms (or rows eᵢᵀ J eᵢ)
        counter[0] += 1
        div = products.sum(-1) if divergence == "hutchinson" else products.sum((0, 2)).unsqueeze(0)
        return -level * values.detach(), level * div.detach()

    levels = torch.tensor([sigma, sigma_max], dtype=start.dtype, device=start.device)
    n_estimates = n_probes if divergence == "hutchinson" else 1
    ends, integrals = odeint(field, (start, start.new_zeros(n_estimates, start.shape[0])), levels,
                             rtol=rtol, atol=atol, method="dopri5")
    end, integral = ends[-1], integrals[-1]  # (N, d), (P, N)
    if prior_log_prob is None:
        variance = sigma_max**2 + float(data_variance)
        prior = -0.5 * (end * end).sum(-1) / variance - 0.5 * d * math.log(2 * math.pi * variance)
    else:
        prior = prior_log_prob(end)
    estimates = prior - integral  # (P, N)
    value = estimates.mean(0)
    stderr = estimates.std(0) / math.sqrt(n_probes) if divergence == "hutchinson" else torch.zeros_like(value)
    return FlowLogProb(value.reshape(lead), stderr.reshape(lead), prior.reshape(lead), end.reshape(*lead, d), counter[0])
