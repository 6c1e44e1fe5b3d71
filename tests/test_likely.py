"""Curves of least action with the likelihood potential, against the closed form of a Gaussian."""

from __future__ import annotations

import math

import pytest
import torch

import scoregeo as sg
from scoregeo.geodesics import likely_curve

F64 = torch.float64


def test_euclidean_action_with_a_gaussian_potential_is_the_hyperbolic_interpolation():
    """G = I, log p = −|x|²/(2σ²) + c: the Euler–Lagrange equation 2ẍ = λ_S x/σ² gives
    x(t) = [sinh(ω(1 − t)) x0 + sinh(ωt) x1] / sinh ω, ω² = λ_S/(2σ²). The midpoint discretisation
    errs by O(1/n²): the error must shrink about fourfold when n − 1 doubles."""
    sigma, lam_s = 0.8, 6.0
    gaussian = sg.Gaussian(torch.zeros(2, dtype=F64), sigma**2 * torch.eye(2, dtype=F64))
    x0, x1 = torch.tensor([-1.5, 0.6], dtype=F64), torch.tensor([1.2, 1.0], dtype=F64)
    omega = math.sqrt(lam_s / (2 * sigma**2))
    errors = []
    # gtol 1e-6: L-BFGS reaches ~1e-6 … 1e-8 here; measured, the curves then move by < 1e-6 between
    # gtol 1e-5 and 1e-6, far below the discretisation error (1.6e-4 at n = 33, 4.0e-5 at n = 65)
    for n in (33, 65):
        curve = likely_curve(sg.Euclidean(2), gaussian.log_prob, x0, x1, lam_s, n_points=n, gtol=1e-6, max_iter=5000)
        assert bool(curve.converged)
        t = torch.linspace(0, 1, n, dtype=F64)[:, None]
        exact = (torch.sinh(omega * (1 - t)) * x0 + torch.sinh(omega * t) * x1) / math.sinh(omega)
        errors.append(float((curve.points - exact).abs().max()))
    assert errors[1] < 2e-3 and 3.0 < errors[0] / errors[1] < 5.0, errors


def test_zero_weight_gives_the_geodesic_and_a_weight_pulls_into_high_density():
    p = sg.GaussianMixture(torch.tensor([[0.0, -1.3], [0.0, 1.3]], dtype=F64), 0.5 * torch.eye(2, dtype=F64))
    metric = sg.ScoreMetric(p.score, 2, lam=2.0)
    x0, x1 = torch.tensor([-2.0, 0.4], dtype=F64), torch.tensor([2.0, -0.2], dtype=F64)
    plain = likely_curve(metric, p.log_prob, x0, x1, 0.0, n_points=33)
    geodesic = sg.geodesic(metric, x0, x1, solver=sg.geodesics.EnergySolver(), n_points=33)
    torch.testing.assert_close(plain.points, geodesic.points, rtol=0, atol=1e-4)
    pulled = likely_curve(metric, p.log_prob, x0, x1, 20.0, n_points=33)
    assert float(pulled.mean_neg_log_prob) < float(plain.mean_neg_log_prob)
    assert float(pulled.energy) > float(plain.energy)  # it pays in energy for the likelihood


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="lam_s must be a finite number >= 0"):
        likely_curve(sg.Euclidean(2), lambda x: -x.pow(2).sum(-1), torch.zeros(2), torch.ones(2), -1.0)
    with pytest.raises(ValueError, match="n_points"):
        likely_curve(sg.Euclidean(2), lambda x: -x.pow(2).sum(-1), torch.zeros(2), torch.ones(2), 1.0, n_points=2)
