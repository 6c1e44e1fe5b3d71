"""Samplers for score-based diffusion models (Song et al., ICLR 2021): predictor–corrector and probability flow.

Both reverse a forward SDE of :mod:`scoregeo.scores.sde` (``VESDE`` or ``VPSDE``)
from its prior at t = T down to t = t_min, driven by a noise-conditional score
``score(x, σ)`` where x is (B, ...) and σ = ``sde.std(t)`` is passed as a (B,)
tensor. Shapes are never interpreted: vectors (B, d) and images (B, C, H, W) are
treated alike, norms run over all non-batch dimensions.

Final denoising (``denoise=True``, both samplers): the state x at t_min carries
Gaussian noise x = m x_0 + σ ε; it is replaced by Tweedie's estimate

    E[x_0 | x] = (x + σ² s(x, σ)) / m,   σ = σ(t_min), m = m(t_min),

which is x + σ² s for the VE SDE (m = 1). This is one more score evaluation.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import torch
from torchdiffeq import odeint

from .._checks import check_positive_int
from ..scores.parameterization import expand_like
from ..scores.sde import SDE
from .info import (
    SampleInfo,
    call_score,
    check_callable,
    check_positive,
    check_start,
    finite_rows,
    per_example,
    progress_bar,
    report_nonfinite,
    rows,
    sample_norms,
)

NoiseScore = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

PREDICTORS = ("reverse_diffusion", "euler_maruyama")
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_METHODS = ("euler", "midpoint", "rk4")


def pc_sampler(
    score: NoiseScore,
    sde: SDE,
    shape: tuple[int, ...],
    n_steps: int = 500,
    snr: float = 0.16,
    n_corrector: int = 1,
    predictor: str = "reverse_diffusion",
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    denoise: bool = True,
    progress: bool = False,
) -> tuple[torch.Tensor, SampleInfo]:
    """Predictor–corrector sampling of the reverse-time SDE (Song et al. 2021, Algorithms 2–3).

    Starting from x ~ prior at t_0 = T, for each t_i → t_{i+1} of the uniform
    grid T = t_0 > t_1 > ... > t_N = t_min (N = ``n_steps``):

    * **Predictor**, one step of the reverse SDE dx = [f − g² s] dt + g dw̄:

      - ``"reverse_diffusion"``: write the forward SDE's exact transition from
        t_{i+1} to t_i as x_i = a x_{i+1} + G z, a = m(t_i)/m(t_{i+1}),
        G² = σ(t_i)² − a² σ(t_{i+1})², and reverse it as
        x ← x − (a − 1) x + G² s(x, σ(t_i)) + G z (Song et al.'s reverse-diffusion
        predictor; for the VE SDE G² = σ_i² − σ_{i+1}², as in the paper);
      - ``"euler_maruyama"``: x ← x − [f(x, t_i) − g(t_i)² s] Δt + g(t_i) √Δt z.

    * **Corrector**, ``n_corrector`` Langevin steps targeting p_{t_{i+1}}, in the
      convention of :func:`scoregeo.sampling.langevin` (x ← x + ε s + √(2ε) z) with
      the signal-to-noise rule

          ε = 2 (snr · ‖z‖ / ‖s‖)²,

      where ‖z‖ and ‖s‖ are the norms over all non-batch dimensions **averaged
      over the batch** (finite samples only), so one ε serves the whole batch, as
      in the reference implementation. A per-sample ratio would give huge steps
      to samples where the score nearly vanishes (near a mode), which in low
      dimension happens often; in high dimension D the two agree, ‖z‖ ≈ √D and
      ε ≈ 2 snr² σ². Song et al. multiply ε by α_i = 1 − β_i for the VP SDE; that
      factor is 1 − O(1/N) and is omitted here.

    Finally, with ``denoise``, the Tweedie step of the module docstring.

    Args:
        score: noise-conditional score s(x, σ), x (B, ...), σ (B,) → (B, ...).
        sde: a :class:`~scoregeo.scores.sde.VESDE` or ``VPSDE``.
        shape: (B, ...) shape of the batch to draw.
        n_steps: predictor steps N (>= 1).
        snr: signal-to-noise ratio r of the corrector (> 0); Song et al. use
            0.16 for VE and 0.01–0.27 for VP models.
        n_corrector: corrector steps after each predictor step (>= 0; 0 is
            predictor only).
        predictor: ``"reverse_diffusion"`` or ``"euler_maruyama"``.
        generator: source of the prior sample and of all noise.
        dtype, device: of the samples (default dtype: torch's default).
        denoise: finish with the Tweedie denoising step.
        progress: show a tqdm progress bar.

    Returns:
        (samples of shape ``shape``, :class:`SampleInfo`) with ``steps = N`` and
        ``score_evals = N (1 + n_corrector) + denoise``.
    """
    check_callable(score, "score")
    _check_sde(sde)
    shape = _check_shape(shape)
    n_steps = check_positive_int(n_steps, "n_steps")
    snr = check_positive(snr, "snr")
    n_corrector = check_positive_int(n_corrector, "n_corrector", minimum=0)
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {PREDICTORS}, got {predictor!r}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    grid = torch.linspace(sde.T, sde.t_min, n_steps + 1, dtype=torch.float64).tolist()
    sigmas = sde.std(torch.tensor(grid, dtype=torch.float64)).tolist()
    means = sde.mean_coef(torch.tensor(grid, dtype=torch.float64)).expand(len(grid)).tolist()

    with torch.no_grad():
        x = sde.prior_sample(shape, generator=generator, dtype=dtype, device=device)

        def noise() -> torch.Tensor:
            return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)

        def score_at(y: torch.Tensor, sigma: float) -> torch.Tensor:
            return call_score(score, y, per_example(y, sigma))

        for i in progress_bar(range(n_steps), progress, f"pc/{predictor}"):
            t, t_next = grid[i], grid[i + 1]
            s = score_at(x, sigmas[i])
            if predictor == "reverse_diffusion":
                a = means[i] / means[i + 1]
                g2 = max(sigmas[i] ** 2 - a**2 * sigmas[i + 1] ** 2, 0.0)
                x = x - (a - 1) * x + g2 * s + math.sqrt(g2) * noise()
            else:
                dt = t - t_next
                t_vec = per_example(x, t)
                g = float(sde.diffusion(torch.tensor(t, dtype=torch.float64)))
                x = x - (sde.drift(x, t_vec) - g**2 * s) * dt + g * math.sqrt(dt) * noise()
            for _ in range(n_corrector):
                s = score_at(x, sigmas[i + 1])
                z = noise()
                ok = finite_rows(x) & finite_rows(s)
                ratio = sample_norms(z)[ok].mean() / sample_norms(s)[ok].mean().clamp_min(torch.finfo(x.dtype).tiny)
                eps = 2 * (snr * ratio) ** 2
                x = x + eps * s + torch.sqrt(2 * eps) * z
        if denoise:
            x = _tweedie(score, x, sigmas[-1], means[-1])
    bad = report_nonfinite(x, f"pc_sampler/{predictor}")
    evals = n_steps * (1 + n_corrector) + int(denoise)
    return x, SampleInfo(f"pc/{predictor}", steps=n_steps, score_evals=evals, n_nonfinite=bad)


def probability_flow(
    score: NoiseScore,
    sde: SDE,
    shape: tuple[int, ...] | None = None,
    *,
    x_T: torch.Tensor | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    n_steps: int = 100,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    denoise: bool = True,
    progress: bool = False,
) -> tuple[torch.Tensor, SampleInfo]:
    """Integrate the probability-flow ODE dx/dt = f(x, t) − ½ g(t)² s(x, σ(t)) from T down to t_min.

    The ODE has the same marginals p_t as the forward SDE, so pushing prior
    samples through it samples p_{t_min}; it is deterministic given x_T. It is
    solved with ``torchdiffeq.odeint`` on the batch flattened to (B, D); the
    adaptive step is controlled in torchdiffeq's default RMS norm over the whole
    batch. Samples whose score turns non-finite are frozen (their velocity is set
    to zero so that they do not stall the step-size control for the others) and
    returned as NaN; if the solver still fails (step-size underflow) every sample
    is returned as NaN. Either way a RuntimeWarning is issued, nothing is raised.

    Args:
        score: noise-conditional score s(x, σ), x (B, ...), σ (B,) → (B, ...).
        sde: a :class:`~scoregeo.scores.sde.VESDE` or ``VPSDE``.
        shape: (B, ...) shape of a batch drawn from the prior; exactly one of
            ``shape`` and ``x_T`` must be given.
        x_T: (B, ...) starting points at t = T (e.g. a fixed prior draw).
        rtol, atol: tolerances of an adaptive method (> 0).
        method: an adaptive torchdiffeq method (``"dopri5"``, the default,
            ``"dopri8"``, ``"bosh3"``, ``"fehlberg2"``, ``"adaptive_heun"``) or a
            fixed-step one (``"euler"``, ``"midpoint"``, ``"rk4"``).
        n_steps: number of uniform steps of a fixed-step method (ignored by
            adaptive ones).
        generator: source of the prior sample.
        dtype, device: of a prior sample (default dtype: torch's default).
        denoise: finish with the Tweedie denoising step.
        progress: show a tqdm progress bar (in units of time).

    Returns:
        (samples (B, ...), :class:`SampleInfo`) with ``score_evals`` the number of
        function evaluations of the ODE (plus one for ``denoise``), ``steps`` the
        number of accepted steps, and ``solver`` naming method and tolerances.
    """
    check_callable(score, "score")
    _check_sde(sde)
    if (shape is None) == (x_T is None):
        raise ValueError("give exactly one of shape (to draw x_T from the prior) and x_T")
    rtol = check_positive(rtol, "rtol")
    atol = check_positive(atol, "atol")
    if method not in ADAPTIVE_METHODS + FIXED_METHODS:
        raise ValueError(f"method must be one of {ADAPTIVE_METHODS + FIXED_METHODS}, got {method!r}")
    n_steps = check_positive_int(n_steps, "n_steps")
    if x_T is None:
        shape = _check_shape(shape)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        x_T = sde.prior_sample(shape, generator=generator, dtype=dtype, device=device)
    else:
        x_T = check_start(x_T, "x_T")
    shape = tuple(x_T.shape)
    adaptive = method in ADAPTIVE_METHODS
    if adaptive:
        options: dict = {"step_t": [sde.t_min]}  # never step past t_min (torchdiffeq overshoots and interpolates)
        solver = f"{method}(rtol={rtol:g}, atol={atol:g})"
    else:
        options = {"grid_constructor": lambda _f, _y0, t: _uniform_grid(t, n_steps)}
        solver = f"{method}(n_steps={n_steps})"

    field = (_AdaptiveFlowField if adaptive else _FlowField)(score, sde, shape)
    times = torch.tensor([sde.T, sde.t_min], dtype=x_T.dtype, device=x_T.device)
    with torch.no_grad(), progress_bar(None, progress, "probability flow", total=sde.T - sde.t_min) as bar:
        field.bar = bar
        try:
            x = odeint(field, x_T.reshape(shape[0], -1), times, rtol=rtol, atol=atol, method=method,
                       options=options)[-1].reshape(shape)
        except AssertionError as err:  # torchdiffeq signals step-size underflow with an assertion
            warnings.warn(f"probability_flow: the ODE solver failed ({err}); returning NaN samples",
                          RuntimeWarning, stacklevel=2)
            x = torch.full_like(x_T, float("nan"))
        if field.bad is not None:  # samples whose score turned non-finite were frozen: report them as NaN
            x = torch.where(rows(field.bad, x), torch.full_like(x, float("nan")), x)
        if denoise:
            t_min = torch.tensor(sde.t_min, dtype=torch.float64)
            x = _tweedie(score, x, float(sde.std(t_min)), float(sde.mean_coef(t_min)))
    bad = report_nonfinite(x, "probability_flow")
    steps = field.accepted if adaptive else n_steps
    return x, SampleInfo("probability_flow", steps=steps, score_evals=field.nfe + int(denoise),
                         n_nonfinite=bad, solver=solver)


class _FlowField:
    """Right-hand side of the probability-flow ODE on a flat batch (B, D); counts evaluations and steps."""

    def __init__(self, score: NoiseScore, sde: SDE, shape: tuple[int, ...]):
        self.score, self.sde, self.shape = score, sde, shape
        self.nfe = 0
        self.accepted = 0
        self.bad: torch.Tensor | None = None
        self.bar = None

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        x = y.reshape(self.shape)
        # the solver's probe for its first step may lie outside [t_min, T], where σ(t) can be undefined (VP, t < 0)
        t_vec = t.clamp(self.sde.t_min, self.sde.T).expand(x.shape[0]).to(x)
        s = call_score(self.score, x, self.sde.std(t_vec).to(x))
        g2 = expand_like(self.sde.diffusion(t_vec) ** 2, x)
        v = (self.sde.drift(x, t_vec) - 0.5 * g2 * s).reshape(y.shape)
        bad = ~finite_rows(v)
        self.bad = bad if self.bad is None else self.bad | bad
        return torch.where(self.bad[:, None], torch.zeros_like(v), v)


class _AdaptiveFlowField(_FlowField):
    """The flow field with torchdiffeq's accepted-step callback (adaptive solvers only support it)."""

    def callback_accept_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.accepted += 1
        if self.bar is not None:
            self.bar.update(abs(float(dt)))


def _uniform_grid(t: torch.Tensor, n_steps: int) -> torch.Tensor:
    """n_steps + 1 uniform times from t[0] to t[-1], whose end points are exactly those of t (torchdiffeq checks)."""
    grid = torch.linspace(float(t[0]), float(t[-1]), n_steps + 1, dtype=t.dtype, device=t.device)
    grid[0], grid[-1] = t[0], t[-1]
    return grid


def _tweedie(score: NoiseScore, x: torch.Tensor, sigma: float, mean_coef: float) -> torch.Tensor:
    """Tweedie's denoiser E[x_0 | x] = (x + σ² s(x, σ)) / m for x = m x_0 + σ ε."""
    return (x + sigma**2 * call_score(score, x, per_example(x, sigma))) / mean_coef


def _check_sde(sde: object) -> None:
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be a scoregeo SDE (VESDE or VPSDE), got {type(sde).__name__}")


def _check_shape(shape: object) -> tuple[int, ...]:
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if (not isinstance(shape, (tuple, list)) or len(shape) == 0
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)):
        raise ValueError(f"shape must be a non-empty tuple of positive integers (B, ...), got {shape!r}")
    return tuple(shape)
