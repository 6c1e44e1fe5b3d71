"""Jeffreys priors (``sg.jeffreys_log_prior``): ½ log det F(θ) against closed forms.

Closed forms of the Fisher information (per observation): Normal(μ, σ):
diag(1/σ², 2/σ²), so √det F = √2/σ²; Bernoulli(p): 1/(p(1 − p)); Poisson(λ): 1/λ;
Exponential(rate λ): 1/λ²; Student-t location μ with ν degrees of freedom and
scale s (no closed-form KL in torch, so Monte Carlo): (ν + 1)/((ν + 3) s²).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Exponential, Normal, Poisson, StudentT

import scoregeo as sg

F64 = torch.float64


@pytest.mark.parametrize(
    "family, theta, expected",
    [
        (lambda t: Normal(t[..., 0], t[..., 1]), [[0.3, 0.5], [-2.0, 1.7]],
         lambda t: 0.5 * math.log(2.0) - 2 * t[..., 1].log()),
        (lambda t: Bernoulli(probs=t[..., 0]), [[0.1], [0.5], [0.93]], lambda t: -0.5 * (t[..., 0] * (1 - t[..., 0])).log()),
        (lambda t: Poisson(t[..., 0]), [[0.2], [3.0], [40.0]], lambda t: -0.5 * t[..., 0].log()),
        (lambda t: Exponential(t[..., 0]), [[0.05], [1.0], [7.5]], lambda t: -t[..., 0].log()),
    ],
    ids=["normal", "bernoulli", "poisson", "exponential"],
)
def test_closed_forms(family, theta, expected):
    """Exact mode (KL Hessian): agreement to rounding error."""
    theta = torch.tensor(theta, dtype=F64)
    got = sg.jeffreys_log_prior(family, theta)
    assert got.shape == theta.shape[:-1]
    torch.testing.assert_close(got, expected(theta), rtol=1e-12, atol=1e-12)


def test_batched_over_leading_dimensions():
    theta = torch.rand(3, 4, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) + 0.1
    family = lambda t: Normal(t[..., 0], t[..., 1])  # noqa: E731
    got = sg.jeffreys_log_prior(family, theta)
    assert got.shape == (3, 4)
    torch.testing.assert_close(got[1, 2], sg.jeffreys_log_prior(family, theta[1, 2]))


def test_monte_carlo_for_a_family_without_a_closed_form_kl():
    """Student-t location: the Monte Carlo log-density within 0.015 of ½ log((ν + 1)/((ν + 3) s²)).

    The per-sample score² of a t(ν = 5) location has relative standard deviation
    0.83 (measured on 2·10⁶ draws), so with 20 000 samples F errs by about 0.6%
    (one standard error) and ½ log F by about 0.003: 0.015 is five standard errors.
    """
    nu, scale = 5.0, 0.7
    family = lambda t: StudentT(nu, t[..., 0], scale)  # noqa: E731
    theta = torch.tensor([[0.0], [2.5]], dtype=F64)
    got = sg.jeffreys_log_prior(family, theta, mc_samples=20_000, generator=torch.Generator().manual_seed(0))
    expected = 0.5 * math.log((nu + 1) / ((nu + 3) * scale**2))
    torch.testing.assert_close(got, torch.full((2,), expected, dtype=F64), rtol=0, atol=0.015)


def test_a_redundant_parameterisation_is_refused():
    """Normal(θ₀ + θ₁, 1) has a singular Fisher information: no Jeffreys density."""
    theta = torch.tensor([[0.0, 1.0], [1.0, 2.0]], dtype=F64)
    with pytest.raises(ValueError, match=r"Fisher information is singular or not positive-definite at theta = \[0.0, 1.0\]"):
        sg.jeffreys_log_prior(lambda t: Normal(t[..., 0] + t[..., 1], 1.0), theta)


@pytest.mark.parametrize(
    "theta, match",
    [
        (torch.tensor([[0.1, float("nan")]], dtype=F64), "NaN"),
        (torch.tensor([[1, 2]]), "float32 or float64"),
        (torch.tensor(0.5, dtype=F64), r"shape \(\.\.\., k\)"),
        ([0.1, 0.5], "torch.Tensor"),
    ],
)
def test_bad_theta(theta, match):
    with pytest.raises(ValueError, match=match):
        sg.jeffreys_log_prior(lambda t: Normal(t[..., 0], t[..., 1]), theta)
