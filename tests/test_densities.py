"""Analytic densities (``sg.Gaussian``, ``sg.GaussianMixture``) against independent oracles.

Oracles: ``torch.distributions`` (MultivariateNormal, MixtureSameFamily) for the
log-densities and, through autograd, for the scores; central finite differences
of the log-density; population moments for samples. Everything runs in float64
unless a test is about dtypes.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

import scoregeo as sg

D = 3


def random_spd(generator: torch.Generator, d: int = D) -> torch.Tensor:
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return a @ a.T + 0.3 * torch.eye(d, dtype=torch.float64)


def random_points(*shape: int, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module")
def gaussian_pair():
    """An sg.Gaussian and the torch.distributions oracle with the same parameters."""
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(D, generator=g, dtype=torch.float64)
    cov = random_spd(g)
    return sg.Gaussian(mean, cov), MultivariateNormal(mean, covariance_matrix=cov)


@pytest.fixture(scope="module")
def mixture_pair():
    """An sg.GaussianMixture (3 components, unequal weights and covariances) and its torch oracle."""
    g = torch.Generator().manual_seed(1)
    means = 2 * torch.randn(3, D, generator=g, dtype=torch.float64)
    covs = torch.stack([random_spd(g) for _ in range(3)])
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    oracle = MixtureSameFamily(Categorical(probs=weights), MultivariateNormal(means, covariance_matrix=covs))
    return sg.GaussianMixture(means, covs, weights), oracle


@pytest.fixture(scope="module", params=["gaussian", "mixture"])
def density_pair(request, gaussian_pair, mixture_pair):
    return gaussian_pair if request.param == "gaussian" else mixture_pair


def central_difference_gradient(f, x: torch.Tensor, h: float = 1e-5) -> torch.Tensor:
    """∇f at points x (..., d) by central differences, one coordinate at a time."""
    columns = []
    for i in range(x.shape[-1]):
        step = torch.zeros_like(x)
        step[..., i] = h
        columns.append((f(x + step) - f(x - step)) / (2 * h))
    return torch.stack(columns, dim=-1)


# --------------------------------------------------------------------------- log_prob
def test_log_prob_matches_torch_distributions(density_pair):
    density, oracle = density_pair
    x = random_points(4, 5, D)  # two leading batch dimensions
    log_p = density.log_prob(x)
    assert log_p.shape == (4, 5)
    torch.testing.assert_close(log_p, oracle.log_prob(x), rtol=1e-12, atol=1e-12)


def test_mixture_log_prob_is_stable_far_from_the_modes(mixture_pair):
    mixture, oracle = mixture_pair
    x = torch.tensor([[300.0, -200.0, 100.0]], dtype=torch.float64)  # every component density underflows
    torch.testing.assert_close(mixture.log_prob(x), oracle.log_prob(x), rtol=1e-12, atol=0)
    score = mixture.score(x)
    assert bool(torch.isfinite(score).all())
    torch.testing.assert_close(score, sg.score_of(oracle.log_prob)(x), rtol=1e-10, atol=1e-10)


def test_mixture_weights_are_normalised_and_covariance_may_be_shared():
    g = torch.Generator().manual_seed(2)
    means = torch.randn(3, D, generator=g, dtype=torch.float64)
    cov = random_spd(g)
    x = random_points(7, D)
    scaled = sg.GaussianMixture(means, cov, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    normalised = sg.GaussianMixture(means, cov.expand(3, D, D), torch.tensor([1 / 6, 2 / 6, 3 / 6], dtype=torch.float64))
    torch.testing.assert_close(scaled.log_prob(x), normalised.log_prob(x), rtol=1e-13, atol=1e-13)
    uniform = sg.GaussianMixture(means, cov)
    oracle = MixtureSameFamily(Categorical(logits=torch.zeros(3, dtype=torch.float64)), MultivariateNormal(means, cov))
    torch.testing.assert_close(uniform.log_prob(x), oracle.log_prob(x), rtol=1e-12, atol=1e-12)


def test_mixture_with_a_zero_weight_ignores_that_component():
    g = torch.Generator().manual_seed(3)
    means = torch.randn(3, D, generator=g, dtype=torch.float64)
    covs = torch.stack([random_spd(g) for _ in range(3)])
    with_zero = sg.GaussianMixture(means, covs, torch.tensor([0.4, 0.0, 0.6], dtype=torch.float64))
    without = sg.GaussianMixture(means[[0, 2]], covs[[0, 2]], torch.tensor([0.4, 0.6], dtype=torch.float64))
    x = random_points(6, D)
    torch.testing.assert_close(with_zero.log_prob(x), without.log_prob(x), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(with_zero.score(x), without.score(x), rtol=1e-13, atol=1e-13)


# ------------------------------------------------------------------------------ score
def test_score_matches_autograd_of_its_own_and_of_torch_log_prob(density_pair):
    density, oracle = density_pair
    x = random_points(4, 5, D, seed=4)
    score = density.score(x)
    assert score.shape == (4, 5, D)
    torch.testing.assert_close(score, sg.score_of(density.log_prob)(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(score, sg.score_of(oracle.log_prob)(x), rtol=1e-10, atol=1e-10)


def test_score_matches_finite_differences(density_pair):
    density, oracle = density_pair
    x = random_points(6, D, seed=5)
    # central differences with h = 1e-5: truncation ~h² f''' ≈ 1e-10, round-off ~eps |log p| / h ≈ 1e-10
    torch.testing.assert_close(density.score(x), central_difference_gradient(oracle.log_prob, x), rtol=0, atol=1e-7)


def test_gaussian_score_is_linear():
    # For a Gaussian the score is −Σ⁻¹(x − μ): check against a linear solve, and that it vanishes at the mean.
    g = torch.Generator().manual_seed(6)
    mean, cov = torch.randn(D, generator=g, dtype=torch.float64), random_spd(g)
    density = sg.Gaussian(mean, cov)
    x = random_points(5, D, seed=7)
    torch.testing.assert_close(density.score(x), -torch.linalg.solve(cov, (x - mean).T).T, rtol=1e-12, atol=1e-12)
    assert float(density.score(mean).abs().max()) < 1e-14


def test_batched_evaluation_equals_pointwise(density_pair):
    density, _ = density_pair
    x = random_points(2, 3, D, seed=8)
    flat = x.reshape(-1, D)
    pointwise_log_p = torch.stack([density.log_prob(point) for point in flat]).reshape(2, 3)
    pointwise_score = torch.stack([density.score(point) for point in flat]).reshape(2, 3, D)
    torch.testing.assert_close(density.log_prob(x), pointwise_log_p, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(density.score(x), pointwise_score, rtol=1e-14, atol=1e-14)
    assert density.log_prob(flat[0]).shape == ()
    assert density.score(flat[0]).shape == (D,)


# ---------------------------------------------------------------------------- samples
def assert_moments_match(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> None:
    """Sample mean and covariance within 5 standard errors of the population values.

    Standard errors are estimated from the samples themselves: sd/√n for the mean, and
    for each covariance entry the sd of the centred products (x_i − x̄_i)(x_j − x̄_j) over √n.
    Five standard errors make a false alarm essentially impossible, and the seeds are fixed.
    """
    n = samples.shape[0]
    centred = samples - samples.mean(0)
    mean_se = samples.std(0) / math.sqrt(n)
    products = centred.unsqueeze(-1) * centred.unsqueeze(-2)
    cov_se = products.std(0) / math.sqrt(n)
    assert bool(((samples.mean(0) - mean).abs() < 5 * mean_se).all()), (samples.mean(0), mean)
    assert bool(((products.mean(0) - cov).abs() < 5 * cov_se).all()), (products.mean(0), cov)


def test_gaussian_sample_moments(gaussian_pair):
    density, oracle = gaussian_pair
    samples = density.sample(20_000, generator=torch.Generator().manual_seed(9))
    assert samples.shape == (20_000, D) and samples.dtype == torch.float64
    assert_moments_match(samples, oracle.mean, oracle.covariance_matrix)


def test_mixture_sample_moments(mixture_pair):
    density, oracle = mixture_pair
    samples = density.sample(20_000, generator=torch.Generator().manual_seed(10))
    assert samples.shape == (20_000, D) and samples.dtype == torch.float64
    # population moments of the mixture: E x = Σ w_k μ_k, Cov x = Σ w_k (Σ_k + μ_k μ_kᵀ) − E x E xᵀ
    w = oracle.mixture_distribution.probs
    mu = oracle.component_distribution.loc
    covs = oracle.component_distribution.covariance_matrix
    mean = (w[:, None] * mu).sum(0)
    cov = (w[:, None, None] * (covs + mu.unsqueeze(-1) * mu.unsqueeze(-2))).sum(0) - mean.outer(mean)
    torch.testing.assert_close(cov.diagonal(), oracle.variance)  # the formula, against torch's own variance
    assert_moments_match(samples, mean, cov)


def test_sampling_is_reproducible_with_a_generator(density_pair):
    density, _ = density_pair
    first = density.sample(50, generator=torch.Generator().manual_seed(11))
    again = density.sample(50, generator=torch.Generator().manual_seed(11))
    other = density.sample(50, generator=torch.Generator().manual_seed(12))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


# ----------------------------------------------------------------------------- dtypes
def test_float32_points_give_float32_results(density_pair):
    density, oracle = density_pair  # parameters are float64
    x64 = random_points(5, D, seed=13)
    x32 = x64.float()
    log_p, score = density.log_prob(x32), density.score(x32)
    assert log_p.dtype == torch.float32 and score.dtype == torch.float32
    torch.testing.assert_close(log_p.double(), oracle.log_prob(x32.double()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(score.double(), density.score(x32.double()), rtol=1e-5, atol=1e-5)


def test_float32_parameters_sample_float32():
    density = sg.Gaussian(torch.zeros(2), torch.eye(2))
    assert density.sample(3).dtype == torch.float32
    mixture = sg.GaussianMixture(torch.zeros(2, 2, dtype=torch.float32), torch.eye(2, dtype=torch.float32))
    assert mixture.sample(3).dtype == torch.float32


# -------------------------------------------------------------------------- bad input
EYE = torch.eye(2, dtype=torch.float64)
ZERO = torch.zeros(2, dtype=torch.float64)
NAN = float("nan")


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: sg.Gaussian(torch.zeros(2, 2), EYE), "mean must have shape"),
        (lambda: sg.Gaussian(ZERO, torch.eye(3)), "cov must have shape"),
        (lambda: sg.Gaussian(torch.tensor([0.0, NAN]), EYE), "mean contains NaN"),
        (lambda: sg.Gaussian(ZERO, torch.tensor([[1.0, NAN], [NAN, 1.0]])), "cov contains NaN"),
        (lambda: sg.Gaussian(ZERO, torch.tensor([[1.0, 2.0], [2.0, 1.0]])), "cov must be positive-definite"),
        (lambda: sg.Gaussian(ZERO, torch.tensor([[1.0, 0.5], [0.0, 1.0]])), "cov must be symmetric"),
        (lambda: sg.GaussianMixture(ZERO, EYE), "means must have shape"),
        (lambda: sg.GaussianMixture(torch.zeros(3, 2), torch.eye(2).expand(2, 2, 2)), "covs must have shape"),
        (lambda: sg.GaussianMixture(torch.zeros(3, 2), EYE, torch.ones(2)), "weights must have shape"),
        (lambda: sg.GaussianMixture(torch.zeros(2, 2), EYE, torch.tensor([1.0, -0.5])), "weights must be non-negative"),
        (lambda: sg.GaussianMixture(torch.zeros(2, 2), EYE, torch.zeros(2)), "weights must be non-negative with a positive sum"),
        (lambda: sg.GaussianMixture(torch.zeros(2, 2), EYE, torch.tensor([1.0, NAN])), "weights contains NaN"),
        (lambda: sg.GaussianMixture(torch.tensor([[0.0, NAN], [0.0, 0.0]]), EYE), "means contains NaN"),
        (lambda: sg.GaussianMixture(torch.zeros(2, 2), torch.stack([EYE, -EYE])), "covs must be positive-definite"),
    ],
)
def test_bad_parameters_raise_value_error_naming_the_argument(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("method", ["log_prob", "score"])
@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.zeros(4, D + 1, dtype=torch.float64), r"x must have shape \(\.\.\., 3\)"),
        (torch.tensor(1.0, dtype=torch.float64), r"x must have shape"),
        (torch.tensor([[0.0, NAN, 0.0]], dtype=torch.float64), "x contains NaN"),
        (torch.tensor([[0.0, float("inf"), 0.0]], dtype=torch.float64), "x contains NaN or Inf"),
        (torch.zeros(2, D, dtype=torch.int64), "x must be a floating-point tensor"),
    ],
)
def test_bad_points_raise_value_error(density_pair, method, x, match):
    density, _ = density_pair
    with pytest.raises(ValueError, match=match):
        getattr(density, method)(x)


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_sample_size_raises_value_error(density_pair, n):
    density, _ = density_pair
    with pytest.raises(ValueError, match="n must be an integer"):
        density.sample(n)
