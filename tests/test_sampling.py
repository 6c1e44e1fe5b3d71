"""Samplers of ``scoregeo.sampling`` against analytic oracles.

Oracles:

* Gaussians, for which every sampler here is a *linear* recursion: the law of
  the output is Gaussian with a variance that follows a deterministic recursion
  we can evaluate exactly (the ULA stationary variance, the annealed-Langevin and
  predictor recursions below). Checking the Monte Carlo variance against those
  pins the step-size conventions (the factor 2 between ULA and NCSN, the
  predictor coefficients, the Tweedie step) to Monte Carlo accuracy.
* A 2-D Gaussian mixture with exact noise-conditional scores
  (``GaussianMixture.noisy_score``), compared with exact samples through the
  sliced Wasserstein distance SW₂ (``scoregeo.evaluation.sliced_wasserstein``).

SW tolerances. With N samples the SW₂ between two independent exact sample sets
is not 0 but a random "floor". For this mixture and N = 2000 (measured over 300
independent pairs, 256 projections) the floor has mean 0.085, median 0.080,
99th percentile 0.166 ≈ 1.94 × the mean and maximum 0.221 ≈ 2.6 × the mean: it is
dominated by the multinomial fluctuation of the mode weights, since moving mass
between modes 4 apart is expensive. We estimate the mean floor from 8 independent
pairs (±13 %) and
accept SW ≤ 2.5 × floor + bias, where ``bias`` bounds the sampler's known
discretisation bias in W₂ (≥ SW₂): the modes are 5.8 standard deviations apart
or more, so within a mode every sampler acts as on the Gaussian N(μ_k, c I),
c = 0.3, whose variance after the sampler is v = c·ρ with ρ known (exact
recursions or stationary laws below), and W₂(N(μ, cI), N(μ, vI)) = √d |√v − √c|.

Threads: the tensors here are tiny (N × 2), so torch's intra-op threads only add
synchronisation; on a loaded 2-core machine they made this file 10× slower (60 s
instead of 6 s). The module runs single-threaded and restores the setting after.

Dtypes: float64 wherever a number is checked against an oracle (the recursions
are compared to 0.3 %–2 %, the mixture scores solve 2×2 systems); float32 for
the image-shaped runs, where only shapes, dtypes and a variance to a few percent
are checked and float32 is what image models use.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import scoregeo as sg
from scoregeo.evaluation import sliced_wasserstein
from scoregeo.sampling import SampleInfo, annealed_langevin, langevin, mala, pc_sampler, probability_flow
from scoregeo.scores.sde import VESDE, VPSDE

F64 = torch.float64
N = 2000  # samples per SW comparison
C = 0.3  # within-mode variance of the mixture
SW_FACTOR = 2.5  # multiple of the mean finite-sample floor, see the module docstring
# Fraction of samples nearest each mean: multinomial sd ≤ √(0.25/N) = 0.011; 4 sd. (Misassignment of
# exact samples to the nearest mean is < 0.2 %: the boundaries are ≥ 2.9 mode sd from the means.)
WEIGHT_TOL = 4 * math.sqrt(0.25 / N)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def gmm():
    eye = torch.eye(2, dtype=F64)
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], dtype=F64)
    return sg.GaussianMixture(means=means, covs=C * eye, weights=torch.tensor([0.5, 0.3, 0.2], dtype=F64))


@pytest.fixture(scope="module")
def reference(gmm):
    return gmm.sample(N, gen(1))


@pytest.fixture(scope="module")
def floor(gmm):
    """Mean SW₂ between independent exact sample sets of size N (the finite-sample floor)."""
    values = [sw(gmm.sample(N, gen(1000 + 2 * i)), gmm.sample(N, gen(1001 + 2 * i))) for i in range(8)]
    return sum(values) / len(values)


def sw(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(sliced_wasserstein(x, y, n_projections=256, generator=gen(7)))


def w2_bias(rho: float, c: float = C, d: int = 2) -> float:
    """W₂ between N(μ, c I_d) and N(μ, ρ c I_d)."""
    return math.sqrt(d) * abs(math.sqrt(rho * c) - math.sqrt(c))


def check_sw(name: str, samples: torch.Tensor, reference: torch.Tensor, floor: float, bias: float) -> float:
    value = sw(samples, reference)
    tol = SW_FACTOR * floor + bias
    print(f"{name}: SW2 = {value:.4f}, floor = {floor:.4f}, bias = {bias:.4f}, tol = {tol:.4f}")
    assert value <= tol, f"{name}: SW2 {value:.4f} > tolerance {tol:.4f} (floor {floor:.4f}, bias {bias:.4f})"
    return value


def mixture_score(gmm, sde=None):
    """The exact noise-conditional score s(x, σ) of p_σ: for the VP SDE m = √(1 − σ²)."""
    vp = isinstance(sde, VPSDE)

    def score(x, sigma):
        return gmm.noisy_score(x, sigma, torch.sqrt(1 - sigma**2) if vp else 1.0)

    return score


def gaussian_score(c: float, sde=None):
    """Noise-conditional score of N(0, c I) data, any shape: −x/(m² c + σ²)."""
    vp = isinstance(sde, VPSDE)

    def score(x, sigma):
        m2 = 1 - sigma**2 if vp else torch.ones_like(sigma)
        return -x / (m2 * c + sigma**2).reshape((-1,) + (1,) * (x.ndim - 1))

    return score


def predictor_variance_ratio(sde, n_steps: int, c: float, predictor: str = "reverse_diffusion",
                             prior_var: float | None = None) -> float:
    """Exact output variance / c of the predictor-only PC sampler (with Tweedie) on N(0, c I) data.

    With s = −x/V_i (V_i = m_i² c + σ_i²) each predictor step is x ← k_i x + h_i z, so
    v ← k_i² v + h_i²: reverse diffusion k = 2 − a − G²/V_i, h² = G² (a = m_i/m_{i+1},
    G² = σ_i² − a² σ_{i+1}²); Euler–Maruyama k = 1 + ½β_i Δt·[VP] − g_i² Δt/V_i, h² = g_i² Δt.
    Tweedie at t_min multiplies x by (1 − σ²/V)/m.
    """
    t = torch.linspace(sde.T, sde.t_min, n_steps + 1, dtype=F64)
    sig, m = sde.std(t), sde.mean_coef(t).expand(n_steps + 1)
    var = m**2 * c + sig**2
    v = torch.tensor(sde.prior_std() ** 2 if prior_var is None else prior_var, dtype=F64)
    for i in range(n_steps):
        if predictor == "reverse_diffusion":
            a = m[i] / m[i + 1]
            g2 = sig[i] ** 2 - a**2 * sig[i + 1] ** 2
            k, h2 = 2 - a - g2 / var[i], g2
        else:
            dt = t[i] - t[i + 1]
            g2 = sde.diffusion(t[i]) ** 2
            f = -0.5 * sde.beta(t[i]) if isinstance(sde, VPSDE) else 0.0
            k, h2 = 1 - f * dt - g2 * dt / var[i], g2 * dt
        v = k**2 * v + h2
    v = v * ((1 - sig[-1] ** 2 / var[-1]) / m[-1]) ** 2
    return float(v / c)


def annealed_variance_ratio(sigmas, step: float, n_steps_each: int, c: float, v0: float) -> float:
    """Exact output variance / c of annealed Langevin (with Tweedie) on N(0, c I) data from variance v0."""
    v = v0
    for s in sigmas:
        eps = step * (s / sigmas[-1]) ** 2
        for _ in range(n_steps_each):
            v = (1 - eps / (c + s * s)) ** 2 * v + 2 * eps
    v *= (c / (c + sigmas[-1] ** 2)) ** 2
    return v / c


def mode_fractions(x: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    return torch.bincount(torch.cdist(x, means).argmin(1), minlength=means.shape[0]).to(F64) / x.shape[0]


# ---------------------------------------------------------------- Langevin on Gaussians


def test_ula_stationary_variance_pins_the_step_convention():
    # Our convention x ← x + ε s + √(2ε) z on N(0, σ²): x ← (1 − a) x + √(2ε) z with a = ε/σ²,
    # so v = (1 − a)² v + 2ε, v (2a − a²) = 2ε, v = σ²/(1 − ε/(2σ²)). σ² = 2, ε = 1: v = 8/3.
    # NCSN's convention (x + ε s + √ε z) would give σ²/(2 − ε/σ²) = 4/3 instead.
    var, eps, b, d = 2.0, 1.0, 4000, 2
    x0 = torch.randn(b, d, generator=gen(0), dtype=F64)  # contraction (1 − a)² = 1/4 per step: 60 steps forget x0
    x, info = langevin(lambda y: -y / var, x0, step=eps, n_steps=60, generator=gen(1))
    expected = var / (1 - eps / (2 * var))
    sd = expected * math.sqrt(2 / (b * d))  # sd of the sample variance of b·d independent Gaussians
    assert abs(float(x.var()) - expected) < 5 * sd
    assert abs(float(x.mean())) < 5 * math.sqrt(expected / (b * d))
    assert info == SampleInfo("langevin", steps=60, score_evals=60, acceptance_rate=None, n_nonfinite=0)


def test_mala_is_unbiased_and_acceptance_decreases_with_step():
    gauss = sg.Gaussian(torch.tensor([1.0, -1.0], dtype=F64), torch.eye(2, dtype=F64))
    b = 2000
    x0 = torch.full((b, 2), 3.0, dtype=F64)  # far from the target: the chains must get there
    rates = []
    for eps in (0.1, 0.5, 1.5):
        x, info = mala(gauss.log_prob, x0, step=eps, n_steps=200, generator=gen(2))  # score by autograd
        rates.append(info.acceptance_rate)
        assert 0 < info.acceptance_rate < 1
        assert info.score_evals == 201 and info.n_nonfinite == 0
    # ε = 1.5 is a large step: ULA would have stationary variance 1/(1 − 0.75) = 4; MALA keeps 1.
    sd = math.sqrt(2 / (2 * b))
    assert abs(float(x.var(0).mean()) - 1.0) < 5 * sd
    assert torch.allclose(x.mean(0), gauss.mean, atol=5 / math.sqrt(b))
    assert rates[0] > rates[1] > rates[2]


def test_mala_with_given_score_matches_autograd():
    gauss = sg.Gaussian(torch.zeros(3, dtype=F64), torch.diag(torch.tensor([1.0, 2.0, 0.5], dtype=F64)))
    x0 = torch.randn(50, 3, generator=gen(0), dtype=F64)
    a, info_a = mala(gauss.log_prob, x0, 0.3, 30, generator=gen(3))
    b, info_b = mala(gauss.log_prob, x0, 0.3, 30, score=gauss.score, generator=gen(3))
    assert torch.allclose(a, b, atol=1e-12) and info_a == info_b


def test_annealed_langevin_matches_the_variance_recursion():
    # ε_i = step σ_i²/σ_L² in the ULA convention and the final Tweedie step, on N(0, c I) data.
    c, sigmas, step, n_each = 0.5, [3.0, 1.0, 0.3, 0.1], 2e-3, 20
    x0 = 3.0 * torch.randn(4000, 16, generator=gen(0), dtype=F64)
    x, info = annealed_langevin(gaussian_score(c), x0, sigmas, step=step, n_steps_each=n_each, generator=gen(1))
    rho = annealed_variance_ratio(sigmas, step, n_each, c, v0=9.0)
    sd = rho * math.sqrt(2 / x.numel())
    assert abs(float(x.var()) / c - rho) < 5 * sd
    assert abs(rho - 1) > 20 * sd  # the recursion's bias is resolved, so the check discriminates conventions
    assert info.steps == 80 and info.score_evals == 81


@pytest.mark.parametrize("sde", [VESDE(sigma_max=10.0), VPSDE()], ids=["VE", "VP"])
@pytest.mark.parametrize("predictor", ["reverse_diffusion", "euler_maruyama"])
def test_pc_predictor_matches_the_variance_recursion(sde, predictor):
    # Few steps, so that the discretisation bias (10–20 %) is far above the MC error (0.3 %).
    c, n_steps = 0.3, 40
    x, info = pc_sampler(gaussian_score(c, sde), sde, (2000, 50), n_steps=n_steps, n_corrector=0,
                         predictor=predictor, generator=gen(4), dtype=F64)
    rho = predictor_variance_ratio(sde, n_steps, c, predictor)
    sd = rho * math.sqrt(2 / x.numel())
    assert abs(float(x.var()) / c - rho) < 5 * sd, (float(x.var()) / c, rho)
    assert info.steps == n_steps and info.score_evals == n_steps + 1


# ---------------------------------------------------------------- the 2-D mixture


def test_ula_on_mixture(gmm, reference, floor):
    # Start at the means (weights right, zero spread, SW ≈ 0.5): the chains must build the spread.
    # Relaxation (1 − ε/c)² ≈ 0.87 per step: 150 steps forget the start. Bias: v = c/(1 − ε/(2c)).
    eps = 0.02
    x0 = gmm.means[torch.multinomial(gmm.weights, N, replacement=True, generator=gen(5))]
    x, _ = langevin(gmm.score, x0, step=eps, n_steps=150, generator=gen(6))
    assert sw(x0, reference) > 3 * floor
    check_sw("ULA", x, reference, floor, w2_bias(1 / (1 - eps / (2 * C))))


def test_mala_on_mixture(gmm, reference, floor):
    x0 = gmm.means[torch.multinomial(gmm.weights, N, replacement=True, generator=gen(5))]
    x, info = mala(gmm.log_prob, x0, step=0.1, n_steps=150, generator=gen(7))
    assert 0.5 < info.acceptance_rate < 1
    check_sw("MALA", x, reference, floor, 0.0)  # MALA leaves p invariant: no discretisation bias


def test_annealed_langevin_recovers_mode_weights(gmm, reference, floor):
    # σ from 5 (≈ the spread of the data, so modes are chosen at high noise) to 0.01, 10 levels.
    # step = 0.5 σ_L², i.e. ε_i = 0.5 σ_i² (NCSN uses 0.1 σ_i² in this convention with 100 steps
    # per level; the larger ratio lets 50 steps per level equilibrate).
    sigmas = torch.logspace(math.log10(5.0), -2, 10, dtype=F64).tolist()
    step, n_each = 0.5 * sigmas[-1] ** 2, 50
    x0 = sigmas[0] * torch.randn(N, 2, generator=gen(8), dtype=F64)
    x, info = annealed_langevin(mixture_score(gmm), x0, sigmas, step=step, n_steps_each=n_each, generator=gen(9))
    assert info.steps == 500 and info.score_evals == 501 and info.n_nonfinite == 0
    frac = mode_fractions(x, gmm.means)
    assert torch.allclose(frac, gmm.weights, atol=WEIGHT_TOL), frac
    rho = annealed_variance_ratio(sigmas, step, n_each, C, v0=sigmas[0] ** 2 + C)
    check_sw("annealed Langevin", x, reference, floor, w2_bias(rho))


@pytest.mark.parametrize("sde", [VESDE(sigma_max=10.0), VPSDE()], ids=["VE", "VP"])
def test_pc_sampler_on_mixture(gmm, reference, floor, sde):
    n_steps, snr = 200, 0.16
    x, info = pc_sampler(mixture_score(gmm, sde), sde, (N, 2), n_steps=n_steps, snr=snr, generator=gen(10),
                         dtype=F64)
    assert info.score_evals == 2 * n_steps + 1 and info.n_nonfinite == 0
    assert torch.allclose(mode_fractions(x, gmm.means), gmm.weights, atol=WEIGHT_TOL)
    # Bias: the predictor's (exact recursion for a Gaussian mode) times the corrector's stationary
    # inflation 1/(1 − snr²) (ULA with ε = 2 snr² V on a Gaussian of variance V). For the VE SDE also
    # the prior mismatch: N(0, σ_max²) vs p_T, whose mean is the mixture mean μ̄ (|μ̄| = 0.64); the
    # reverse SDE contracts an offset by (σ/σ_max)², i.e. to ≈ 0.03 where modes are chosen (σ ≈ 2).
    rho = predictor_variance_ratio(sde, n_steps, C) / (1 - snr**2)
    mismatch = float((gmm.weights @ gmm.means).norm()) * (2 / sde.sigma_max) ** 2 if isinstance(sde, VESDE) else 0.0
    check_sw(f"PC {type(sde).__name__}", x, reference, floor, w2_bias(rho) + mismatch)


@pytest.mark.parametrize("sde", [VESDE(sigma_max=10.0), VPSDE()], ids=["VE", "VP"])
def test_probability_flow_on_mixture(gmm, reference, floor, sde):
    # Start from exact samples of p_T, so that only the integration is tested: the flow of p_T is
    # exactly p_{t_min}. Bias: solver error (rtol = atol = 1e-5, negligible) and the Tweedie step at
    # t_min, which maps a mode's variance c + σ² to c²/(c + σ²) (σ = σ(t_min) ≈ 0.01).
    t_T = torch.tensor(sde.T, dtype=F64)
    x_T = gmm.noisy(float(sde.std(t_T)), float(sde.mean_coef(t_T))).sample(N, gen(11))
    x, info = probability_flow(mixture_score(gmm, sde), sde, x_T=x_T)
    assert info.n_nonfinite == 0 and info.solver.startswith("dopri5") and info.steps > 0
    assert torch.allclose(mode_fractions(x, gmm.means), gmm.weights, atol=WEIGHT_TOL)
    sigma = float(sde.std(torch.tensor(sde.t_min, dtype=F64)))
    check_sw(f"probability flow {type(sde).__name__}", x, reference, floor, w2_bias(C / (C + sigma**2)))


# ---------------------------------------------------------------- images, bookkeeping, failures


@pytest.mark.parametrize("sde", [VESDE(sigma_max=10.0), VPSDE()], ids=["VE", "VP"])
def test_image_shapes_and_variance(sde):
    c, b, snr, n_steps = 0.25, 256, 0.16, 100
    shape = (b, 1, 8, 8)
    score = gaussian_score(c, sde)
    sd = math.sqrt(2 / (b * 64))  # relative sd of a sample variance of b·64 values
    x, info = pc_sampler(score, sde, shape, n_steps=n_steps, snr=snr, generator=gen(12), dtype=torch.float32)
    assert x.shape == shape and x.dtype == torch.float32 and info.n_nonfinite == 0
    # predictor bias (exact recursion) plus the corrector's inflation 1/(1 − snr²) − 1
    allowed = abs(predictor_variance_ratio(sde, n_steps, c) - 1) + snr**2 / (1 - snr**2) + 5 * sd
    assert abs(float(x.var()) / c - 1) < allowed
    y, info = probability_flow(score, sde, shape, generator=gen(13), dtype=torch.float32)
    assert y.shape == shape and y.dtype == torch.float32 and info.score_evals > 0
    # the flow is linear here: the prior's variance σ_T² instead of m_T² c + σ_T² is off by < 0.3 %
    assert abs(float(y.var()) / c - 1) < 5 * sd + 0.003
    z, _ = langevin(lambda v: -v / c, torch.zeros(shape), step=0.1, n_steps=40, generator=gen(14))
    assert z.shape == shape and abs(float(z.var()) / (c / (1 - 0.1 / (2 * c))) - 1) < 5 * sd


def counting(score):
    calls = [0]

    def wrapped(*args):
        calls[0] += 1
        return score(*args)

    return wrapped, calls


def test_score_evals_count_the_calls():
    sde = VPSDE()
    s, calls = counting(gaussian_score(1.0, sde))
    _, info = pc_sampler(s, sde, (8, 3), n_steps=7, n_corrector=2, dtype=F64)
    assert info.score_evals == calls[0] == 7 * 3 + 1
    s, calls = counting(gaussian_score(1.0, sde))
    _, info = probability_flow(s, sde, (8, 3), dtype=F64)
    assert info.score_evals == calls[0]
    s, calls = counting(gaussian_score(1.0, sde))
    _, info = probability_flow(s, sde, (8, 3), dtype=F64, method="rk4", n_steps=10, denoise=False)
    assert info.score_evals == calls[0] == 40 and info.steps == 10 and info.solver == "rk4(n_steps=10)"
    s, calls = counting(gaussian_score(1.0))
    _, info = annealed_langevin(s, torch.zeros(4, 2, dtype=F64), [1.0, 0.5], n_steps_each=3, denoise=False)
    assert info.score_evals == calls[0] == 6


def nan_beyond(threshold, base=None):
    """The score ``base`` (default −x) made NaN for the samples whose first coordinate exceeds ``threshold``."""

    def score(x, *sigma):
        bad = (x.reshape(x.shape[0], -1)[:, 0] > threshold).reshape((-1,) + (1,) * (x.ndim - 1))
        return torch.where(bad, torch.full_like(x, float("nan")), -x if base is None else base(x, *sigma))

    return score


@pytest.mark.parametrize("sampler", ["langevin", "annealed", "pc", "ode"])
def test_nonfinite_scores_are_reported_not_raised(sampler):
    x0 = torch.randn(64, 2, generator=gen(15), dtype=F64)
    with pytest.warns(RuntimeWarning, match="not finite"):
        if sampler == "langevin":
            x, info = langevin(nan_beyond(0.0), x0, 0.1, 10, generator=gen(0))
        elif sampler == "annealed":
            x, info = annealed_langevin(nan_beyond(0.0), x0, [1.0, 0.1], 1e-3, 5, generator=gen(0))
        elif sampler == "pc":  # the prior has sd 10: the samples beyond 15 break, the others contract
            x, info = pc_sampler(nan_beyond(15.0, gaussian_score(1.0)), VESDE(sigma_max=10.0), (64, 2), n_steps=10, generator=gen(0),
                                 dtype=F64)
        else:
            x, info = probability_flow(nan_beyond(0.0), VPSDE(), x_T=x0)
    assert 0 < info.n_nonfinite < 64
    assert info.n_nonfinite == int((~torch.isfinite(x).all(1)).sum())


def test_mala_rejects_nonfinite_proposals():
    x0 = torch.randn(32, 2, generator=gen(16), dtype=F64)

    def nan_score(x):
        return torch.full_like(x, float("nan"))

    with pytest.warns(RuntimeWarning, match="non-finite proposals"):
        x, info = mala(lambda y: -0.5 * (y**2).sum(-1), x0, 0.1, 5, score=nan_score, generator=gen(0))
    assert info.acceptance_rate == 0.0 and info.n_nonfinite == 0 and torch.equal(x, x0)


def test_determinism_with_a_generator():
    score1 = gaussian_score(0.5)
    x0 = torch.randn(16, 2, generator=gen(0), dtype=F64)
    runs = {
        "langevin": lambda g: langevin(lambda y: -y, x0, 0.1, 5, generator=g),
        "mala": lambda g: mala(lambda y: -0.5 * (y**2).sum(-1), x0, 0.5, 5, generator=g),
        "annealed": lambda g: annealed_langevin(score1, x0, [1.0, 0.5], 1e-2, 3, generator=g),
        "pc": lambda g: pc_sampler(score1, VESDE(sigma_max=5.0), (16, 2), n_steps=5, generator=g, dtype=F64),
        "ode": lambda g: probability_flow(score1, VPSDE(), (16, 2), generator=g, dtype=F64),
    }
    for name, run in runs.items():
        a, info_a = run(gen(42))
        b, info_b = run(gen(42))
        c, _ = run(gen(43))
        assert torch.equal(a, b) and info_a == info_b, name
        assert not torch.equal(a, c), name


def test_progress_bar_runs(capsys):
    x0 = torch.zeros(4, 2, dtype=F64)
    langevin(lambda y: -y, x0, 0.1, 3, progress=True)
    pc_sampler(gaussian_score(1.0), VESDE(sigma_max=5.0), (4, 2), n_steps=3, progress=True, dtype=F64)
    probability_flow(gaussian_score(1.0), VESDE(sigma_max=5.0), (4, 2), progress=True, dtype=F64)


def test_info_is_frozen():
    _, info = langevin(lambda y: -y, torch.zeros(2, 2), 0.1, 1)
    with pytest.raises(Exception):
        info.steps = 3  # type: ignore[misc]


X0 = torch.zeros(4, 2)
S1 = gaussian_score(1.0)


def _neg(y, *_):
    return -y


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: langevin(_neg, X0, 0.0, 5), "step"),
        (lambda: langevin(_neg, X0, -1.0, 5), "step"),
        (lambda: langevin(_neg, X0, float("nan"), 5), "step"),
        (lambda: langevin(_neg, X0, 0.1, 0), "n_steps"),
        (lambda: langevin(_neg, X0, 0.1, 2.5), "n_steps"),
        (lambda: langevin(_neg, torch.zeros(4, 2, dtype=torch.long), 0.1, 5), "x0"),
        (lambda: langevin(_neg, torch.full((4, 2), float("nan")), 0.1, 5), "x0"),
        (lambda: langevin("not a function", X0, 0.1, 5), "score"),
        (lambda: langevin(lambda y: y[:, :1], X0, 0.1, 5), "score must return"),
        (lambda: mala(lambda y: -(y**2).sum(-1), X0, 0.0, 5), "step"),
        (lambda: mala(lambda y: -(y**2).sum(-1), X0, 0.1, 0), "n_steps"),
        (lambda: mala(lambda y: -(y**2), X0, 0.1, 5), "log_prob must return"),
        (lambda: annealed_langevin(S1, X0, [0.1, 1.0]), "decreasing"),
        (lambda: annealed_langevin(S1, X0, [1.0, 0.0]), "sigmas"),
        (lambda: annealed_langevin(S1, X0, []), "sigmas"),
        (lambda: annealed_langevin(S1, X0, [1.0], step=0.0), "step"),
        (lambda: annealed_langevin(S1, X0, [1.0], n_steps_each=0), "n_steps_each"),
        (lambda: pc_sampler(S1, VESDE(), (4, 2), n_steps=0), "n_steps"),
        (lambda: pc_sampler(S1, VESDE(), (4, 2), snr=0.0), "snr"),
        (lambda: pc_sampler(S1, VESDE(), (4, 2), n_corrector=-1), "n_corrector"),
        (lambda: pc_sampler(S1, VESDE(), (4, 2), predictor="ancestral"), "predictor"),
        (lambda: pc_sampler(S1, VESDE(), (0, 2)), "shape"),
        (lambda: pc_sampler(S1, "VE", (4, 2)), "sde"),
        (lambda: probability_flow(S1, VPSDE()), "exactly one"),
        (lambda: probability_flow(S1, VPSDE(), (4, 2), x_T=X0), "exactly one"),
        (lambda: probability_flow(S1, VPSDE(), (4, 2), rtol=0.0), "rtol"),
        (lambda: probability_flow(S1, VPSDE(), (4, 2), atol=-1.0), "atol"),
        (lambda: probability_flow(S1, VPSDE(), (4, 2), method="leapfrog"), "method"),
    ],
)
def test_bad_hyperparameters_raise(call, match):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=match):
            call()
