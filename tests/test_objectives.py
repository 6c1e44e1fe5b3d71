"""Score-matching objectives (``scoregeo.scores.objectives``) against independent oracles.

Oracles:
* the Fisher-divergence identities of the module table, with the exact score of
  a Gaussian mixture (``GaussianMixture.score``, ``.noisy(σ).score``,
  ``.noisy_score``) as s*: for two fixed, deliberately wrong scores A and B,
  loss(A) − loss(B) must equal the weighted ½E‖A − s*‖² − ½E‖B − s*‖²;
* closed-form minimisers for a Gaussian target and a linear score s(x) = A x + b
  (the losses are quadratic in (A, b), so one Newton step is the exact
  minimiser of the sample objective);
* ``scipy.spatial.distance.pdist`` for ``sigma_max_from_data``;
* central finite differences (``torch.autograd.gradcheck``) for the parameter
  gradients of the losses built on double backward.

Monte-Carlo checks use a fixed seed, float64, and a tolerance of k standard
errors computed from the per-example terms (``reduction="none"``): each test
says which k and why.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.spatial.distance import pdist

import scoregeo as sg
from scoregeo.scores.objectives import (
    denoising_score_matching,
    exact_score_matching,
    geometric_sigmas,
    ncsn_loss,
    sde_loss,
    sigma_max_from_data,
    sliced_score_matching,
)
from scoregeo.scores.sde import VESDE, VPSDE

F64 = torch.float64
K_SE = 4.0  # |mean| < 4 standard errors: a fixed-seed test that a correct loss passes with prob. > 0.9999


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def mixture() -> sg.GaussianMixture:
    means = torch.tensor([[-2.0, 0.0], [1.5, 1.0], [0.5, -2.0]], dtype=F64)
    covs = torch.stack(
        [
            torch.tensor([[0.5, 0.2], [0.2, 0.4]], dtype=F64),
            torch.tensor([[0.3, -0.1], [-0.1, 0.6]], dtype=F64),
            torch.tensor([[0.8, 0.0], [0.0, 0.2]], dtype=F64),
        ]
    )
    return sg.GaussianMixture(means, covs, torch.tensor([0.3, 0.5, 0.2], dtype=F64))


# Two wrong perturbations of a true score, smooth with non-constant Jacobians so that
# the trace terms differ as well as the norms.
W = torch.tensor([[0.8, -0.5], [0.3, 1.1]], dtype=F64)


def pert_a(x: torch.Tensor) -> torch.Tensor:
    return 0.4 * torch.sin(x) + torch.tensor([0.2, -0.1], dtype=F64)


def pert_b(x: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    return -0.3 * true + 0.5 * torch.tanh(x @ W.T) + torch.tensor([0.3, -0.2], dtype=F64)


def check_mean_zero(diff: torch.Tensor, effect: torch.Tensor) -> None:
    """diff: per-example terms whose expectation is 0; effect: per-example RHS, whose mean must be resolved."""
    diff, effect = diff.detach(), effect.detach()
    n = diff.numel()
    se = float(diff.std()) / math.sqrt(n)
    assert abs(float(diff.mean())) < K_SE * se, (float(diff.mean()), se)
    # The check is only meaningful if it resolves the effect being tested: the
    # identity's right-hand side must be much larger than the standard error.
    assert se < 0.05 * abs(float(effect.mean())), (se, float(effect.mean()))


# ----------------------------------------------------------------------------- Fisher identities, clean data


def test_exact_score_matching_fisher_identity(mixture):
    """E[ℓ(A) − ℓ(B)] = ½E_p‖A − s*‖² − ½E_p‖B − s*‖² (integration by parts; same x for both)."""
    x = mixture.sample(20000, gen(0))
    score_a = lambda y: mixture.score(y) + pert_a(y)  # noqa: E731
    score_b = lambda y: mixture.score(y) + pert_b(y, mixture.score(y))  # noqa: E731
    la = exact_score_matching(score_a, x, reduction="none")
    lb = exact_score_matching(score_b, x, reduction="none")
    true = mixture.score(x)
    rhs = 0.5 * ((pert_a(x)) ** 2).sum(1) - 0.5 * (pert_b(x, true) ** 2).sum(1)
    # ℓ − ½‖s − s*‖² has per-example expectation −½E‖s*‖² for any s: the difference
    # of the two has mean 0; its standard error comes from its empirical spread.
    check_mean_zero((la - lb) - rhs, rhs)
    assert torch.allclose(exact_score_matching(score_a, x), la.mean())


@pytest.mark.parametrize("variance_reduced", [False, True])
def test_sliced_score_matching_fisher_identity(mixture, variance_reduced):
    """Sliced SM is unbiased for exact SM, hence satisfies the same identity (same x and v for A and B)."""
    x = mixture.sample(20000, gen(1))
    score_a = lambda y: mixture.score(y) + pert_a(y)  # noqa: E731
    score_b = lambda y: mixture.score(y) + pert_b(y, mixture.score(y))  # noqa: E731
    kw = dict(n_projections=4, variance_reduced=variance_reduced, reduction="none")
    la = sliced_score_matching(score_a, x, generator=gen(2), **kw)
    lb = sliced_score_matching(score_b, x, generator=gen(2), **kw)
    true = mixture.score(x)
    rhs = 0.5 * (pert_a(x) ** 2).sum(1) - 0.5 * (pert_b(x, true) ** 2).sum(1)
    check_mean_zero((la - lb) - rhs, rhs)
    # And it estimates the exact loss itself: E_v of the sliced terms is the exact term.
    exact = exact_score_matching(score_a, x, reduction="none")
    check_mean_zero(la - exact, exact)


# ----------------------------------------------------------------------------- Fisher identities, noisy data


class Recorder:
    """A noise-conditional score that records the (x̃, σ) it is called with."""

    def __init__(self, fn):
        self.fn = fn
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x, sigma):
        self.calls.append((x.detach().clone(), sigma.detach().clone()))
        return self.fn(x, sigma)


def noisy_pair(mixture, mean_coef_of_sigma=lambda s: torch.ones_like(s)):
    """A and B = true noisy score (as a function of x and σ) plus the two perturbations."""

    def true(x, sigma):
        return mixture.noisy_score(x, sigma, mean_coef_of_sigma(sigma))

    def a(x, sigma):
        return true(x, sigma) + pert_a(x)

    def b(x, sigma):
        t = true(x, sigma)
        return t + pert_b(x, t)

    return Recorder(a), Recorder(b)


def noisy_identity_check(la, lb, rec_a, rec_b, true_at):
    """la − lb versus ½σ²(‖A − s*‖² − ‖B − s*‖²) at the recorded x̃, σ."""
    (xa, sa), (xb, sb) = rec_a.calls[-1], rec_b.calls[-1]
    assert torch.equal(xa, xb) and torch.equal(sa, sb)  # common random numbers
    true = true_at(xa, sa)
    rhs = 0.5 * sa**2 * ((pert_a(xa) ** 2).sum(1) - (pert_b(xa, true) ** 2).sum(1))
    check_mean_zero((la - lb) - rhs, rhs)


@pytest.mark.parametrize("per_example_sigma", [False, True])
def test_dsm_fisher_identity(mixture, per_example_sigma):
    """E[ℓ(A) − ℓ(B)] = ½σ²E_{p_σ}(‖A − s*_σ‖² − ‖B − s*_σ‖²) (Vincent 2011, σ²-weighted)."""
    n = 20000
    x = mixture.sample(n, gen(3))
    if per_example_sigma:
        sigma = 0.2 + 0.8 * torch.rand(n, generator=gen(4), dtype=F64)
        true_at = lambda y, s: mixture.noisy_score(y, s)  # noqa: E731
    else:
        sigma = 0.5
        true_at = lambda y, s: mixture.noisy(0.5).score(y)  # noqa: E731  (oracle independent of noisy_score)
    rec_a, rec_b = noisy_pair(mixture)
    la = denoising_score_matching(rec_a, x, sigma, gen(5), reduction="none")
    lb = denoising_score_matching(rec_b, x, sigma, gen(5), reduction="none")
    assert torch.allclose(rec_a.calls[-1][1], torch.as_tensor(sigma, dtype=F64).expand(n))
    noisy_identity_check(la, lb, rec_a, rec_b, true_at)


def test_dsm_closed_form_for_gaussian_and_linear_score():
    """Gaussian data and s(x̃) = A x̃ + b: the expected loss is a closed form in (A, b, μ, Σ, σ).

    x̃ ~ N(μ, C), C = Σ + σ²I, Cov(x̃, ε) = σI, so
    E ½‖σ(Ax̃ + b) + ε‖² = ½[σ² tr(ACAᵀ) + σ²‖Aμ + b‖² + 2σ² tr A + d].
    Tolerance: 4 standard errors of the per-example terms.
    """
    n, d = 100000, 2
    a = torch.tensor([[-0.8, 0.3], [0.1, -1.2]], dtype=F64)
    b = torch.tensor([0.4, -0.3], dtype=F64)
    x = sg.Gaussian(MU, SIGMA).sample(n, gen(15))
    for sigma in (0.3, 1.5):
        c = SIGMA + sigma**2 * torch.eye(d, dtype=F64)
        expected = 0.5 * (
            sigma**2 * torch.trace(a @ c @ a.T) + sigma**2 * ((a @ MU + b) ** 2).sum() + 2 * sigma**2 * torch.trace(a) + d
        )
        per = denoising_score_matching(lambda y, s: y @ a.T + b, x, sigma, gen(16), reduction="none")
        se = float(per.std()) / math.sqrt(n)
        assert abs(float(per.mean() - expected)) < K_SE * se, (float(per.mean()), float(expected), se)


def test_exact_sm_value_for_linear_score(gaussian_sample):
    """For s = Ax + b the trace is tr A exactly: loss = ½ mean‖Ax + b‖² + tr A to rounding."""
    x = gaussian_sample
    a = torch.tensor([[-0.8, 0.3], [0.1, -1.2]], dtype=F64)
    b = torch.tensor([0.4, -0.3], dtype=F64)
    expected = 0.5 * ((x @ a.T + b) ** 2).sum(1) + torch.trace(a)
    torch.testing.assert_close(
        exact_score_matching(lambda y: y @ a.T + b, x, reduction="none"), expected, rtol=1e-13, atol=1e-13
    )


def test_dsm_constant_term(mixture):
    """At the true score the loss is the constant ½(d − σ²E‖∇log p_σ‖²) of the module table."""
    sigma, n = 0.7, 40000
    x = mixture.sample(n, gen(6))
    noisy = mixture.noisy(sigma)
    loss = denoising_score_matching(lambda y, s: noisy.score(y), x, sigma, gen(7), reduction="none")
    z = noisy.sample(n, gen(8))  # independent sample of p_σ for the constant
    const = 0.5 * (2 - sigma**2 * (noisy.score(z) ** 2).sum(1))
    se = math.sqrt(float(loss.var()) / n + float(const.var()) / n)  # two independent samples
    assert abs(float(loss.mean() - const.mean())) < K_SE * se


def test_dsm_true_noisy_score_beats_perturbations(mixture):
    """With common random numbers the exact noisy score has a smaller DSM loss than perturbations of it.

    A perturbation δ raises the expected loss by ½σ²E‖δ‖²; the per-example
    difference is σδ·(σs* + ε) + ½σ²‖δ‖², and we require its mean to be
    positive by more than 4 of its standard errors.
    """
    sigma, n = 0.4, 20000
    x = mixture.sample(n, gen(9))
    noisy = mixture.noisy(sigma)
    best = denoising_score_matching(lambda y, s: noisy.score(y), x, sigma, gen(10), reduction="none")
    for delta in (
        lambda y: 0.2 * torch.ones_like(y),
        lambda y: 0.2 * noisy.score(y),
        lambda y: -0.2 * noisy.score(y),
        lambda y: 0.3 * torch.sin(3 * y),
    ):
        other = denoising_score_matching(lambda y, s: noisy.score(y) + delta(y), x, sigma, gen(10), reduction="none")
        diff = other - best
        assert float(diff.mean()) > K_SE * float(diff.std()) / math.sqrt(n)


def test_ncsn_loss_fisher_identity(mixture):
    """Per example: σ_i drawn from the levels, identity of the DSM line at σ_i; levels drawn uniformly."""
    n = 20000
    x = mixture.sample(n, gen(11))
    sigmas = geometric_sigmas(0.1, 3.0, 5, dtype=F64)
    rec_a, rec_b = noisy_pair(mixture)
    la = ncsn_loss(rec_a, x, sigmas, gen(12), reduction="none")
    lb = ncsn_loss(rec_b, x, sigmas, gen(12), reduction="none")
    used = rec_a.calls[-1][1]
    # every σ passed is one of the levels, each level drawn ~ n/5 times (binomial, 5 SE)
    idx = (used[:, None] == sigmas[None, :]).nonzero()[:, 1]
    assert idx.numel() == n
    counts = torch.bincount(idx, minlength=5).to(F64)
    assert ((counts - n / 5).abs() < 5 * math.sqrt(n * 0.2 * 0.8)).all()
    noisy_identity_check(la, lb, rec_a, rec_b, lambda y, s: mixture.noisy_score(y, s))


def _t_from_sigma(sde, sigma: torch.Tensor) -> torch.Tensor:
    """Invert σ(t) for the two SDEs (closed forms from their definitions)."""
    if isinstance(sde, VESDE):
        return torch.log(sigma / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)
    # VP: log m = −¼Δβ t² − ½β_min t with m² = 1 − σ²; positive root of the quadratic
    log_m = 0.5 * torch.log1p(-(sigma**2))
    a, b = 0.25 * (sde.beta_max - sde.beta_min), 0.5 * sde.beta_min
    return (-b + torch.sqrt(b**2 - 4 * a * log_m)) / (2 * a)


@pytest.mark.parametrize("sde", [VESDE(sigma_min=0.05, sigma_max=5.0), VPSDE()], ids=["VE", "VP"])
def test_sde_loss_fisher_identity(mixture, sde):
    """E[ℓ(A) − ℓ(B)] = E_t ½σ(t)² E_{p_t}(‖A − s*_t‖² − ‖B − s*_t‖²), s*_t the score of m(t)X + σ(t)Z."""
    n = 20000
    x = mixture.sample(n, gen(13))
    if isinstance(sde, VPSDE):
        rec_a, rec_b = noisy_pair(mixture, lambda s: torch.sqrt(1 - s**2))
    else:
        rec_a, rec_b = noisy_pair(mixture)
    la = sde_loss(rec_a, sde, x, gen(14), reduction="none")
    lb = sde_loss(rec_b, sde, x, gen(14), reduction="none")
    sigma = rec_a.calls[-1][1]
    t = _t_from_sigma(sde, sigma)
    # the score received σ(t) (not t) for some t in [t_min, T], t ~ U(t_min, T) (its mean, 5 standard errors)
    assert torch.allclose(sde.std(t), sigma, rtol=1e-9, atol=0)
    assert float(t.min()) >= sde.t_min - 1e-9 and float(t.max()) <= sde.T + 1e-9
    half = 0.5 * (sde.t_min + sde.T)
    assert abs(float(t.mean()) - half) < 5 * (sde.T - sde.t_min) / math.sqrt(12 * n)

    def true_at(y, s):
        tt = _t_from_sigma(sde, s)
        return mixture.noisy_score(y, sigma=sde.std(tt), mean_coef=sde.mean_coef(tt))

    noisy_identity_check(la, lb, rec_a, rec_b, true_at)


# ----------------------------------------------------------------------------- minimisers for a Gaussian target


MU = torch.tensor([1.0, -0.5], dtype=F64)
SIGMA = torch.tensor([[1.0, 0.4], [0.4, 0.5]], dtype=F64)


def linear_score(theta: torch.Tensor):
    a, b = theta[:4].reshape(2, 2), theta[4:]
    return lambda y: y @ a.T + b


def newton_minimiser(loss_of_theta) -> torch.Tensor:
    """Exact minimiser of a quadratic in θ ∈ R⁶: θ* = −H⁻¹∇L(0); checks the gradient vanishes there."""
    theta0 = torch.zeros(6, dtype=F64)
    g = torch.autograd.functional.jacobian(loss_of_theta, theta0)
    h = torch.autograd.functional.hessian(loss_of_theta, theta0)
    theta = -torch.linalg.solve(h, g)
    g_star = torch.autograd.functional.jacobian(loss_of_theta, theta)
    assert float(g_star.abs().max()) < 1e-9 * max(1.0, float(g.abs().max()))  # quadratic: one step suffices
    return theta


@pytest.fixture(scope="module")
def gaussian_sample():
    return sg.Gaussian(MU, SIGMA).sample(20000, gen(20))


def sample_moments(x):
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / x.shape[0]  # biased: the exact-SM minimiser uses 1/N
    return mean, cov


def test_exact_sm_minimiser_is_sample_gaussian_score(gaussian_sample):
    """For s = Ax + b, ½ mean‖Ax + b‖² + tr A is minimised exactly by A = −Ŝ⁻¹, b = Ŝ⁻¹x̄ (Ŝ biased)."""
    x = gaussian_sample
    theta = newton_minimiser(lambda th: exact_score_matching(linear_score(th), x))
    mean, cov = sample_moments(x)
    prec = torch.linalg.inv(cov)
    torch.testing.assert_close(theta[:4].reshape(2, 2), -prec, rtol=0, atol=1e-8)
    torch.testing.assert_close(theta[4:], prec @ mean, rtol=0, atol=1e-8)


@pytest.mark.parametrize("variance_reduced", [False, True])
def test_sliced_sm_minimiser(gaussian_sample, variance_reduced):
    """The sliced objective (fixed projections) is minimised near A = −Ŝ⁻¹, b = Ŝ⁻¹x̄.

    For SSM-VR the minimiser is exactly A = −V̂Ŝ⁻¹, b = −A x̄, with V̂ = mean vvᵀ
    over the K = N·M projections, so A + Ŝ⁻¹ = (I − V̂)Ŝ⁻¹, whose entries have
    standard deviation ≤ sd = √(2/K)·‖Ŝ⁻¹‖₂ (Var(v_i v_j) ≤ 2). The plain form
    adds the fluctuation of ½(vᵀs)² around ½‖s‖²; over seeds 21–26 its error
    was 1.0–2.9 sd (VR: 0.3–1.0 sd), so 6 sd leaves about 3 of its spreads.
    """
    x = gaussian_sample
    m = 4

    def loss(th):
        return sliced_score_matching(linear_score(th), x, m, variance_reduced, generator=gen(21))

    theta = newton_minimiser(loss)
    mean, cov = sample_moments(x)
    prec = torch.linalg.inv(cov)
    a, b = theta[:4].reshape(2, 2), theta[4:]
    sd = math.sqrt(2 / (x.shape[0] * m)) * float(torch.linalg.matrix_norm(prec, 2))
    assert float((a + prec).abs().max()) < 6 * sd
    # b through the implied mean −A⁻¹b, which must be x̄ (exactly so for VR, where ∂/∂b gives b = −A x̄)
    implied_mean = -torch.linalg.solve(a, b)
    assert float((implied_mean - mean).abs().max()) < 6 * sd * float(torch.linalg.matrix_norm(cov, 2))
    if variance_reduced:
        torch.testing.assert_close(b, -a @ mean, rtol=0, atol=1e-9)


def test_dsm_minimiser_is_score_of_smoothed_gaussian():
    """DSM at σ with s = Ax̃ + b: population minimiser A = −(Σ + σ²I)⁻¹, b = (Σ + σ²I)⁻¹μ.

    The sample minimiser is a least-squares regression of −ε/σ on x̃ (weights σ²):
    coefficient standard errors are √(R_jj [C⁻¹]_kk / N)/σ with C = Σ + σ²I the
    covariance of x̃ and R = Σ C⁻¹ the residual covariance of ε given x̃; the
    intercepts' are √(R_jj (1 + μᵀC⁻¹μ) / N)/σ. Tolerance: 5 standard errors.
    """
    sigma, n = 0.6, 40000
    x = sg.Gaussian(MU, SIGMA).sample(n, gen(22))
    theta = newton_minimiser(lambda th: denoising_score_matching(lambda y, s: linear_score(th)(y), x, sigma, gen(23)))
    c = SIGMA + sigma**2 * torch.eye(2, dtype=F64)
    c_inv = torch.linalg.inv(c)
    r = SIGMA @ c_inv
    se_a = torch.sqrt(r.diagonal()[:, None] * c_inv.diagonal()[None, :] / n) / sigma
    se_b = torch.sqrt(r.diagonal() * (1 + MU @ c_inv @ MU) / n) / sigma
    a, b = theta[:4].reshape(2, 2), theta[4:]
    assert ((a + c_inv).abs() < 5 * se_a).all(), (a, -c_inv, se_a)
    assert ((b - c_inv @ MU).abs() < 5 * se_b).all(), (b, c_inv @ MU, se_b)
    # and it is not the clean score: the smoothing is resolved by the sample
    assert float((a + torch.linalg.inv(SIGMA)).abs().max()) > 20 * float(se_a.max())


# ----------------------------------------------------------------------------- noise levels


def test_geometric_sigmas():
    s = geometric_sigmas(0.01, 50.0, 10, dtype=F64)
    assert s.shape == (10,) and s.dtype == F64
    assert float(s[0]) == 50.0 and float(s[-1]) == 0.01
    ratios = s[1:] / s[:-1]
    torch.testing.assert_close(ratios, torch.full((9,), (0.01 / 50.0) ** (1 / 9), dtype=F64), rtol=1e-12, atol=0)
    assert (s[1:] < s[:-1]).all()
    assert geometric_sigmas(0.1, 1.0, 2).dtype == torch.get_default_dtype()


def test_sigma_max_from_data_matches_pdist():
    x = torch.randn(700, 3, generator=gen(30), dtype=F64) * torch.tensor([1.0, 3.0, 0.5], dtype=F64) + 1e3
    expected = pdist(x.numpy()).max()
    assert sigma_max_from_data(x) == pytest.approx(expected, rel=1e-12)
    assert sigma_max_from_data(x, chunk_size=13) == pytest.approx(expected, rel=1e-12)
    # images are flattened; float32 input, exact up to float32 rounding
    img = torch.rand(60, 1, 4, 4, generator=gen(31))
    assert sigma_max_from_data(img, chunk_size=7) == pytest.approx(pdist(img.reshape(60, -1).double().numpy()).max(), rel=1e-6)
    # two points: their distance
    assert sigma_max_from_data(torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=F64)) == pytest.approx(5.0, rel=1e-15)


# ----------------------------------------------------------------------------- shapes, gradients, determinism


class ConvScore(torch.nn.Module):
    """A tiny image score; noise-conditional by dividing by σ (NCSNv2's "scaled" output)."""

    def __init__(self, seed=0):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1, dtype=F64)
            self.conv2 = torch.nn.Conv2d(4, 1, 3, padding=1, dtype=F64)

    def forward(self, x, sigma=None):
        out = self.conv2(torch.tanh(self.conv1(x)))
        return out if sigma is None else out / sigma[:, None, None, None]


class MLPScore(torch.nn.Module):
    def __init__(self, d=2, hidden=8, seed=0):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.l1 = torch.nn.Linear(d + 1, hidden, dtype=F64)
            self.l2 = torch.nn.Linear(hidden, d, dtype=F64)

    def forward(self, x, sigma=None):
        c = torch.zeros_like(x[:, :1]) if sigma is None else torch.log(sigma)[:, None]
        out = self.l2(torch.tanh(self.l1(torch.cat([x, c], 1))))
        return out if sigma is None else out / sigma[:, None]


def all_losses(model, x, seed=0):
    """Every loss that applies to x's shape, each with a fresh generator in a fixed state."""
    losses = {
        "sliced": sliced_score_matching(model, x, 2, False, gen(seed)),
        "sliced_vr": sliced_score_matching(model, x, 2, True, gen(seed)),
        "dsm": denoising_score_matching(model, x, 0.3, gen(seed)),
        "ncsn": ncsn_loss(model, x, geometric_sigmas(0.01, 2.0, 6, dtype=F64), gen(seed)),
        "sde_ve": sde_loss(model, VESDE(sigma_max=5.0), x, gen(seed)),
        "sde_vp": sde_loss(model, VPSDE(), x, gen(seed)),
    }
    if x.ndim == 2:
        losses["exact"] = exact_score_matching(model, x)
    return losses


@pytest.mark.parametrize("kind", ["vector", "image"])
def test_shapes_gradients_and_determinism(kind):
    if kind == "vector":
        model, x = MLPScore(), torch.randn(16, 2, generator=gen(40), dtype=F64)
    else:
        model, x = ConvScore(), torch.randn(6, 1, 8, 8, generator=gen(41), dtype=F64)
    first = all_losses(model, x)
    assert len(first) == (7 if kind == "vector" else 6)
    for name, loss in first.items():
        assert loss.shape == () and torch.isfinite(loss), name
        model.zero_grad()
        loss.backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (name, pname)
            assert float(p.grad.abs().max()) > 0, (name, pname)
    again = all_losses(model, x)
    other = all_losses(model, x, seed=1)
    for name in first:
        assert torch.equal(first[name], again[name]), name  # same generator state, same loss
        if name != "exact":
            assert not torch.equal(first[name], other[name]), name


def test_reduction_none_and_no_grad_context():
    model, x = MLPScore(), torch.randn(10, 2, generator=gen(42), dtype=F64)
    per = sliced_score_matching(model, x, 3, generator=gen(0), reduction="none")
    assert per.shape == (10,)
    torch.testing.assert_close(per.mean(), sliced_score_matching(model, x, 3, generator=gen(0)))
    with torch.no_grad():  # the trace still needs autograd with respect to x
        inside = exact_score_matching(model, x)
    torch.testing.assert_close(inside, exact_score_matching(model, x).detach())
    imgs = torch.randn(4, 1, 8, 8, generator=gen(43), dtype=F64)
    assert ncsn_loss(ConvScore(), imgs, [1.0, 0.5], gen(0), reduction="none").shape == (4,)


def test_vp_perturb_path_on_vectors():
    """sde_loss hands the score x_t of the data's shape and σ of shape (B,), for VP and VE."""
    x = torch.randn(7, 2, generator=gen(44), dtype=F64)
    for sde in (VPSDE(), VESDE()):
        rec = Recorder(lambda y, s: -y / s[:, None] ** 2)
        sde_loss(rec, sde, x, gen(0))
        xt, s = rec.calls[-1]
        assert xt.shape == (7, 2) and s.shape == (7,)


def _mlp_params(seed=0):
    g = gen(seed)
    return (
        torch.randn(5, 2, generator=g, dtype=F64, requires_grad=True),
        torch.randn(5, generator=g, dtype=F64, requires_grad=True),
        torch.randn(2, 5, generator=g, dtype=F64, requires_grad=True),
    )


def _mlp(w1, b1, w2):
    return lambda y: torch.tanh(y @ w1.T + b1) @ w2.T


def test_parameter_gradients_match_finite_differences():
    """The trace/projection terms are differentiated through double backward: check ∇θ by central differences."""
    x = torch.randn(6, 2, generator=gen(45), dtype=F64)
    params = _mlp_params()
    assert torch.autograd.gradcheck(lambda *p: exact_score_matching(_mlp(*p), x), params)
    for vr in (False, True):
        assert torch.autograd.gradcheck(lambda *p: sliced_score_matching(_mlp(*p), x, 2, vr, gen(3)), params)


# ----------------------------------------------------------------------------- argument validation


def test_bad_arguments():
    x = torch.randn(4, 2, dtype=F64)
    model = MLPScore()
    sc = lambda y, s: -y  # noqa: E731
    with pytest.raises(ValueError, match="sigma must be > 0"):
        denoising_score_matching(sc, x, 0.0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        denoising_score_matching(sc, x, torch.tensor([0.1, -0.1, 0.2, 0.3], dtype=F64))
    with pytest.raises(ValueError, match="sigma must be a number or a tensor of shape"):
        denoising_score_matching(sc, x, torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="sigma contains NaN"):
        denoising_score_matching(sc, x, float("nan"))
    with pytest.raises(ValueError, match="n_projections"):
        sliced_score_matching(model, x, n_projections=0)
    with pytest.raises(ValueError, match="sigmas must be strictly decreasing"):
        ncsn_loss(sc, x, [0.1, 0.5, 1.0])
    with pytest.raises(ValueError, match="sigmas must be > 0"):
        ncsn_loss(sc, x, [1.0, 0.0])
    with pytest.raises(ValueError, match="sigmas must be a non-empty 1-D"):
        ncsn_loss(sc, x, torch.ones(2, 2))
    with pytest.raises(ValueError, match="x must have shape \\(B, ...\\)"):
        sliced_score_matching(model, torch.randn(5, dtype=F64))
    with pytest.raises(ValueError, match="x must have shape \\(B, d\\)"):
        exact_score_matching(model, torch.randn(2, 1, 4, 4, dtype=F64))
    with pytest.raises(ValueError, match="max_dim"):
        exact_score_matching(lambda y: -y, torch.randn(3, 65, dtype=F64))
    with pytest.raises(ValueError, match="x contains NaN"):
        denoising_score_matching(sc, torch.tensor([[0.0, float("inf")]], dtype=F64), 1.0)
    with pytest.raises(ValueError, match="x must be a floating-point"):
        sde_loss(sc, VESDE(), torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="sde must be an SDE"):
        sde_loss(sc, "ve", x)
    with pytest.raises(ValueError, match="score must return a tensor of the shape"):
        denoising_score_matching(lambda y, s: y[:, :1], x, 1.0)
    with pytest.raises(ValueError, match="score must be callable"):
        exact_score_matching(None, x)
    with pytest.raises(ValueError, match="reduction"):
        sliced_score_matching(model, x, reduction="sum")
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        geometric_sigmas(1.0, 0.5, 4)
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        geometric_sigmas(0.1, 1.0, 1)
    with pytest.raises(ValueError, match="at least 2 examples"):
        sigma_max_from_data(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="chunk_size"):
        sigma_max_from_data(x, chunk_size=0)
