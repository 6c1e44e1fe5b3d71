"""Closed-form Fisher–Rao distances (``sg.fisher_rao``) against independent oracles.

Oracles, none of which reuses the formula under test:
- one-parameter families: the length ∫ √I(θ) dθ of the only path between two
  parameters, integrated numerically by ``scipy.integrate.quad`` from the
  textbook Fisher information I(θ);
- univariate normal: the Poincaré half-plane distance (NumPy arccosh form), and
  ``quad`` of the Fisher speed along the known geodesics (vertical lines and
  semicircles of the half-plane);
- categorical: ``quad`` of the Fisher speed √(Σ ṗ²/p) along the great circle
  through √p and √q, and the two-category case as a one-parameter family;
- centred normal: the 1 × 1 case, SciPy's matrix logarithm
  √½ ‖logm(Σ1^{-1/2} Σ2 Σ1^{-1/2})‖_F, and invariance under congruence.

Tolerances: the closed forms are evaluated in float64 and ``quad`` is asked for
a relative error of 1e-12 on smooth integrands, so agreement to rtol 1e-10
leaves two orders of magnitude of slack while still catching any wrong constant
or wrong term.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch

import scoregeo as sg

fr = sg.fisher_rao
RTOL = 1e-10


def quad(f, a, b) -> float:
    value, _ = scipy.integrate.quad(f, a, b, epsabs=0.0, epsrel=1e-12, limit=200)
    return value


def t64(*values) -> torch.Tensor:
    """A float64 vector of the given values."""
    return torch.tensor(values, dtype=torch.float64)


def f64(value: float) -> torch.Tensor:
    """A float64 scalar (0-d) tensor."""
    return torch.tensor(value, dtype=torch.float64)


# ------------------------------------------------------------------- one-parameter families
RATE_PAIRS = [(0.3, 0.31), (1.0, 4.0), (7.5, 0.2), (0.01, 50.0)]


def test_poisson_matches_length_integral():
    rate1, rate2 = (t64(*column) for column in zip(*RATE_PAIRS))
    expected = [abs(quad(lambda lam: 1 / math.sqrt(lam), a, b)) for a, b in RATE_PAIRS]  # I(λ) = 1/λ
    torch.testing.assert_close(fr.poisson(rate1, rate2), t64(*expected), rtol=RTOL, atol=0)


def test_exponential_matches_length_integral():
    rate1, rate2 = (t64(*column) for column in zip(*RATE_PAIRS))
    expected = [abs(quad(lambda lam: 1 / lam, a, b)) for a, b in RATE_PAIRS]  # I(λ) = 1/λ²
    torch.testing.assert_close(fr.exponential(rate1, rate2), t64(*expected), rtol=RTOL, atol=0)


@pytest.mark.parametrize("n", [1, 3, 40])
def test_binomial_matches_length_integral(n):
    pairs = [(0.2, 0.25), (0.05, 0.9), (0.6, 0.1), (0.5, 0.999)]
    p1, p2 = (t64(*column) for column in zip(*pairs))
    expected = [abs(quad(lambda p: math.sqrt(n / (p * (1 - p))), a, b)) for a, b in pairs]  # I(p) = n/(p(1-p))
    torch.testing.assert_close(fr.binomial(p1, p2, n), t64(*expected), rtol=RTOL, atol=0)


def test_binomial_reaches_the_boundary():
    # The integrand n/√(p(1-p)) has integrable end-point singularities at 0 and 1; quad's
    # estimate there is less precise, hence rtol 1e-8. From p = 0 to p = 1 the length is π√n.
    expected = quad(lambda p: math.sqrt(5 / (p * (1 - p))), 0.0, 0.3)
    torch.testing.assert_close(fr.binomial(f64(0.0), f64(0.3), 5), f64(expected), rtol=1e-8, atol=0)
    torch.testing.assert_close(fr.binomial(f64(0.0), f64(1.0), 5), torch.tensor(math.pi * math.sqrt(5), dtype=torch.float64))


def test_binomial_accepts_integer_tensor_n_and_broadcasts_it():
    n = torch.tensor([[1], [4], [9]])
    d = fr.binomial(t64(0.1, 0.7), t64(0.4, 0.2), n)
    assert d.shape == (3, 2)
    torch.testing.assert_close(d[1], 2 * d[0], rtol=1e-14, atol=0)  # √n scaling, √4 = 2
    torch.testing.assert_close(d[2], 3 * d[0], rtol=1e-14, atol=0)


# ----------------------------------------------------------------------------- normal
def half_plane_distance(mu1, s1, mu2, s2) -> float:
    """√2 × the Poincaré half-plane distance between (μ/√2, σ) points (textbook arccosh form)."""
    x1, x2 = mu1 / np.sqrt(2), mu2 / np.sqrt(2)
    return float(np.sqrt(2) * np.arccosh(1 + ((x1 - x2) ** 2 + (s1 - s2) ** 2) / (2 * s1 * s2)))


NORMAL_PAIRS = [(0.0, 1.0, 1.0, 1.0), (-2.0, 0.5, 3.0, 4.0), (1.0, 0.1, 1.5, 0.1), (0.3, 2.0, 0.3, 0.7), (5.0, 3.0, -5.0, 0.2)]


def test_normal_matches_half_plane_formula():
    mu1, s1, mu2, s2 = (t64(*column) for column in zip(*NORMAL_PAIRS))
    expected = t64(*(half_plane_distance(*pair) for pair in NORMAL_PAIRS))
    torch.testing.assert_close(fr.normal(mu1, s1, mu2, s2), expected, rtol=RTOL, atol=0)


def normal_speed(mu_dot: float, sigma: float, sigma_dot: float) -> float:
    """Fisher speed of a curve (μ(t), σ(t)) for ds² = (dμ² + 2dσ²)/σ²."""
    return math.sqrt(mu_dot**2 + 2 * sigma_dot**2) / sigma


def test_normal_matches_length_along_vertical_geodesic():
    # Fixed mean: the σ-only segment is a geodesic (a vertical line of the half-plane).
    for s1, s2 in [(0.5, 3.0), (2.0, 0.01), (1.0, 1.0 + 1e-3)]:
        expected = quad(lambda s: normal_speed(0.0, s, 1.0), s1, s2)
        torch.testing.assert_close(fr.normal(f64(0.7), f64(s1), f64(0.7), f64(s2)), f64(abs(expected)), rtol=RTOL, atol=0)


def test_normal_matches_length_along_semicircle_geodesic():
    # Different means: the geodesic is a semicircle centred on the axis σ = 0 in (x, y) = (μ/√2, σ).
    for mu1, s1, mu2, s2 in [(-2.0, 0.5, 3.0, 4.0), (0.0, 1.0, 1.0, 1.0), (5.0, 3.0, -5.0, 0.2)]:
        x1, x2 = mu1 / math.sqrt(2), mu2 / math.sqrt(2)
        centre = (x2**2 + s2**2 - x1**2 - s1**2) / (2 * (x2 - x1))
        radius = math.hypot(x1 - centre, s1)
        phi1, phi2 = math.atan2(s1, x1 - centre), math.atan2(s2, x2 - centre)

        def speed(phi):
            # μ = √2 (c + R cos φ), σ = R sin φ, differentiated in φ.
            return normal_speed(-math.sqrt(2) * radius * math.sin(phi), radius * math.sin(phi), radius * math.cos(phi))

        expected = abs(quad(speed, phi1, phi2))
        torch.testing.assert_close(fr.normal(f64(mu1), f64(s1), f64(mu2), f64(s2)), f64(expected), rtol=RTOL, atol=0)


def test_normal_keeps_full_relative_precision_for_close_points():
    # σ-path oracle √2 |log(σ2/σ1)| via log1p; arccosh(1 + δ) would lose about half the digits here.
    s1, s2 = 2.0, 2.0 + 2e-10
    relative_step = (s2 - s1) / s1  # s2 − s1 is exact in floating point (Sterbenz)
    d = fr.normal(f64(0.0), f64(s1), f64(0.0), f64(s2))
    torch.testing.assert_close(d, f64(math.sqrt(2) * math.log1p(relative_step)), rtol=1e-12, atol=0)


# ------------------------------------------------------------------------ categorical
def great_circle_length(p: np.ndarray, q: np.ndarray) -> float:
    """∫ √(Σ ṗ_i² / p_i) dt along p(t) = u(t)², u the unit-speed great circle from √p to √q."""
    u0, u1 = np.sqrt(p), np.sqrt(q)
    angle = np.arccos(np.clip(u0 @ u1, -1, 1))
    w = (u1 - np.cos(angle) * u0) / np.sin(angle)  # unit tangent at u0, orthogonal to u0

    def speed(t):
        u = np.cos(t) * u0 + np.sin(t) * w
        u_dot = -np.sin(t) * u0 + np.cos(t) * w
        p_t, p_dot = u**2, 2 * u * u_dot
        return np.sqrt(np.sum(p_dot**2 / p_t))

    return quad(speed, 0.0, angle)


def test_categorical_matches_great_circle_length():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=4)
    q = rng.dirichlet(np.full(5, 0.7), size=4)
    expected = t64(*(great_circle_length(a, b) for a, b in zip(p, q)))
    torch.testing.assert_close(fr.categorical(torch.from_numpy(p), torch.from_numpy(q)), expected, rtol=RTOL, atol=0)


def test_categorical_two_categories_is_a_one_parameter_family():
    pairs = [(0.1, 0.35), (0.8, 0.2), (0.5, 0.51)]
    expected = [abs(quad(lambda a: 1 / math.sqrt(a * (1 - a)), p, q)) for p, q in pairs]  # I = 1/(p(1-p))
    p = t64(*(p for p, _ in pairs))
    q = t64(*(q for _, q in pairs))
    d = fr.categorical(torch.stack([p, 1 - p], -1), torch.stack([q, 1 - q], -1))
    torch.testing.assert_close(d, t64(*expected), rtol=RTOL, atol=0)
    torch.testing.assert_close(fr.binomial(p, q, 1), d, rtol=1e-13, atol=0)  # Bernoulli = 2 categories


def test_categorical_disjoint_supports_are_pi_apart():
    # √p and √q are orthogonal unit vectors: the angle is π/2 and the distance 2 · π/2.
    d = fr.categorical(t64(1.0, 0.0, 0.0), t64(0.0, 0.3, 0.7))
    torch.testing.assert_close(d, torch.tensor(math.pi, dtype=torch.float64), rtol=1e-14, atol=0)


def test_categorical_keeps_full_relative_precision_for_close_points():
    # To first order the distance of p and p + ε(e1 − e2) is ε √(1/p1 + 1/p2); the next term is O(ε²).
    eps = 1e-9
    p = t64(0.2, 0.3, 0.5)
    q = p + eps * t64(1.0, -1.0, 0.0)
    torch.testing.assert_close(fr.categorical(p, q), f64(eps * math.sqrt(1 / 0.2 + 1 / 0.3)), rtol=1e-7, atol=0)


# ------------------------------------------------------------------------ centred normal
def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.5 * np.eye(d)


def test_centred_normal_one_by_one_case():
    var1, var2 = t64(0.3, 2.0, 9.0), t64(4.0, 2.5, 0.01)
    expected = (var1 / var2).log().abs() / math.sqrt(2)
    d = fr.centred_normal(var1.reshape(3, 1, 1), var2.reshape(3, 1, 1))
    torch.testing.assert_close(d, expected, rtol=1e-13, atol=0)
    # and the same value as the length ∫ √(½) dv / v of the only path in one dimension
    torch.testing.assert_close(d[0], f64(quad(lambda v: math.sqrt(0.5) / v, 0.3, 4.0)), rtol=RTOL, atol=0)


def test_centred_normal_matches_matrix_logarithm():
    rng = np.random.default_rng(1)
    pairs = [(random_spd(rng, 4), random_spd(rng, 4)) for _ in range(3)]
    expected = []
    for s1, s2 in pairs:
        root_inv = np.linalg.inv(scipy.linalg.sqrtm(s1).real)
        expected.append(np.sqrt(0.5) * np.linalg.norm(scipy.linalg.logm(root_inv @ s2 @ root_inv).real, "fro"))
    cov1 = torch.from_numpy(np.stack([s1 for s1, _ in pairs]))
    cov2 = torch.from_numpy(np.stack([s2 for _, s2 in pairs]))
    # sqrtm/logm are accurate to about 1e-12 relative for these well-conditioned matrices
    torch.testing.assert_close(fr.centred_normal(cov1, cov2), t64(*expected), rtol=1e-9, atol=0)


def test_centred_normal_is_invariant_under_congruence():
    rng = np.random.default_rng(2)
    s1, s2 = torch.from_numpy(random_spd(rng, 5)), torch.from_numpy(random_spd(rng, 5))
    a = torch.from_numpy(rng.standard_normal((5, 5)))  # invertible with probability 1
    before = fr.centred_normal(s1, s2)
    after = fr.centred_normal(a @ s1 @ a.T, a @ s2 @ a.T)
    assert before > 0.5
    torch.testing.assert_close(after, before, rtol=1e-9, atol=0)  # cond(A)² amplifies round-off


def test_centred_normal_of_scaled_covariance():
    # Σ2 = c Σ1: every generalized eigenvalue is c, so d = √(d/2) |log c|.
    rng = np.random.default_rng(3)
    s1 = torch.from_numpy(random_spd(rng, 3))
    torch.testing.assert_close(fr.centred_normal(s1, 7.0 * s1), f64(math.sqrt(1.5) * math.log(7.0)), rtol=1e-12, atol=0)


def test_centred_normal_stays_accurate_for_ill_conditioned_covariances():
    # Commuting (simultaneously diagonalisable) covariances: d = √(½ Σ log²(b_i/a_i)) exactly.
    a = t64(1e-12, 1.0, 1e12)
    b = t64(3e-12, 0.5, 1e11)
    expected = torch.sqrt(0.5 * ((b / a).log() ** 2).sum())
    torch.testing.assert_close(fr.centred_normal(torch.diag(a), torch.diag(b)), expected, rtol=1e-12, atol=0)
    # Rotated, with condition number 1e8: forming R diag(a) Rᵀ already perturbs the smallest
    # eigenvalue by about cond · eps ≈ 1e-8 relative, which bounds the attainable accuracy.
    a, b = t64(1e-4, 1.0, 1e4), t64(3e-4, 0.5, 1e3)
    expected = torch.sqrt(0.5 * ((b / a).log() ** 2).sum())
    rotation, _ = torch.linalg.qr(torch.from_numpy(np.random.default_rng(4).standard_normal((3, 3))))
    d = fr.centred_normal(rotation @ torch.diag(a) @ rotation.T, rotation @ torch.diag(b) @ rotation.T)
    torch.testing.assert_close(d, expected, rtol=1e-6, atol=0)


# ------------------------------------------------------------------- metric-space axioms
def sample_arguments(family: str, rng: np.random.Generator, batch: int):
    """Two random members of ``family`` as tuples of float64 tensors (batch leading)."""
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64))  # noqa: E731
    if family == "normal":
        first = (t(rng.normal(size=batch)), t(rng.uniform(0.1, 3, batch)))
        return first, (t(rng.normal(size=batch)), t(rng.uniform(0.1, 3, batch)))
    if family == "categorical":
        return (t(rng.dirichlet(np.ones(4), batch)),), (t(rng.dirichlet(np.ones(4), batch)),)
    if family in ("poisson", "exponential"):
        return (t(rng.uniform(0.1, 5, batch)),), (t(rng.uniform(0.1, 5, batch)),)
    if family == "binomial":
        return (t(rng.uniform(0, 1, batch)),), (t(rng.uniform(0, 1, batch)),)
    return (t(np.stack([random_spd(rng, 3) for _ in range(batch)])),), (t(np.stack([random_spd(rng, 3) for _ in range(batch)])),)


def distance(family: str, x, y) -> torch.Tensor:
    if family == "normal":
        return fr.normal(x[0], x[1], y[0], y[1])
    if family == "binomial":
        return fr.binomial(x[0], y[0], 6)
    return getattr(fr, family)(x[0], y[0])


FAMILIES = ["normal", "categorical", "poisson", "exponential", "binomial", "centred_normal"]


@pytest.mark.parametrize("family", FAMILIES)
def test_metric_axioms(family):
    rng = np.random.default_rng(5)
    x, y = sample_arguments(family, rng, 20)
    z, _ = sample_arguments(family, rng, 20)
    d_xy, d_yx = distance(family, x, y), distance(family, y, x)
    assert d_xy.shape == (20,) and d_xy.dtype == torch.float64
    assert bool((d_xy > 0).all())
    torch.testing.assert_close(d_xy, d_yx, rtol=1e-12, atol=0)
    assert float(distance(family, x, x).abs().max()) <= 1e-14
    # triangle inequality, with room for round-off
    assert bool((distance(family, x, z) <= d_xy + distance(family, y, z) + 1e-12).all())


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_call_equals_pointwise_calls(family):
    x, y = sample_arguments(family, np.random.default_rng(6), 3)
    batched = distance(family, x, y)
    pointwise = torch.stack([distance(family, [a[i] for a in x], [b[i] for b in y]) for i in range(3)])
    torch.testing.assert_close(batched, pointwise, rtol=1e-14, atol=0)


def test_arguments_broadcast():
    mu = t64(0.0, 1.0, 2.0, 3.0)
    sigma = t64(0.5, 1.0, 2.0).reshape(3, 1)
    d = fr.normal(mu, sigma, 0.0, 1.0)  # Python numbers broadcast too
    assert d.shape == (3, 4)
    torch.testing.assert_close(d[2, 1], fr.normal(f64(1.0), f64(2.0), f64(0.0), f64(1.0)))
    p = torch.tensor([[0.2, 0.8], [0.5, 0.5]], dtype=torch.float64)
    assert fr.categorical(p.unsqueeze(1), p.unsqueeze(0)).shape == (2, 2)
    cov = torch.eye(2, dtype=torch.float64) * t64(1.0, 2.0, 3.0).reshape(3, 1, 1)
    assert fr.centred_normal(cov.unsqueeze(1), cov.unsqueeze(0)).shape == (3, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept(dtype):
    one = torch.ones((), dtype=dtype)
    assert fr.normal(0.0 * one, one, one, 2 * one).dtype == dtype
    assert fr.poisson(one, 3.0).dtype == dtype  # a Python number adopts the tensor's dtype
    assert fr.exponential(2 * one, one).dtype == dtype
    assert fr.binomial(0.3 * one, 0.4, 5).dtype == dtype
    assert fr.categorical(torch.tensor([0.4, 0.6], dtype=dtype), torch.tensor([0.1, 0.9], dtype=dtype)).dtype == dtype
    assert fr.centred_normal(torch.eye(2, dtype=dtype), 2 * torch.eye(2, dtype=dtype)).dtype == dtype
    # float32 values agree with float64 ones to float32 precision
    d32 = fr.normal(torch.tensor(0.3, dtype=dtype), torch.tensor(1.5, dtype=dtype), 1.0, 0.5)
    torch.testing.assert_close(d32.double(), f64(half_plane_distance(0.3, 1.5, 1.0, 0.5)), rtol=1e-6, atol=0)


def test_float_tensors_promote_and_integers_use_default_dtype():
    assert fr.poisson(torch.tensor(1.0, dtype=torch.float32), torch.tensor(2.0, dtype=torch.float64)).dtype == torch.float64
    assert fr.poisson(torch.tensor(1), 4).dtype == torch.get_default_dtype()
    assert float(fr.poisson(1, 4)) == 2.0


def test_distances_work_under_torch_func_transforms():
    # Validation cannot inspect values under vmap; the formulas must still run and agree.
    mu, sigma = t64(0.0, 1.0, -1.0), t64(1.0, 0.5, 2.0)
    vmapped = torch.func.vmap(fr.normal)(mu, sigma, sigma, mu.exp())
    torch.testing.assert_close(vmapped, fr.normal(mu, sigma, sigma, mu.exp()), rtol=1e-14, atol=0)
    cov = torch.eye(2, dtype=torch.float64) * t64(1.0, 2.0, 3.0).reshape(3, 1, 1)
    torch.testing.assert_close(torch.func.vmap(fr.centred_normal)(cov, cov.flip(0)), fr.centred_normal(cov, cov.flip(0)))


def test_distances_are_differentiable():
    # gradcheck compares autograd with central finite differences at generic points
    x = (t64(0.3).requires_grad_(), t64(1.2).requires_grad_(), t64(-0.5).requires_grad_(), t64(0.7).requires_grad_())
    assert torch.autograd.gradcheck(fr.normal, x)
    assert torch.autograd.gradcheck(fr.poisson, (t64(1.5).requires_grad_(), t64(0.2).requires_grad_()))
    assert torch.autograd.gradcheck(fr.exponential, (t64(1.5).requires_grad_(), t64(0.2).requires_grad_()))
    assert torch.autograd.gradcheck(lambda a, b: fr.binomial(a, b, 4), (t64(0.3).requires_grad_(), t64(0.8).requires_grad_()))
    # categorical: perturb within the simplex through a softmax so the inputs stay valid
    logits = (t64(0.1, 0.5, -1.0).requires_grad_(), t64(1.0, 0.0, 0.3).requires_grad_())
    assert torch.autograd.gradcheck(lambda a, b: fr.categorical(a.softmax(-1), b.softmax(-1)), logits)
    a = torch.tensor([[2.0, 0.3], [0.3, 1.0]], dtype=torch.float64)
    b = torch.tensor([[0.5, -0.1], [-0.1, 3.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda u, v: fr.centred_normal(u @ u.mT, v @ v.mT), (a.requires_grad_(), b.requires_grad_()))


# ----------------------------------------------------------------------------- bad input
EYE2 = torch.eye(2, dtype=torch.float64)
LOWER = torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=torch.float64)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: fr.normal(0.0, 0.0, 0.0, 1.0), "sigma1"),
        (lambda: fr.normal(0.0, 1.0, 0.0, t64(1.0, -2.0)), "sigma2"),
        (lambda: fr.normal(float("nan"), 1.0, 0.0, 1.0), "mu1"),
        (lambda: fr.normal(0.0, 1.0, t64(0.0, float("inf")), 1.0), "mu2"),
        (lambda: fr.normal(t64(0.0, 1.0), 1.0, t64(0.0, 1.0, 2.0), 1.0), "mu1 .* mu2"),
        (lambda: fr.normal("0", 1.0, 0.0, 1.0), "mu1"),
        (lambda: fr.normal(torch.tensor(1j), 1.0, 0.0, 1.0), "mu1"),
        (lambda: fr.poisson(0.0, 1.0), "rate1"),
        (lambda: fr.poisson(1.0, -3.0), "rate2"),
        (lambda: fr.poisson(t64(1.0, 2.0), t64(1.0, 2.0, 3.0)), "rate1 .* rate2"),
        (lambda: fr.exponential(-1.0, 1.0), "rate1"),
        (lambda: fr.exponential(1.0, t64(0.0)), "rate2"),
        (lambda: fr.exponential(True, 1.0), "rate1"),
        (lambda: fr.binomial(0.5, 0.5, 0), "n"),
        (lambda: fr.binomial(0.5, 0.5, 2.5), "n"),
        (lambda: fr.binomial(0.5, 0.5, True), "n"),
        (lambda: fr.binomial(0.5, 0.5, torch.tensor([3.0])), "n"),
        (lambda: fr.binomial(0.5, 0.5, torch.tensor([3, 0])), "n"),
        (lambda: fr.binomial(1.2, 0.5, 3), "p1"),
        (lambda: fr.binomial(0.5, t64(0.5, -0.1), 3), "p2"),
        (lambda: fr.binomial(t64(0.1, 0.2), t64(0.1, 0.2, 0.3), 3), "p1 .* p2"),
        (lambda: fr.categorical(t64(0.5, 0.6), t64(0.5, 0.5)), "p must sum to 1"),
        (lambda: fr.categorical(t64(0.5, 0.5), t64(1.5, -0.5)), "q must have non-negative"),
        (lambda: fr.categorical(t64(0.5, 0.5), t64(0.2, 0.3, 0.5)), "p and q"),
        (lambda: fr.categorical(t64(0.5, 0.5), f64(1.0)), "p and q"),
        (lambda: fr.categorical(t64(0.5, float("nan")), t64(0.5, 0.5)), "p contains NaN"),
        (lambda: fr.centred_normal(EYE2 * t64(1.0, -1.0), EYE2), "cov1 must be positive-definite"),
        (lambda: fr.centred_normal(EYE2, 0 * EYE2), "cov2 must be positive-definite"),
        (lambda: fr.centred_normal(EYE2, LOWER), "cov2 must be symmetric"),
        (lambda: fr.centred_normal(torch.ones(2, 3, dtype=torch.float64), EYE2), "cov1 must be square"),
        (lambda: fr.centred_normal(EYE2, torch.eye(3, dtype=torch.float64)), "same size d"),
        (lambda: fr.centred_normal(torch.eye(2).expand(2, 2, 2), torch.eye(2).expand(3, 2, 2)), "cov1 .* cov2"),
        (lambda: fr.centred_normal(torch.full((2, 2), float("nan")), torch.eye(2)), "cov1 contains NaN"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
