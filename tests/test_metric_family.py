"""The metric family of one score: inverse score metric, conformal density metrics, score-Jacobian pullback.

Oracles: each metric's operators against a dense G(x) built independently, its
geodesic acceleration against dense Christoffel symbols of that G (autodiff),
one-dimensional distances against quadrature of √G, and the pullback metric of
a Gaussian (constant G: straight geodesics, closed-form distance).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

import scoregeo as sg

F64 = torch.float64


def _mixture(d: int) -> sg.GaussianMixture:
    gen = torch.Generator().manual_seed(d)
    means = 1.5 * torch.randn(2, d, generator=gen, dtype=F64)
    factors = 0.5 * torch.randn(2, d, d, generator=gen, dtype=F64)
    return sg.GaussianMixture(means, factors @ factors.mT + 0.4 * torch.eye(d, dtype=F64), torch.tensor([0.6, 0.4], dtype=F64))


def _mlp_field(d: int):
    """A smooth non-gradient field (its Jacobian is not symmetric)."""
    torch.manual_seed(d)
    net = torch.nn.Sequential(torch.nn.Linear(d, 16), torch.nn.Tanh(), torch.nn.Linear(16, d)).double()
    return net.requires_grad_(False)


def _dense_acceleration(G, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """−Γ(v, v) from a dense G(x) (d, d) and its Jacobian by reverse-mode autodiff, one point."""
    d = x.shape[-1]
    dG = torch.autograd.functional.jacobian(G, x)  # [i, j, k] = ∂G_ij/∂x_k
    lowered = 0.5 * (dG.permute(0, 2, 1) + dG - dG.permute(2, 0, 1))  # Γ_kij
    gamma = torch.linalg.solve(G(x), lowered.reshape(d, -1)).reshape(d, d, d)
    return -torch.einsum("kij,i,j->k", gamma, v, v)


def _metrics(d: int):
    mixture = _mixture(d)
    field = _mlp_field(d)
    score_matrix = lambda x: torch.eye(d, dtype=F64) + 4.0 * torch.outer(mixture.score(x), mixture.score(x))  # noqa: E731

    def jacobian_matrix(score, lam, alpha):
        def G(x):
            J = torch.autograd.functional.jacobian(score, x, create_graph=True)
            return alpha * torch.eye(d, dtype=F64) + lam * J.T @ J
        return G

    return {
        "inverse": (sg.InverseScoreMetric(mixture.score, d, lam=4.0), lambda x: torch.linalg.inv(score_matrix(x))),
        "power": (sg.ConformalMetric(mixture.log_prob, d, form="power", beta=0.7),
                  lambda x: torch.exp(-0.7 * mixture.log_prob(x)) * torch.eye(d, dtype=F64)),
        "energy": (sg.ConformalMetric(mixture.log_prob, d, form="energy", alpha=0.5, beta=6.0),
                   lambda x: (0.5 * (-mixture.log_prob(x)) + 6.0) * torch.eye(d, dtype=F64)),
        "jacobian": (sg.ScoreJacobianMetric(mixture.score, d, lam=2.0, alpha=0.5), jacobian_matrix(mixture.score, 2.0, 0.5)),
        "jacobian (non-gradient field)": (sg.ScoreJacobianMetric(field, d, lam=2.0, alpha=0.5), jacobian_matrix(field, 2.0, 0.5)),
    }


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("name", ["inverse", "power", "energy", "jacobian", "jacobian (non-gradient field)"])
def test_operators_and_acceleration_against_a_dense_reference(name, d):
    metric, G = _metrics(d)[name]
    gen = torch.Generator().manual_seed(7)
    x = 0.8 * torch.randn(3, d, generator=gen, dtype=F64)
    u, v = torch.randn(3, d, generator=gen, dtype=F64), torch.randn(3, d, generator=gen, dtype=F64)
    for i in range(3):
        dense = G(x[i])
        torch.testing.assert_close(metric.matrix(x[i]), dense, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(metric.apply(x[i], v[i]), dense @ v[i], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(metric.inner(x[i], u[i], v[i]), u[i] @ dense @ v[i], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(metric.solve(x[i], v[i]), torch.linalg.solve(dense, v[i]), rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(metric.acceleration(x[i], v[i]), _dense_acceleration(G, x[i], v[i]),
                                   rtol=1e-8, atol=1e-10)
    # batched calls agree with the per-point ones
    torch.testing.assert_close(metric.acceleration(x, v)[1], metric.acceleration(x[1], v[1]))


@pytest.mark.parametrize("name", ["jacobian", "jacobian (non-gradient field)"])
def test_jacobian_metric_by_conjugate_gradient_matches_the_dense_reference(name, monkeypatch):
    """Above DENSE_SOLVE_MAX_DIM the Jacobian metric solves by conjugate gradient on G v; forced here at d = 3."""
    monkeypatch.setattr(sg.metrics.pullback, "DENSE_SOLVE_MAX_DIM", 0)
    metric, G = _metrics(3)[name]
    gen = torch.Generator().manual_seed(8)
    x, v = 0.8 * torch.randn(3, generator=gen, dtype=F64), torch.randn(3, generator=gen, dtype=F64)
    torch.testing.assert_close(metric.solve(x, v), torch.linalg.solve(G(x), v), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(metric.acceleration(x, v), _dense_acceleration(G, x, v), rtol=1e-8, atol=1e-10)


def test_one_dimensional_distances_are_integrals_of_the_root_of_g():
    """In d = 1 the geodesic is the segment and its length ∫ √G(x) dx (scipy quadrature)."""
    mixture = _mixture(1)
    x0, x1 = -1.2, 2.1

    def f(x):
        return float(mixture.log_prob(torch.tensor([x], dtype=F64)))

    def s(x):
        return float(mixture.score(torch.tensor([x], dtype=F64))[0])

    cases = [
        (sg.InverseScoreMetric(mixture.score, 1, lam=3.0, alpha=0.5), lambda x: 1 / math.sqrt(0.5 + 3.0 * s(x) ** 2)),
        (sg.ConformalMetric(mixture.log_prob, 1, form="power", beta=0.6), lambda x: math.exp(-0.3 * f(x))),
        (sg.ConformalMetric(mixture.log_prob, 1, form="energy", alpha=2.0, beta=1.0),
         lambda x: math.sqrt(2.0 * -f(x) + 1.0)),
    ]
    for metric, root_g in cases:
        expected = quad(root_g, x0, x1, epsabs=1e-13, epsrel=1e-13)[0]
        got = sg.distance(metric, torch.tensor([x0], dtype=F64), torch.tensor([x1], dtype=F64))
        assert float(got) == pytest.approx(expected, rel=1e-8), metric


def test_score_jacobian_metric_of_a_gaussian_is_flat():
    """J = −Σ⁻¹ is constant: G = αI + λΣ⁻² everywhere, geodesics are straight, distance = √(Δᵀ G Δ)."""
    cov = torch.tensor([[1.0, 0.4, 0.0], [0.4, 0.6, 0.1], [0.0, 0.1, 0.8]], dtype=F64)
    gaussian = sg.Gaussian(torch.zeros(3, dtype=F64), cov)
    metric = sg.ScoreJacobianMetric(gaussian.score, 3, lam=2.0, alpha=0.5)
    precision = torch.linalg.inv(cov)
    G = 0.5 * torch.eye(3, dtype=F64) + 2.0 * precision @ precision
    x0, x1 = torch.tensor([1.0, -0.5, 0.3], dtype=F64), torch.tensor([-0.7, 1.2, 0.9], dtype=F64)
    path = sg.geodesic(metric, x0, x1, n_points=9)
    assert bool(path.converged)
    delta = x1 - x0
    assert float(path.length) == pytest.approx(float(torch.sqrt(delta @ G @ delta)), rel=1e-9)
    chord = x0 + torch.linspace(0, 1, 9, dtype=F64)[:, None] * delta
    torch.testing.assert_close(path.points, chord, rtol=0, atol=1e-7)
    torch.testing.assert_close(metric.acceleration(x0, delta), torch.zeros(3, dtype=F64), rtol=0, atol=1e-12)


def test_bad_parameters_and_points_outside_the_domain_are_refused():
    mixture = _mixture(2)
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        sg.InverseScoreMetric(mixture.score, 2, alpha=0.0)
    with pytest.raises(ValueError, match="form must be one of"):
        sg.ConformalMetric(mixture.log_prob, 2, form="log")
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        sg.ConformalMetric(mixture.log_prob, 2, beta=-1.0)
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        sg.ScoreJacobianMetric(mixture.score, 2, alpha=0.0)
    # h = −(log p + 10) is negative where log p > −10, at the mode for one
    metric = sg.ConformalMetric(lambda x: mixture.log_prob(x) + 10.0, 2, form="energy", alpha=1.0, beta=0.0)
    mode = mixture.means[0]
    assert float(mixture.log_prob(mode)) > -10
    with pytest.raises(ValueError, match="x0 = .* is outside the domain of the conformal metric"):
        sg.geodesic(metric, mode, mode + 5.0)


def test_conformal_metric_from_a_score_alone():
    """log p from the score's line integral: the same metric as from log p, up to the constant log p(r)."""
    mixture = _mixture(2)
    reference = torch.tensor([0.3, -0.2], dtype=F64)
    x0, x1 = torch.tensor([-1.0, 0.8], dtype=F64), torch.tensor([1.4, 0.5], dtype=F64)
    log_p_ref = float(mixture.log_prob(reference))
    energy_direct = sg.ConformalMetric(mixture.log_prob, 2, form="energy", alpha=1.0, beta=8.0)
    energy_score = sg.ConformalMetric.from_score(mixture.score, 2, reference, log_p_reference=log_p_ref,
                                                 form="energy", alpha=1.0, beta=8.0)
    points = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(energy_score.factor(points), energy_direct.factor(points), rtol=1e-10, atol=0)
    v = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    torch.testing.assert_close(energy_score.acceleration(points, v), energy_direct.acceleration(points, v),
                               rtol=1e-9, atol=1e-12)
    # the power form without log p(r): every length scales by p(r)^(β/2)
    beta = 0.8
    power_direct = sg.ConformalMetric(mixture.log_prob, 2, form="power", beta=beta)
    power_score = sg.ConformalMetric.from_score(mixture.score, 2, reference, form="power", beta=beta)
    ratio = sg.distance(power_score, x0, x1, solver="collocation") / sg.distance(power_direct, x0, x1, solver="collocation")
    assert float(ratio) == pytest.approx(math.exp(0.5 * beta * log_p_ref), rel=1e-8)
    with pytest.raises(ValueError, match="reference must be a finite tensor of shape \\(2,\\)"):
        sg.ConformalMetric.from_score(mixture.score, 2, torch.zeros(3, dtype=F64))


def test_ray_log_density_is_the_log_density_difference_for_an_exact_score():
    from scoregeo.scores.potential import ray_log_density

    mixture = _mixture(3)
    reference = torch.tensor([0.2, -0.1, 0.4], dtype=F64)
    log_p = ray_log_density(mixture.score, reference, log_p_reference=float(mixture.log_prob(reference)))
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    torch.testing.assert_close(log_p(x), mixture.log_prob(x), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="reference must be a finite tensor"):
        ray_log_density(mixture.score, torch.tensor([float("nan"), 0.0, 0.0], dtype=F64))
    with pytest.raises(ValueError, match="n_nodes"):
        ray_log_density(mixture.score, reference, n_nodes=0)
