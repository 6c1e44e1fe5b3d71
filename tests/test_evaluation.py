"""Sample-quality and score-quality measures (``scoregeo.evaluation``) against independent oracles.

Oracles: closed forms for Gaussians (W₂ between 1-D normals, E_θ (θ·Δ)² = |Δ|²/d,
Gaussian-kernel expectations, Gaussian quadratic-form moments); the exact optimal
transport between small 1-D empirical measures solved as a linear programme with
``scipy.optimize.linprog``; a transport plan computed by hand; brute-force double
loops in numpy. Monte Carlo tolerances are derived in comments from the sample
sizes. Everything runs in float64 unless a test is about dtypes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from scipy.spatial.distance import pdist

import scoregeo as sg
from scoregeo.evaluation import fisher_divergence, mmd, sliced_wasserstein

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def normal(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=F64)


def standardize(z: torch.Tensor) -> torch.Tensor:
    """Shift and scale each column to sample mean 0 and (population) sample std 1, exactly."""
    z = z - z.mean(0)
    return z / z.std(0, correction=0)


def w2_squared_lp(a: np.ndarray, b: np.ndarray) -> float:
    """Exact W₂² between the uniform empirical measures on 1-D points a and b, by linear programming."""
    n, m = len(a), len(b)
    cost = (a[:, None] - b[None, :]) ** 2
    rows = np.kron(np.eye(n), np.ones((1, m)))  # Σ_j P_ij = 1/n
    cols = np.kron(np.ones((1, n)), np.eye(m))  # Σ_i P_ij = 1/m
    res = linprog(
        cost.ravel(),
        A_eq=np.vstack([rows, cols]),
        b_eq=np.concatenate([np.full(n, 1 / n), np.full(m, 1 / m)]),
        bounds=(0, None),
        method="highs",
    )
    assert res.status == 0
    return float(res.fun)


# ----------------------------------------------------------------------------- sliced Wasserstein


def test_sw_identical_sets_is_zero():
    x = normal(50, 4, seed=0)
    assert float(sliced_wasserstein(x, x.clone(), generator=gen(1))) == 0.0
    # the same empirical measure listed in another order (the projections x @ θ may then
    # round differently, by ~1e-16 relative)
    perm = torch.randperm(50, generator=gen(2))
    assert float(sliced_wasserstein(x, x[perm], generator=gen(1))) == pytest.approx(0.0, abs=1e-14)


def test_sw_gaussian_shift_matches_closed_form():
    # x ~ N(0, I_d), y ~ N(Δ, I_d). Each sample is centred exactly; then, direction by
    # direction, the 1-D identity W₂²(a + c, b) = c² + W₂²(a, b) (a, b of equal means)
    # gives SW₂² = mean_θ (θ·Δ)² + mean_θ W₂²(θ·x̃, θ·ỹ), whose first term → |Δ|²/d.
    # Tolerance: (θ·Δ)² = |Δ|² θ₁² with θ₁² ~ Beta(1/2, (d−1)/2), so the relative
    # standard deviation of one direction is sqrt(2(d−1)/(d+2)) ≈ 0.89 for d = 3 and of
    # the mean over P = 10⁴ directions 0.0089, i.e. 0.027 on |Δ|²/d = 3: 4σ = 0.11.
    # The second term is ≥ 0 and O(1/N): E ≈ 1/N (sample stds) + 2/N (shapes) ≈ 0.006
    # for N = 500; allow 5× that, 0.03.
    d, n, p = 3, 500, 10_000
    delta = torch.tensor([2.0, -1.0, 2.0], dtype=F64)
    x = normal(n, d, seed=10)
    y = normal(n, d, seed=11)
    x, y = x - x.mean(0), y - y.mean(0) + delta
    sw2 = float(sliced_wasserstein(x, y, n_projections=p, generator=gen(12))) ** 2
    expected = float(delta @ delta) / d
    assert sw2 == pytest.approx(expected, abs=0.11 + 0.03)
    # and the shift is detected at the right scale: no shift gives only the O(1/N) term
    sw2_null = float(sliced_wasserstein(x, y - delta, n_projections=200, generator=gen(12))) ** 2
    assert 0 < sw2_null < 0.03


@pytest.mark.parametrize("n, m", [(20_000, 20_000), (20_000, 15_000)])
def test_sw_1d_matches_gaussian_w2(n, m):
    # In 1-D every direction is ±1 and SW₂ = W₂. With each sample standardised to its
    # exact sample moments (μ, σ), W₂² between the empirical measures is
    # (μ₁−μ₂)² + (σ₁−σ₂)² + 2σ₁σ₂(1 − ρ) with ρ the correlation of the quantile
    # functions, so it exceeds the population formula (μ₁−μ₂)² + (σ₁−σ₂)² by the
    # non-negative shape term σ₁σ₂·W₂²(standardised x, standardised y), ≈ 4/N for
    # normal samples (2e-4 at N = 2·10⁴); allow 5× that. m ≠ n runs the merged-quantile branch.
    mu1, s1, mu2, s2 = 0.5, 1.0, -1.0, 2.0
    x = mu1 + s1 * standardize(normal(n, 1, seed=20))
    y = mu2 + s2 * standardize(normal(m, 1, seed=21))
    sw2 = float(sliced_wasserstein(x, y, n_projections=3, generator=gen(22))) ** 2
    expected = (mu1 - mu2) ** 2 + (s1 - s2) ** 2
    assert expected - 1e-10 <= sw2 <= expected + s1 * s2 * 5 * 4 / min(n, m)


def test_sw_unequal_sizes_by_hand():
    # x = {0, 1, 3} (mass 1/3 each), y = {0, 2} (mass 1/2 each). Optimal monotone plan:
    # 0→0 (1/3), 1→0 (1/6), 1→2 (1/6), 3→2 (1/3): cost 0 + 1/6 + 1/6 + 1/3 = 2/3.
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=F64)
    y = torch.tensor([[2.0], [0.0]], dtype=F64)
    sw = sliced_wasserstein(x, y, n_projections=5, generator=gen(0))
    assert float(sw) ** 2 == pytest.approx(2 / 3, rel=1e-14)
    assert float(sliced_wasserstein(y, x, n_projections=5, generator=gen(0))) ** 2 == pytest.approx(2 / 3, rel=1e-14)


@pytest.mark.parametrize("n, m, seed", [(3, 2, 0), (5, 3, 1), (4, 6, 2), (7, 7, 3), (1, 4, 4), (9, 6, 5)])
def test_sw_1d_matches_linear_programme(n, m, seed):
    # The LP optimum is exact up to HiGHS's feasibility tolerance (~1e-9 on masses of
    # order 1/n, costs of order 10), so compare to 1e-7.
    x = normal(n, 1, seed=100 + seed)
    y = 1.5 * normal(m, 1, seed=200 + seed) + 0.3
    sw2 = float(sliced_wasserstein(x, y, n_projections=4, generator=gen(seed))) ** 2
    assert sw2 == pytest.approx(w2_squared_lp(x[:, 0].numpy(), y[:, 0].numpy()), abs=1e-7)


def test_sw_unequal_sizes_equals_replicated_equal_sizes():
    # Repeating every point of x m times and every point of y n times leaves both
    # empirical measures unchanged and makes the sizes equal (n·m), which goes through
    # the plain sorted-difference branch; the same seed gives the same directions.
    n, m, d = 6, 4, 3
    x = normal(n, d, seed=30)
    y = normal(m, d, seed=31) + 0.5
    merged = sliced_wasserstein(x, y, n_projections=64, generator=gen(32))
    equal = sliced_wasserstein(x.repeat_interleave(m, 0), y.repeat(n, 1), n_projections=64, generator=gen(32))
    assert float(merged) == pytest.approx(float(equal), rel=1e-12)
    # x against x listed twice is the same measure
    assert float(sliced_wasserstein(x, torch.cat([x, x.flip(0)]), generator=gen(33))) == pytest.approx(0.0, abs=1e-14)


def test_sw_symmetric_and_reproducible():
    x = normal(40, 3, seed=40)
    y = normal(30, 3, seed=41) * 2
    a = sliced_wasserstein(x, y, n_projections=32, generator=gen(5))
    b = sliced_wasserstein(y, x, n_projections=32, generator=gen(5))
    assert float(a) == pytest.approx(float(b), rel=1e-13)
    assert torch.equal(a, sliced_wasserstein(x, y, n_projections=32, generator=gen(5)))
    assert not torch.equal(a, sliced_wasserstein(x, y, n_projections=32, generator=gen(6)))


def test_sw_dtype():
    x = normal(20, 2, seed=50)
    y = normal(20, 2, seed=51)
    assert sliced_wasserstein(x.float(), y.float(), generator=gen(0)).dtype == torch.float32
    assert sliced_wasserstein(x, y, generator=gen(0)).dtype == F64
    assert sliced_wasserstein(x, y, generator=gen(0)).ndim == 0


def test_sw_bad_input():
    x = normal(10, 2, seed=0)
    with pytest.raises(ValueError, match="x must be a floating-point tensor of shape"):
        sliced_wasserstein(x[:, 0], x)
    with pytest.raises(ValueError, match="y must be a floating-point tensor of shape"):
        sliced_wasserstein(x, x[:0])
    with pytest.raises(ValueError, match="y must be a floating-point tensor"):
        sliced_wasserstein(x, torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        sliced_wasserstein(x.numpy(), x)
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="y contains NaN"):
        sliced_wasserstein(x, bad)
    with pytest.raises(ValueError, match="same dimension d"):
        sliced_wasserstein(x, normal(10, 3, seed=1))
    with pytest.raises(ValueError, match="n_projections"):
        sliced_wasserstein(x, x, n_projections=0)


# ----------------------------------------------------------------------------- MMD


def gaussian_kernel_mean(mu_a, s_a, mu_b, s_b, h) -> float:
    """E exp(−‖a−b‖²/(2h²)) for independent a ~ N(μa, sa² I), b ~ N(μb, sb² I)."""
    mu_a, mu_b = np.asarray(mu_a, float), np.asarray(mu_b, float)
    v = h**2 + s_a**2 + s_b**2
    return (h**2 / v) ** (len(mu_a) / 2) * math.exp(-np.sum((mu_a - mu_b) ** 2) / (2 * v))


def mmd_brute_force(x: np.ndarray, y: np.ndarray, widths, unbiased: bool) -> float:
    def k(a, b):
        return sum(math.exp(-np.sum((a - b) ** 2) / (2 * h * h)) for h in widths)

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if not (unbiased and i == j))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if not (unbiased and i == j))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m))
    if unbiased:
        return kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (n * m)
    return kxx / n**2 + kyy / m**2 - 2 * kxy / (n * m)


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("bandwidth", [0.7, [0.5, 2.0]])
def test_mmd_matches_brute_force(unbiased, bandwidth):
    x = normal(7, 3, seed=60)
    y = normal(5, 3, seed=61) + 0.4
    widths = bandwidth if isinstance(bandwidth, list) else [bandwidth]
    expected = mmd_brute_force(x.numpy(), y.numpy(), widths, unbiased)
    assert float(mmd(x, y, bandwidth=bandwidth, unbiased=unbiased)) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_mmd_median_heuristic():
    # Oracle: the lower median of scipy's pairwise distances of the pooled sample.
    x = normal(9, 2, seed=62)
    y = normal(12, 2, seed=63) * 1.5
    dists = np.sort(pdist(np.concatenate([x.numpy(), y.numpy()])))
    h = dists[(len(dists) - 1) // 2]
    assert float(mmd(x, y)) == pytest.approx(float(mmd(x, y, bandwidth=float(h))), rel=1e-13)
    assert float(mmd(x, y, unbiased=False)) == pytest.approx(
        mmd_brute_force(x.numpy(), y.numpy(), [h], unbiased=False), rel=1e-12
    )
    # the heuristic makes the statistic invariant under a common rescaling and translation
    assert float(mmd(3 * x + 1, 3 * y + 1)) == pytest.approx(float(mmd(x, y)), rel=1e-10)


def test_mmd_gaussians_match_closed_form():
    # MMD² = E k(x,x') + E k(y,y') − 2 E k(x,y), each by gaussian_kernel_mean; both
    # estimators averaged over R = 10 independent replicates of N = M = 500 samples.
    # Unbiased: E[U] = MMD². Biased: E[V] = E[U] + (K − E k(x,x'))/N + (K − E k(y,y'))/M
    # (the diagonal terms), K = k(0) = number of bandwidths. Tolerance: 4 standard
    # errors estimated from the replicates (t with 9 d.o.f.: two-sided p ≈ 0.003).
    d, n, r = 2, 500, 10
    mu_a, s_a, mu_b, s_b = np.array([0.0, 0.0]), 1.0, np.array([1.0, -0.5]), 1.3
    for widths in ([1.5], [0.6, 2.5]):
        exx = sum(gaussian_kernel_mean(mu_a, s_a, mu_a, s_a, h) for h in widths)
        eyy = sum(gaussian_kernel_mean(mu_b, s_b, mu_b, s_b, h) for h in widths)
        exy = sum(gaussian_kernel_mean(mu_a, s_a, mu_b, s_b, h) for h in widths)
        expected = exx + eyy - 2 * exy
        k0 = len(widths)
        expected_biased = expected + (k0 - exx) / n + (k0 - eyy) / n
        u, v = [], []
        for i in range(r):
            x = torch.from_numpy(mu_a) + s_a * normal(n, d, seed=1000 + i)
            y = torch.from_numpy(mu_b) + s_b * normal(n, d, seed=2000 + i)
            u.append(float(mmd(x, y, bandwidth=widths)))
            v.append(float(mmd(x, y, bandwidth=widths, unbiased=False)))
        u, v = np.array(u), np.array(v)
        assert abs(u.mean() - expected) < 4 * u.std(ddof=1) / math.sqrt(r)
        assert abs(v.mean() - expected_biased) < 4 * v.std(ddof=1) / math.sqrt(r)
        assert 4 * u.std(ddof=1) / math.sqrt(r) < 0.15 * expected  # the check is informative


def test_mmd_same_distribution():
    # Under p = q the U-statistic is degenerate: E[U] = 0 and sd(U) = O(1/N), here
    # ≈ 1e-3 for N = 300 with the median bandwidth; the mean over R = 10 replicates
    # lies within 4 estimated standard errors of 0 (t, 9 d.o.f.: p ≈ 0.003), and each
    # replicate is small.
    n, r = 300, 10
    u, v = [], []
    for i in range(r):
        x, y = normal(n, 3, seed=3000 + i), normal(n, 3, seed=4000 + i)
        u.append(float(mmd(x, y)))
        v.append(float(mmd(x, y, unbiased=False)))
        assert v[-1] >= u[-1]
    u = np.array(u)
    assert abs(u.mean()) < 4 * u.std(ddof=1) / math.sqrt(r)
    assert np.abs(u).max() < 0.01
    assert (u < 0).any()  # the unbiased estimate does go below zero, as documented
    x = normal(30, 2, seed=5)
    assert float(mmd(x, x.clone(), bandwidth=1.0, unbiased=False)) == pytest.approx(0.0, abs=1e-14)


def test_mmd_biased_at_least_unbiased():
    # V − U = K/N − S_x/(N²(N−1)) + (same for y) ≥ 0 because S_x = Σ_{i≠j} k ≤ N(N−1)K.
    for seed in range(5):
        x = normal(8 + seed, 2, seed=500 + seed)
        y = normal(6, 2, seed=600 + seed) + seed * 0.3
        for bw in (None, 0.3, [0.2, 1.0, 5.0]):
            assert float(mmd(x, y, bandwidth=bw, unbiased=False)) >= float(mmd(x, y, bandwidth=bw)) - 1e-15
            assert float(mmd(x, y, bandwidth=bw, unbiased=False)) >= -1e-15


def test_mmd_sequence_is_sum_of_kernels_and_dtype():
    x = normal(10, 2, seed=70)
    y = normal(11, 2, seed=71)
    total = mmd(x, y, bandwidth=[0.5, 2.0])
    assert float(total) == pytest.approx(float(mmd(x, y, bandwidth=0.5) + mmd(x, y, bandwidth=2.0)), rel=1e-12)
    assert float(mmd(x, y, bandwidth=torch.tensor([0.5, 2.0]))) == pytest.approx(float(total), rel=1e-12)
    assert total.ndim == 0 and total.dtype == F64
    assert mmd(x.float(), y.float()).dtype == torch.float32


def test_mmd_bad_input():
    x = normal(10, 2, seed=0)
    for bw in (0.0, -1.0, float("nan"), float("inf"), [1.0, 0.0], True):
        with pytest.raises(ValueError, match="bandwidth"):
            mmd(x, x, bandwidth=bw)
    with pytest.raises(ValueError, match="empty"):
        mmd(x, x, bandwidth=[])
    with pytest.raises(ValueError, match="bandwidth must be"):
        mmd(x, x, bandwidth="median")
    with pytest.raises(ValueError, match="bandwidth must be"):
        mmd(x, x, bandwidth=torch.ones(2, 2))
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd(x, x[:1])
    assert float(mmd(x, x[:1], bandwidth=1.0, unbiased=False)) > 0  # the V-statistic needs only one
    with pytest.raises(ValueError, match="median heuristic gave bandwidth 0"):
        mmd(torch.zeros(5, 2, dtype=F64), torch.zeros(4, 2, dtype=F64))
    with pytest.raises(ValueError, match="same dimension d"):
        mmd(x, normal(10, 3, seed=1))
    bad = x.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        mmd(bad, x)


# ----------------------------------------------------------------------------- Fisher divergence


def test_fisher_shifted_identity_gaussian_is_exact():
    # s = −x for N(0, I) and s_θ = −(x − μ) for N(μ, I): s_θ − s = μ at every x, so the
    # estimate is |μ|² whatever the samples. Relative: |μ|² / mean‖x‖², the denominator
    # computed here independently in numpy.
    d = 3
    mu = torch.tensor([0.3, -1.2, 0.5], dtype=F64)
    target = sg.Gaussian(torch.zeros(d, dtype=F64), torch.eye(d, dtype=F64))
    model = sg.Gaussian(mu, torch.eye(d, dtype=F64))
    x = target.sample(500, generator=gen(80))
    value = fisher_divergence(model.score, target.score, x)
    assert value.ndim == 0 and value.dtype == F64
    assert float(value) == pytest.approx(float(mu @ mu), rel=1e-13)
    rel = fisher_divergence(model.score, target.score, x, relative=True)
    assert float(rel) == pytest.approx(float(mu @ mu) / np.mean(np.sum(x.numpy() ** 2, 1)), rel=1e-13)
    # E‖x‖² = d; mean‖x‖² over N = 500 has sd sqrt(2d/N) = 0.11, i.e. 3.7% of d: 4σ ≈ 15%.
    assert float(rel) == pytest.approx(float(mu @ mu) / d, rel=0.15)


def test_fisher_gaussians_with_different_covariances():
    # target N(0, Σ), model N(0, Σ'): s_θ − s = −A x with A = Σ'⁻¹ − Σ⁻¹ (symmetric), so
    # the per-sample term q = xᵀA²x has mean tr(A²Σ) and variance 2 tr((A²Σ)²) (Gaussian
    # quadratic form); the mean over N samples is within 4 sqrt(2 tr((A²Σ)²)/N).
    # Relative: E‖s‖² = E xᵀΣ⁻²x = tr(Σ⁻¹), and by the delta method the ratio of means has
    # variance (Var q − 2R Cov(q, t) + R² Var t)/(N (E t)²) with t = xᵀΣ⁻²x,
    # Var t = 2 tr(Σ⁻²), Cov(q, t) = 2 tr(A²), R = tr(A²Σ)/tr(Σ⁻¹).
    g = gen(90)
    d, n = 3, 20_000
    a = torch.randn(d, d, generator=g, dtype=F64)
    b = torch.randn(d, d, generator=g, dtype=F64)
    cov = a @ a.T + 0.5 * torch.eye(d, dtype=F64)
    cov_model = b @ b.T + 0.5 * torch.eye(d, dtype=F64)
    target = sg.Gaussian(torch.zeros(d, dtype=F64), cov)
    model = sg.Gaussian(torch.zeros(d, dtype=F64), cov_model)
    x = target.sample(n, generator=gen(91))

    A = np.linalg.inv(cov_model.numpy()) - np.linalg.inv(cov.numpy())
    S = cov.numpy()
    P = np.linalg.inv(S)
    A2S = A @ A @ S
    expected = np.trace(A2S)
    sd = math.sqrt(2 * np.trace(A2S @ A2S) / n)
    assert float(fisher_divergence(model.score, target.score, x)) == pytest.approx(expected, abs=4 * sd)
    assert sd < 0.05 * expected  # the check is informative

    ratio = expected / np.trace(P)
    var_q, var_t, cov_qt = 2 * np.trace(A2S @ A2S), 2 * np.trace(P @ P), 2 * np.trace(A @ A)
    sd_ratio = math.sqrt((var_q - 2 * ratio * cov_qt + ratio**2 * var_t) / (n * np.trace(P) ** 2))
    rel = float(fisher_divergence(model.score, target.score, x, relative=True))
    assert rel == pytest.approx(ratio, abs=4 * sd_ratio)


def test_fisher_autograd_score_and_no_grad():
    # The mixture score against its own autograd version: 0 up to rounding. A torch.func
    # score still works inside fisher_divergence's no_grad, and a parametric model's
    # result carries no graph.
    gm = sg.GaussianMixture(
        torch.tensor([[-1.0, 0.0], [1.5, 0.5]], dtype=F64), 0.5 * torch.eye(2, dtype=F64), torch.tensor([0.3, 0.7])
    )
    x = gm.sample(100, generator=gen(95))
    assert float(fisher_divergence(sg.score_of(gm.log_prob), gm.score, x)) < 1e-24
    net = torch.nn.Linear(2, 2).double()
    value = fisher_divergence(net, gm.score, x)
    assert not value.requires_grad and float(value) > 0
    assert fisher_divergence(lambda z: net(z).float(), gm.score, x).dtype == F64


def test_fisher_bad_input():
    g = sg.Gaussian(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    x = g.sample(10, generator=gen(0))
    with pytest.raises(ValueError, match="score_fn must map x of shape"):
        fisher_divergence(lambda z: z.sum(-1), g.score, x)
    with pytest.raises(ValueError, match="target_score must map x of shape"):
        fisher_divergence(g.score, lambda z: torch.cat([z, z], -1), x)
    with pytest.raises(ValueError, match="score_fn must map"):
        fisher_divergence(lambda z: z.numpy(), g.score, x)
    with pytest.raises(ValueError, match="target_score returned NaN or Inf"):
        fisher_divergence(g.score, lambda z: z / 0.0, x)
    with pytest.raises(ValueError, match="score_fn must be callable"):
        fisher_divergence(None, g.score, x)
    with pytest.raises(ValueError, match="x must be a floating-point tensor of shape"):
        fisher_divergence(g.score, g.score, x[0])
    bad = x.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        fisher_divergence(g.score, g.score, bad)
    with pytest.raises(ValueError, match="relative=True"):
        fisher_divergence(g.score, lambda z: torch.zeros_like(z), x, relative=True)
