"""Metrics (``sg.Euclidean``, ``sg.MatrixMetric``, ``sg.ScoreMetric``, ``sg.FisherRaoMetric``).

The chain of oracles:
1. ``MatrixMetric.christoffel`` (autodiff) against central finite differences of
   G(x) plugged into the textbook formula, and against the closed-form symbols of
   the hyperbolic half-plane;
2. the generic ``Metric._acceleration`` (one JVP + one VJP, used by MatrixMetric)
   against the contraction −Γ^k_ij v^i v^j of those dense symbols;
3. ``ScoreMetric.acceleration`` (closed form, Sherman–Morrison) against the dense
   Christoffel contraction of ``MatrixMetric(x ↦ αI + λ s sᵀ)``, for an exact
   score and for a non-conservative field;
4. ``FisherRaoMetric.matrix`` against the textbook Fisher information of each
   family, and its Christoffel symbols against those of the normal family.
Float64 throughout unless a test is about dtypes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import torch
from torch.distributions import (
    Bernoulli,
    Binomial,
    Categorical,
    Distribution,
    Exponential,
    Gamma,
    Multinomial,
    Normal,
    Poisson,
)
from torch.func import jacrev

import scoregeo as sg

F64 = torch.float64
D = 5  # dimension of the score-metric tests
ALPHA_LAM = [(1.0, 1.0), (0.3, 2.5), (2.0, 0.1)]


def contract(gamma: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """−Γ^k_ij v^i v^j for Γ (..., d, d, d) and v (..., d)."""
    return -torch.einsum("...kij,...i,...j->...k", gamma, v, v)


def points(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.fixture(scope="module")
def mixture() -> sg.GaussianMixture:
    """A 5-D mixture of three Gaussians with distinct covariances."""
    g = torch.Generator().manual_seed(0)
    means = 1.5 * torch.randn(3, D, generator=g, dtype=F64)
    a = torch.randn(3, D, D, generator=g, dtype=F64)
    covs = a @ a.mT / D + 0.5 * torch.eye(D, dtype=F64)
    return sg.GaussianMixture(means, covs, torch.tensor([0.5, 0.3, 0.2], dtype=F64))


@pytest.fixture(scope="module")
def rotational_field():
    """s(x) = tanh(W x + b) with non-symmetric W: a vector field that is no gradient (J ≠ Jᵀ)."""
    g = torch.Generator().manual_seed(1)
    W = torch.randn(D, D, generator=g, dtype=F64) / math.sqrt(D)
    b = torch.randn(D, generator=g, dtype=F64)
    return lambda x: torch.tanh(x @ W.T + b)


def dense_score_metric(score, alpha: float, lam: float) -> sg.MatrixMetric:
    """The score metric written as an explicit matrix field, for the dense reference path."""
    eye = torch.eye(D, dtype=F64)

    def G(x: torch.Tensor) -> torch.Tensor:
        s = score(x)
        return alpha * eye + lam * s.unsqueeze(-1) * s.unsqueeze(-2)

    return sg.MatrixMetric(G, D)


def warped_metric(x: torch.Tensor) -> torch.Tensor:
    """A non-trivial SPD field on R^3: G(x) = A(x) A(x)ᵀ + (1 + |x|²) I with A(x) nonlinear in x."""
    A = torch.stack(
        [
            torch.stack([torch.sin(x[..., 0]), x[..., 1] * x[..., 2], torch.ones_like(x[..., 0])], -1),
            torch.stack([x[..., 0] ** 2, torch.cos(x[..., 1]), x[..., 2]], -1),
            torch.stack([torch.zeros_like(x[..., 0]), torch.exp(0.3 * x[..., 0]), x[..., 1]], -1),
        ],
        -2,
    )
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    return A @ A.mT + (1 + (x**2).sum(-1))[..., None, None] * eye


# ----------------------------------------------------------------- Christoffel symbols
def finite_difference_christoffel(G, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Γ^k_ij = ½ G^{kl} (∂_i G_lj + ∂_j G_li − ∂_l G_ij) with ∂G by central differences (NumPy)."""
    d = x.shape[0]

    def G_at(y: np.ndarray) -> np.ndarray:
        return G(torch.from_numpy(y)).numpy()

    dG = np.empty((d, d, d))  # dG[i] = ∂_i G
    for i in range(d):
        step = np.zeros(d)
        step[i] = h
        dG[i] = (G_at(x + step) - G_at(x - step)) / (2 * h)
    lowered = 0.5 * (np.einsum("ilj->lij", dG) + np.einsum("jli->lij", dG) - np.einsum("lij->lij", dG))
    return np.einsum("kl,lij->kij", np.linalg.inv(G_at(x)), lowered)


def test_matrix_metric_christoffel_matches_finite_differences():
    metric = sg.MatrixMetric(warped_metric, 3)
    x = points(4, 3, seed=2)
    gamma = metric.christoffel(x)
    assert gamma.shape == (4, 3, 3, 3)
    expected = torch.from_numpy(np.stack([finite_difference_christoffel(warped_metric, p) for p in x.numpy()]))
    # central differences, h = 1e-5: truncation ~h² ≈ 1e-10 and round-off ~eps/h ≈ 1e-11, times O(10) factors
    torch.testing.assert_close(gamma, expected, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(gamma, gamma.transpose(-1, -2), rtol=0, atol=1e-12)  # torsion-free: Γ^k_ij = Γ^k_ji


def test_matrix_metric_christoffel_of_the_hyperbolic_half_plane():
    # G = I / y² on {y > 0}: Γ^x_xy = Γ^x_yx = −1/y, Γ^y_xx = 1/y, Γ^y_yy = −1/y, all others 0.
    metric = sg.MatrixMetric(lambda p: torch.eye(2, dtype=p.dtype) / p[..., 1, None, None] ** 2, 2)
    x = torch.tensor([[0.3, 0.5], [-2.0, 3.0]], dtype=F64)
    y = x[:, 1]
    expected = torch.zeros(2, 2, 2, 2, dtype=F64)
    expected[:, 0, 0, 1] = expected[:, 0, 1, 0] = -1 / y
    expected[:, 1, 0, 0] = 1 / y
    expected[:, 1, 1, 1] = -1 / y
    torch.testing.assert_close(metric.christoffel(x), expected, rtol=1e-13, atol=1e-13)


def test_generic_acceleration_matches_christoffel_contraction():
    metric = sg.MatrixMetric(warped_metric, 3)
    x, v = points(2, 4, 3, seed=3), points(2, 4, 3, seed=4, scale=2.0)
    acceleration = metric.acceleration(x, v)
    assert acceleration.shape == (2, 4, 3)
    torch.testing.assert_close(acceleration, contract(metric.christoffel(x), v), rtol=1e-10, atol=1e-10)


def test_generic_acceleration_broadcasts_one_point_against_many_velocities():
    metric = sg.MatrixMetric(warped_metric, 3)
    x, v = points(3, seed=5), points(6, 3, seed=6)
    torch.testing.assert_close(metric.acceleration(x, v), contract(metric.christoffel(x), v), rtol=1e-10, atol=1e-10)


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_generic_acceleration_of_a_conformal_metric_in_high_dimension(two_threads):
    """G = (1 + |x|²) I = e^{2φ} I with φ = ½ log(1 + |x|²): ẍ = |v|² ∇φ − 2 (∇φ·v) v.

    d = 160 on two threads is where torch 2.13's batched CPU LU corrupts its
    pivots; the metric's solve must not depend on it.
    """
    d = 160
    metric = sg.MatrixMetric(lambda x: (1 + (x * x).sum(-1))[..., None, None] * torch.eye(d, dtype=x.dtype), d)
    x, v = 0.3 * points(8, d, seed=7), points(8, d, seed=8)
    grad_phi = x / (1 + (x * x).sum(-1, keepdim=True))
    expected = (v * v).sum(-1, keepdim=True) * grad_phi - 2 * (grad_phi * v).sum(-1, keepdim=True) * v
    torch.testing.assert_close(metric.acceleration(x, v), expected, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------ score metric
@pytest.mark.parametrize(("alpha", "lam"), ALPHA_LAM)
def test_score_metric_acceleration_matches_dense_christoffel_for_an_exact_score(mixture, alpha, lam):
    x, v = points(6, D, seed=7, scale=2.0), points(6, D, seed=8)
    expected = contract(dense_score_metric(mixture.score, alpha, lam).christoffel(x), v)
    actual = sg.ScoreMetric(mixture.score, D, lam=lam, alpha=alpha).acceleration(x, v)
    assert float(expected.abs().max()) > 1e-2  # the comparison is not between two near-zero vectors
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("alpha", "lam"), ALPHA_LAM)
def test_score_metric_acceleration_matches_dense_christoffel_for_a_non_conservative_field(rotational_field, alpha, lam):
    x, v = points(6, D, seed=9), points(6, D, seed=10)
    J = jacrev(rotational_field)(x[0])
    assert float((J - J.T).abs().max()) > 0.1  # the field really is not a gradient
    expected = contract(dense_score_metric(rotational_field, alpha, lam).christoffel(x), v)
    actual = sg.ScoreMetric(rotational_field, D, lam=lam, alpha=alpha).acceleration(x, v)
    assert float(expected.abs().max()) > 1e-2
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_score_metric_acceleration_is_along_the_score_for_an_exact_score(mixture):
    # For J symmetric (J = Hessian of log p) the closed form reduces to ẍ = −λ (vᵀ H v) / (α + λ|s|²) s.
    # H comes from autograd of torch's own mixture log-density, independently of the metric code.
    alpha, lam = 0.7, 1.9
    oracle = torch.distributions.MixtureSameFamily(
        Categorical(probs=mixture.weights), torch.distributions.MultivariateNormal(mixture.means, mixture.covs)
    )
    x, v = points(D, seed=11), points(D, seed=12)
    H = torch.autograd.functional.hessian(oracle.log_prob, x)
    s = mixture.score(x)
    expected = -lam * (v @ H @ v) / (alpha + lam * s @ s) * s
    actual = sg.ScoreMetric(mixture.score, D, lam=lam, alpha=alpha).acceleration(x, v)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_score_metric_from_autograd_score_equals_analytic_score(mixture):
    x, v = points(3, D, seed=13), points(3, D, seed=14)
    analytic = sg.ScoreMetric(mixture.score, D, lam=2.0, alpha=0.5)
    autograd = sg.ScoreMetric(sg.score_of(mixture.log_prob), D, lam=2.0, alpha=0.5)
    torch.testing.assert_close(autograd.acceleration(x, v), analytic.acceleration(x, v), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("alpha", "lam"), [*ALPHA_LAM, (0.0, 1.0), (1.0, 0.0)])
def test_score_metric_inner_and_norm_match_the_matrix(mixture, alpha, lam):
    metric = sg.ScoreMetric(mixture.score, D, lam=lam, alpha=alpha)
    x, u, v = points(4, D, seed=15), points(4, D, seed=16), points(4, D, seed=17)
    s = mixture.score(x)
    G = alpha * torch.eye(D, dtype=F64) + lam * s.unsqueeze(-1) * s.unsqueeze(-2)  # built here, independently
    torch.testing.assert_close(metric.matrix(x), G, rtol=1e-14, atol=1e-14)
    expected_inner = torch.einsum("bi,bij,bj->b", u, G, v)
    torch.testing.assert_close(metric.inner(x, u, v), expected_inner, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(metric.norm(x, v), torch.einsum("bi,bij,bj->b", v, G, v).sqrt(), rtol=1e-12, atol=1e-12)


def test_pure_score_metric_measures_changes_of_log_density(mixture):
    # alpha = 0: ‖v‖ = √λ |s·v| = √λ |d/dt log p(x + t v)| at t = 0.
    metric = sg.ScoreMetric(mixture.score, D, lam=4.0, alpha=0.0)
    x, v = points(D, seed=18), points(D, seed=19)
    h = 1e-6
    directional = (mixture.log_prob(x + h * v) - mixture.log_prob(x - h * v)) / (2 * h)
    torch.testing.assert_close(metric.norm(x, v), 2.0 * directional.abs(), rtol=1e-7, atol=0)


@pytest.mark.parametrize("method", ["acceleration", "christoffel"])
def test_pure_score_metric_refuses_geodesic_quantities(mixture, method):
    metric = sg.ScoreMetric(mixture.score, D, lam=1.0, alpha=0.0)
    x = points(D, seed=20)
    args = (x, x) if method == "acceleration" else (x,)
    with pytest.raises(ValueError, match="alpha"):
        getattr(metric, method)(*args)


# --------------------------------------------------------------------- Fisher–Rao metric
def cat_family(theta: torch.Tensor) -> Categorical:
    """Categorical over k categories in the coordinates θ = (p_1, …, p_{k−1})."""
    return Categorical(probs=torch.cat([theta, 1 - theta.sum(-1, keepdim=True)], -1))


def diag(*values: torch.Tensor) -> torch.Tensor:
    return torch.diag_embed(torch.stack(values, -1))


FISHER_CASES = {
    # name: (family, θ batch, textbook Fisher information as a function of θ)
    "normal": (
        lambda t: Normal(t[..., 0], t[..., 1]),
        torch.tensor([[0.0, 1.0], [-1.5, 0.3], [2.0, 4.0]], dtype=F64),
        lambda t: diag(1 / t[:, 1] ** 2, 2 / t[:, 1] ** 2),
    ),
    "poisson": (lambda t: Poisson(t[..., 0]), torch.tensor([[0.2], [3.0], [40.0]], dtype=F64), lambda t: diag(1 / t[:, 0])),
    "exponential": (lambda t: Exponential(t[..., 0]), torch.tensor([[0.2], [3.0]], dtype=F64), lambda t: diag(1 / t[:, 0] ** 2)),
    "bernoulli": (
        lambda t: Bernoulli(probs=t[..., 0]),
        torch.tensor([[0.1], [0.5], [0.93]], dtype=F64),
        lambda t: diag(1 / (t[:, 0] * (1 - t[:, 0]))),
    ),
    "binomial": (
        lambda t: Binomial(12, probs=t[..., 0]),
        torch.tensor([[0.1], [0.5], [0.93]], dtype=F64),
        lambda t: diag(12 / (t[:, 0] * (1 - t[:, 0]))),
    ),
    "categorical": (
        cat_family,
        torch.tensor([[0.2, 0.3], [0.05, 0.9], [0.4, 0.4]], dtype=F64),
        # F_ij = δ_ij / p_i + 1 / p_k for the free coordinates p_1..p_{k−1}
        lambda t: torch.diag_embed(1 / t) + (1 / (1 - t.sum(-1)))[:, None, None],
    ),
    "gamma": (
        lambda t: Gamma(t[..., 0], t[..., 1]),  # (concentration a, rate b)
        torch.tensor([[2.0, 3.0], [0.5, 0.1]], dtype=F64),
        lambda t: torch.stack(
            [
                torch.stack([torch.from_numpy(scipy.special.polygamma(1, t[:, 0].numpy())), -1 / t[:, 1]], -1),
                torch.stack([-1 / t[:, 1], t[:, 0] / t[:, 1] ** 2], -1),
            ],
            -2,
        ),
    ),
}


@pytest.mark.parametrize("name", list(FISHER_CASES))
def test_fisher_rao_matrix_matches_known_fisher_information(name):
    family, theta, fisher = FISHER_CASES[name]
    metric = sg.FisherRaoMetric(family, theta.shape[-1])
    G = metric.matrix(theta)
    assert G.shape == (*theta.shape, theta.shape[-1])
    # The Gamma information involves the trigamma function, which torch computes only to about
    # 4e-10 relative (against SciPy); every other family is exact to round-off.
    rtol = 1e-8 if name == "gamma" else 1e-10
    torch.testing.assert_close(G, fisher(theta), rtol=rtol, atol=1e-12)


def test_fisher_rao_christoffel_of_the_normal_family():
    # For ds² = (dμ² + 2dσ²)/σ²: Γ^μ_μσ = Γ^μ_σμ = −1/σ, Γ^σ_μμ = 1/(2σ), Γ^σ_σσ = −1/σ.
    metric = sg.FisherRaoMetric(lambda t: Normal(t[..., 0], t[..., 1]), 2)
    theta = torch.tensor([[0.3, 1.7], [-1.0, 0.4]], dtype=F64)
    sigma = theta[:, 1]
    expected = torch.zeros(2, 2, 2, 2, dtype=F64)
    expected[:, 0, 0, 1] = expected[:, 0, 1, 0] = -1 / sigma
    expected[:, 1, 0, 0] = 1 / (2 * sigma)
    expected[:, 1, 1, 1] = -1 / sigma
    torch.testing.assert_close(metric.christoffel(theta), expected, rtol=1e-12, atol=1e-12)
    v = torch.tensor([[0.5, -1.0], [2.0, 0.3]], dtype=F64)
    torch.testing.assert_close(metric.acceleration(theta, v), contract(expected, v), rtol=1e-12, atol=1e-12)


def test_fisher_rao_christoffel_of_the_bernoulli_family():
    # One dimension: Γ = ½ G'/G with G = 1/(p(1−p)), so Γ = −(1 − 2p) / (2 p (1 − p)).
    metric = sg.FisherRaoMetric(lambda t: Bernoulli(probs=t[..., 0]), 1)
    p = torch.tensor([[0.2], [0.7]], dtype=F64)
    expected = (-(1 - 2 * p) / (2 * p * (1 - p))).reshape(2, 1, 1, 1)
    torch.testing.assert_close(metric.christoffel(p), expected, rtol=1e-12, atol=1e-12)


class GammaWithoutKL(Distribution):
    """Gamma(concentration, rate) behind a class for which torch registers no KL divergence."""

    arg_constraints: dict = {}

    def __init__(self, concentration: torch.Tensor, rate: torch.Tensor):
        self._gamma = Gamma(concentration, rate, validate_args=False)
        super().__init__(self._gamma.batch_shape, validate_args=False)

    def sample(self, sample_shape=torch.Size()):
        return self._gamma.sample(sample_shape)

    def log_prob(self, value):
        return self._gamma.log_prob(value)


def gamma_without_kl(theta: torch.Tensor) -> GammaWithoutKL:
    return GammaWithoutKL(theta[..., 0], theta[..., 1])


def test_fisher_rao_monte_carlo_mode_estimates_the_gamma_fisher_information():
    a, b, n = 2.0, 3.0, 4000
    metric = sg.FisherRaoMetric(gamma_without_kl, 2, mc_samples=n, generator=torch.Generator().manual_seed(0))
    estimate = metric.matrix(torch.tensor([a, b], dtype=F64))
    exact = FISHER_CASES["gamma"][2](torch.tensor([[a, b]], dtype=F64))[0]
    # Standard error of a mean of n score products, from an independent NumPy sample of the
    # analytic scores (∂_a log p = log b − ψ(a) + log y, ∂_b log p = a/b − y).
    y = np.random.default_rng(1).gamma(a, 1 / b, size=200_000)
    scores = np.stack([math.log(b) - scipy.special.digamma(a) + np.log(y), a / b - y])
    products = scores[:, None, :] * scores[None, :, :]
    standard_error = torch.from_numpy(products.std(-1) / math.sqrt(n))
    assert bool(((estimate - exact).abs() < 4 * standard_error).all()), (estimate, exact, standard_error)
    assert not torch.equal(estimate, exact)  # it really is an estimate


def test_fisher_rao_monte_carlo_mode_is_reproducible():
    theta = torch.tensor([[2.0, 3.0], [0.7, 1.5]], dtype=F64)

    def build(seed: int) -> sg.FisherRaoMetric:
        return sg.FisherRaoMetric(gamma_without_kl, 2, mc_samples=500, generator=torch.Generator().manual_seed(seed))

    first, again, other = build(7).matrix(theta), build(7).matrix(theta), build(8).matrix(theta)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    metric = build(7)
    assert torch.equal(metric.matrix(theta), metric.matrix(theta))  # one object: a deterministic field


def test_fisher_rao_without_kl_and_without_samples_raises():
    metric = sg.FisherRaoMetric(gamma_without_kl, 2)
    with pytest.raises(ValueError, match="mc_samples"):
        metric.matrix(torch.tensor([2.0, 3.0], dtype=F64))


def test_fisher_rao_bad_construction_raises():
    with pytest.raises(ValueError, match="family must be callable"):
        sg.FisherRaoMetric("normal", 2)
    with pytest.raises(ValueError, match="mc_samples"):
        sg.FisherRaoMetric(gamma_without_kl, 2, mc_samples=1)
    with pytest.raises(ValueError, match="family must return a torch.distributions.Distribution"):
        sg.FisherRaoMetric(lambda t: t, 2).matrix(torch.ones(2, dtype=F64))


# ------------------------------------------------------------------------------ Euclidean
def test_euclidean_metric_is_flat():
    metric = sg.Euclidean(3)
    x, u, v = points(4, 3, seed=21), points(4, 3, seed=22), points(4, 3, seed=23)
    assert metric.dim == 3
    torch.testing.assert_close(metric.matrix(x), torch.eye(3, dtype=F64).expand(4, 3, 3))
    torch.testing.assert_close(metric.inner(x, u, v), (u * v).sum(-1))
    torch.testing.assert_close(metric.norm(x, v), torch.linalg.vector_norm(v, dim=-1))
    assert torch.equal(metric.christoffel(x), torch.zeros(4, 3, 3, 3, dtype=F64))
    assert torch.equal(metric.acceleration(x[0], v), torch.zeros(4, 3, dtype=F64))  # broadcasts x against v


# -------------------------------------------------------------------------------- float32
def test_float32_points_give_float32_results(mixture):
    x64, v64 = points(3, D, seed=24), points(3, D, seed=25)
    x32, v32 = x64.float(), v64.float()
    score_metric = sg.ScoreMetric(mixture.score, D, lam=1.5, alpha=0.5)  # float64 density, float32 points
    for method, args32, args64 in [
        ("acceleration", (x32, v32), (x64, v64)),
        ("inner", (x32, v32, v32), (x64, v64, v64)),
        ("norm", (x32, v32), (x64, v64)),
        ("matrix", (x32,), (x64,)),
    ]:
        result = getattr(score_metric, method)(*args32)
        assert result.dtype == torch.float32, method
        torch.testing.assert_close(result.double(), getattr(score_metric, method)(*args64), rtol=1e-4, atol=1e-4)
    matrix_metric = sg.MatrixMetric(warped_metric, 3)
    y = points(2, 3, seed=26)
    gamma32 = matrix_metric.christoffel(y.float())
    assert gamma32.dtype == torch.float32
    torch.testing.assert_close(gamma32.double(), matrix_metric.christoffel(y), rtol=1e-4, atol=1e-4)
    assert matrix_metric.acceleration(y.float(), y.float()).dtype == torch.float32
    assert sg.Euclidean(3).acceleration(y.float(), y.float()).dtype == torch.float32
    fisher = sg.FisherRaoMetric(lambda t: Normal(t[..., 0], t[..., 1]), 2).matrix(torch.tensor([0.0, 2.0]))
    assert fisher.dtype == torch.float32
    torch.testing.assert_close(fisher, torch.diag(torch.tensor([0.25, 0.5])))


# ----------------------------------------------------------------------------- bad input
def test_bad_hyperparameters_raise_value_error_naming_them(mixture):
    for kwargs, match in [
        ({"lam": -1.0}, "lam"),
        ({"alpha": -0.1}, "alpha"),
        ({"lam": float("nan")}, "lam"),
        ({"alpha": float("inf")}, "alpha"),
        ({"lam": "1"}, "lam"),
        ({"lam": 0.0, "alpha": 0.0}, "alpha and lam"),
    ]:
        with pytest.raises(ValueError, match=match):
            sg.ScoreMetric(mixture.score, D, **kwargs)
    with pytest.raises(ValueError, match="score must be callable"):
        sg.ScoreMetric(None, D)
    with pytest.raises(ValueError, match="fn must be callable"):
        sg.MatrixMetric(torch.eye(2), 2)
    for dim in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="dim"):
            sg.Euclidean(dim)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.tensor([0.0, float("nan"), 0.0, 0.0, 0.0], dtype=F64), torch.ones(D, dtype=F64)), "x contains NaN"),
        ((torch.zeros(D, dtype=F64), torch.tensor([float("inf")] * D, dtype=F64)), "v contains NaN or Inf"),
        ((torch.zeros(D - 1, dtype=F64), torch.ones(D - 1, dtype=F64)), r"x must have shape \(\.\.\., 5\)"),
        ((torch.zeros(D, dtype=F64), torch.ones(D + 1, dtype=F64)), r"v must have shape \(\.\.\., 5\)"),
        ((torch.zeros(2, D, dtype=F64), torch.ones(3, D, dtype=F64)), "x with shape .* and v with shape .* do not broadcast"),
        ((torch.zeros(D, dtype=torch.int64), torch.ones(D, dtype=F64)), r"x must be a (floating-point|float32 or float64) tensor"),
        ((np.zeros(D), torch.ones(D, dtype=F64)), "x must be a torch.Tensor"),
    ],
)
@pytest.mark.parametrize("method", ["acceleration", "norm"])
def test_bad_points_raise_value_error_naming_the_argument(mixture, args, match, method):
    metric = sg.ScoreMetric(mixture.score, D)
    with pytest.raises(ValueError, match=match):
        getattr(metric, method)(*args)


def test_bad_points_in_inner_name_the_argument(mixture):
    metric = sg.ScoreMetric(mixture.score, D)
    x = torch.zeros(D, dtype=F64)
    with pytest.raises(ValueError, match="u contains NaN"):
        metric.inner(x, torch.full((D,), float("nan"), dtype=F64), x)
    with pytest.raises(ValueError, match="x with shape .* and u with shape .* do not broadcast"):
        metric.inner(torch.zeros(2, D, dtype=F64), torch.zeros(3, D, dtype=F64), x)
    with pytest.raises(ValueError, match="x must have shape"):
        metric.christoffel(torch.zeros(D + 2, dtype=F64))


def test_matrix_metric_rejects_bad_user_matrices():
    x = torch.tensor([[0.1, 0.2], [0.3, -0.4]], dtype=F64)
    indefinite = sg.MatrixMetric(lambda p: torch.diag_embed(torch.stack([torch.ones_like(p[..., 0]), p[..., 1]], -1)), 2)
    with pytest.raises(ValueError, match=r"G\(x\) is not positive-definite"):
        indefinite.matrix(x)
    with pytest.raises(ValueError, match=r"G\(x\) is not positive-definite"):
        indefinite.acceleration(x, x)
    with pytest.raises(ValueError, match=r"G\(x\) is not positive-definite"):
        indefinite.christoffel(x)
    asymmetric = torch.tensor([[2.0, 0.5], [0.0, 2.0]], dtype=F64)
    with pytest.raises(ValueError, match=r"G\(x\) is not symmetric"):
        sg.MatrixMetric(lambda p: asymmetric.expand(*p.shape[:-1], 2, 2), 2).matrix(x)
    with pytest.raises(ValueError, match=r"fn must map x .* to G of shape"):
        sg.MatrixMetric(lambda p: torch.eye(3, dtype=F64), 2).matrix(x)
    with pytest.raises(ValueError, match=r"G\(x\) contains NaN"):
        sg.MatrixMetric(lambda p: torch.full((*p.shape[:-1], 2, 2), float("nan"), dtype=F64), 2).matrix(x)


def test_fisher_rao_monte_carlo_mode_for_a_family_whose_log_prob_cannot_be_vmapped():
    """Multinomial(n, p) in free coordinates θ = (p₁, p₂), p₃ = 1 − p₁ − p₂ (its log_prob uses boolean-mask
    indexing, and torch has no Multinomial KL): G against the closed form n (diag(1/p₁, 1/p₂) + 11ᵀ/p₃),
    within 4 standard errors computed from an independent NumPy sample of the scores c_i/p_i − c₃/p₃."""
    trials, draws = 10, 4000

    def family(t):
        return Multinomial(trials, probs=torch.cat([t, 1 - t.sum(-1, keepdim=True)], -1))

    metric = sg.FisherRaoMetric(family, 2, mc_samples=draws, generator=torch.Generator().manual_seed(0))
    theta = torch.tensor([[0.2, 0.3], [0.5, 0.1]], dtype=F64)
    estimate = metric.matrix(theta)
    rng = np.random.default_rng(2)
    for b, (p1, p2) in enumerate(theta.tolist()):
        p = np.array([p1, p2, 1 - p1 - p2])
        exact = trials * (np.diag(1 / p[:2]) + 1 / p[2])
        counts = rng.multinomial(trials, p, size=200_000)
        scores = counts[:, :2] / p[:2] - counts[:, 2:] / p[2]
        products = scores[:, :, None] * scores[:, None, :]
        standard_error = products.std(0) / math.sqrt(draws)
        assert np.all(np.abs(estimate[b].numpy() - exact) < 4 * standard_error), (estimate[b], exact)
    assert bool(torch.isfinite(metric.acceleration(theta, torch.tensor([[0.1, 0.2], [0.3, -0.1]], dtype=F64))).all())
