"""Langevin samplers driven by a score: unadjusted (ULA), Metropolis-adjusted (MALA), annealed (NCSN).

Step-size convention
--------------------
The literature writes the Langevin step in two ways that differ by a factor 2:

* Roberts & Tweedie (1996), the unadjusted Langevin algorithm (ULA), and MALA:
  ``x ← x + ε ∇log p(x) + √(2ε) z``;
* NCSN (Song & Ermon, 2019): ``x ← x + (α/2) ∇log p(x) + √α z``, i.e. α = 2ε.

Every sampler here uses the **first** one: ε is the time step of the Euler–
Maruyama discretisation of the overdamped Langevin diffusion

    dX = ∇log p(X) dt + √2 dW,

whose stationary law is p. With this reading ε has the units of time (of a
squared length), the discretisation bias is a function of ε alone, and the
predictor–corrector sampler of :mod:`.sde_samplers`, whose step comes from
Song et al.'s signal-to-noise rule written the same way, shares the convention.
For N(0, σ²) the chain is x ← (1 − ε/σ²) x + √(2ε) z, stable for ε < 2σ², with
stationary law N(0, σ²/(1 − ε/(2σ²))): the bias of ULA is O(ε) and vanishes as
ε → 0; MALA removes it with an accept/reject step.

All randomness comes from ``generator``; x is (B, ...) (vectors or images), every
chain is independent, and samplers never raise when a chain diverges: they report
the number of non-finite samples in :class:`SampleInfo` and warn.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import torch
from torch.func import grad_and_value

from .._checks import check_positive_int
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
)

Score = Callable[[torch.Tensor], torch.Tensor]
NoiseScore = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LogProb = Callable[[torch.Tensor], torch.Tensor]


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def langevin(
    score: Score,
    x0: torch.Tensor,
    step: float,
    n_steps: int,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, SampleInfo]:
    """Unadjusted Langevin algorithm: ``x ← x + ε s(x) + √(2ε) z``, z ~ N(0, I).

    ε = ``step`` is the time step of dX = ∇log p dt + √2 dW (Roberts & Tweedie's
    convention; NCSN's α is 2ε, see the module docstring). The chain is biased
    at any ε > 0: for N(0, σ²) its stationary variance is σ²/(1 − ε/(2σ²)).

    Args:
        score: s(x) = ∇log p(x), (B, ...) → (B, ...).
        x0: (B, ...) starting points, one chain each.
        step: ε > 0.
        n_steps: number of updates (>= 1).
        generator: source of the Gaussian noise.
        progress: show a tqdm progress bar.

    Returns:
        (samples (B, ...), :class:`SampleInfo`) with ``score_evals = n_steps``.
    """
    check_callable(score, "score")
    x = check_start(x0, "x0")
    step = check_positive(step, "step")
    n_steps = check_positive_int(n_steps, "n_steps")
    noise_scale = math.sqrt(2 * step)
    with torch.no_grad():
        for _ in progress_bar(range(n_steps), progress, "langevin"):
            x = x + step * call_score(score, x) + noise_scale * _noise(x, generator)
    bad = report_nonfinite(x, "langevin")
    return x, SampleInfo("langevin", steps=n_steps, score_evals=n_steps, n_nonfinite=bad)


def mala(
    log_prob: LogProb,
    x0: torch.Tensor,
    step: float,
    n_steps: int,
    score: Score | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, SampleInfo]:
    """Metropolis-adjusted Langevin algorithm (Roberts & Tweedie, 1996).

    Proposal y = x + ε s(x) + √(2ε) z (same convention as :func:`langevin`), i.e.
    q(y | x) = N(y; x + ε s(x), 2ε I), accepted per chain with probability

        min(1, p(y) q(x | y) / (p(x) q(y | x))),

    log q(x | y) − log q(y | x) = (‖z‖² − ‖x − y − ε s(y)‖²/(2ε))/2. The chain
    leaves p invariant for every ε > 0 (no discretisation bias); ε only sets the
    acceptance rate and the mixing speed.

    A proposal that is not finite (a NaN in the score, say) has no density and
    is rejected; such proposals are counted and reported in a RuntimeWarning.

    Args:
        log_prob: log p up to a constant, (B, ...) → (B,), one value per chain.
        x0: (B, ...) starting points, one chain each; log p(x0) must be finite.
        step: ε > 0.
        n_steps: number of proposals per chain (>= 1).
        score: ∇log p, (B, ...) → (B, ...); when None it is obtained from
            ``log_prob`` by automatic differentiation (``torch.func``, one joint
            evaluation of log p and its gradient per step).
        generator: source of the proposal noise and of the uniforms.
        progress: show a tqdm progress bar.

    Returns:
        (samples (B, ...), :class:`SampleInfo`) with ``acceptance_rate`` the
        mean acceptance over chains and steps and ``score_evals = n_steps + 1``
        (``log_prob`` is evaluated at the same points).
    """
    check_callable(log_prob, "log_prob")
    if score is not None:
        check_callable(score, "score")
    x = check_start(x0, "x0")
    step = check_positive(step, "step")
    n_steps = check_positive_int(n_steps, "n_steps")
    batch = x.shape[0]

    def log_prob_checked(y: torch.Tensor) -> torch.Tensor:
        lp = log_prob(y)
        if not isinstance(lp, torch.Tensor) or lp.shape != (batch,):
            got = tuple(lp.shape) if isinstance(lp, torch.Tensor) else type(lp).__name__
            raise ValueError(f"log_prob must return one value per chain, shape ({batch},), got {got}")
        return lp

    if score is None:
        joint = grad_and_value(lambda y: (lambda lp: (lp.sum(), lp))(log_prob_checked(y)), has_aux=True)

        def evaluate(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            g, (_, lp) = joint(y)
            return lp, g
    else:

        def evaluate(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return log_prob_checked(y), call_score(score, y)

    def sq_norm(v: torch.Tensor) -> torch.Tensor:
        return (v.reshape(batch, -1) ** 2).sum(1)

    noise_scale = math.sqrt(2 * step)
    accepted = torch.zeros((), dtype=torch.float64)
    n_bad_proposals = 0
    with torch.no_grad():
        lp_x, s_x = evaluate(x)
        for _ in progress_bar(range(n_steps), progress, "mala"):
            z = _noise(x, generator)
            y = x + step * s_x + noise_scale * z
            ok = finite_rows(y)
            if not bool(ok.all()):
                n_bad_proposals += int((~ok).sum())
                y = torch.where(rows(ok, y), y, x)  # evaluate somewhere harmless; rejected below
            lp_y, s_y = evaluate(y)
            log_ratio = lp_y - lp_x + 0.5 * (sq_norm(z) - sq_norm(x - y - step * s_y) / (2 * step))
            u = torch.rand(batch, generator=generator, dtype=x.dtype, device=x.device)
            accept = ok & (torch.log(u) < log_ratio)  # NaN log_ratio → rejected
            accepted += accept.sum().to(accepted)
            keep = rows(accept, x)
            x = torch.where(keep, y, x)
            s_x = torch.where(keep, s_y, s_x)
            lp_x = torch.where(accept, lp_y, lp_x)
    if n_bad_proposals:
        warnings.warn(
            f"mala: {n_bad_proposals} non-finite proposals (NaN or Inf in the score) were rejected",
            RuntimeWarning,
            stacklevel=2,
        )
    bad = report_nonfinite(x, "mala")
    rate = float(accepted) / (batch * n_steps)
    return x, SampleInfo("mala", steps=n_steps, score_evals=n_steps + 1, acceptance_rate=rate, n_nonfinite=bad)


def annealed_langevin(
    score: NoiseScore,
    x0: torch.Tensor,
    sigmas: Sequence[float] | torch.Tensor,
    step: float = 1e-5,
    n_steps_each: int = 100,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, SampleInfo]:
    """Annealed Langevin dynamics (NCSN, Song & Ermon 2019, Algorithm 1).

    For each noise level σ_1 > σ_2 > ... > σ_L in turn, ``n_steps_each``
    Langevin steps target p_σi (the data convolved with N(0, σ_i² I)):

        x ← x + ε_i s(x, σ_i) + √(2 ε_i) z,   ε_i = step · σ_i² / σ_L²,

    in the convention of :func:`langevin`. NCSN writes the same update as
    x + (α_i/2) s + √α_i z with α_i = ε_NCSN σ_i²/σ_L², so ``step`` = ε_NCSN / 2:
    NCSN's default ε_NCSN = 2·10⁻⁵ (for σ_L = 0.01) is ``step=1e-5``, the default
    here. The ratio ε_i/σ_i² = step/σ_L² is the same at every level, so each level
    makes the same relative progress.

    With ``denoise`` a last, noise-free step x ← x + σ_L² s(x, σ_L) returns
    Tweedie's estimate E[x_0 | x] of the clean point (one more score call).

    Args:
        score: noise-conditional score s(x, σ), x (B, ...), σ (B,) → (B, ...).
        x0: (B, ...) starting points (NCSN draws them uniformly or from N(0, σ_1² I)).
        sigmas: the noise levels, strictly decreasing, all > 0 (a sequence or 1-D tensor).
        step: ε at the smallest level σ_L (> 0).
        n_steps_each: Langevin steps per level (>= 1).
        denoise: finish with the Tweedie denoising step.
        generator: source of the Gaussian noise.
        progress: show a tqdm progress bar.

    Returns:
        (samples (B, ...), :class:`SampleInfo`) with ``steps = L · n_steps_each``
        and ``score_evals = steps + denoise``.
    """
    check_callable(score, "score")
    x = check_start(x0, "x0")
    sigma_list = _check_sigmas(sigmas)
    step = check_positive(step, "step")
    n_steps_each = check_positive_int(n_steps_each, "n_steps_each")
    sigma_last = sigma_list[-1]
    total = len(sigma_list) * n_steps_each
    schedule = ((sigma, j) for sigma in sigma_list for j in range(n_steps_each))
    with torch.no_grad():
        for sigma, _ in progress_bar(schedule, progress, "annealed langevin", total=total):
            eps = step * (sigma / sigma_last) ** 2
            s = call_score(score, x, per_example(x, sigma))
            x = x + eps * s + math.sqrt(2 * eps) * _noise(x, generator)
        if denoise:
            x = x + sigma_last**2 * call_score(score, x, per_example(x, sigma_last))
    bad = report_nonfinite(x, "annealed_langevin")
    return x, SampleInfo("annealed_langevin", steps=total, score_evals=total + int(denoise), n_nonfinite=bad)


def _check_sigmas(sigmas: Sequence[float] | torch.Tensor) -> list[float]:
    """The noise levels as a list of floats, checked to be > 0, finite and strictly decreasing."""
    message = f"sigmas must be a non-empty 1-D sequence of noise levels, got {sigmas!r}"
    if isinstance(sigmas, torch.Tensor):
        values = sigmas.detach().to("cpu", torch.float64)
    else:
        try:
            values = torch.tensor(list(sigmas), dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(message) from None
    if values.ndim != 1 or values.numel() == 0:
        raise ValueError(message)
    if not bool(torch.isfinite(values).all()) or bool((values <= 0).any()):
        raise ValueError(f"sigmas must be finite and > 0, got {values.tolist()}")
    if bool((values[1:] >= values[:-1]).any()):
        raise ValueError(f"sigmas must be strictly decreasing (largest first), got {values.tolist()}")
    return values.tolist()
