"""Score-matching objectives: how a score network is trained.

Conventions
-----------
* An *unconditional score* is a callable ``score(x) -> (B, ...)``; a
  *noise-conditional score* is ``score(x, sigma) -> (B, ...)`` with ``sigma`` of
  shape (B,). Both return the score itself: convert a network output first, e.g.
  ``lambda x, s: output_to_score(net(x, s), s, "scaled")`` (see
  ``parameterization``).
* ``x`` is a batch (B, ...) of vectors (B, d) or images (B, C, H, W). Squared
  norms and inner products sum over all non-batch dimensions; ``d`` below is the
  number of entries of one example.
* The score must treat the examples of a batch independently (no batch norm or
  other coupling across the batch): the trace and projection terms are computed
  by differentiating batch sums.
* Every loss returns a scalar tensor, the mean over the batch (or, with
  ``reduction="none"``, the (B,) per-example terms whose mean it is),
  differentiable with respect to the parameters the score closes over.
  ``exact_score_matching`` and ``sliced_score_matching`` take derivatives in x
  with ``torch.autograd.grad(create_graph=True)``: differentiate them with
  ordinary autograd (``loss.backward()``, ``torch.autograd.grad``), not inside
  ``torch.func`` transforms. They work under ``torch.no_grad()`` too.
* All randomness comes from the ``generator`` argument (``None``: torch's global
  generator); a generator in a fixed state gives the same loss.

What each loss estimates (the Fisher-divergence identities)
-----------------------------------------------------------
Each expected loss equals a weighted Fisher divergence to its minimiser plus a
constant C that does not depend on the model s:

================================  ==========================  =============================================
loss                              minimiser s*                expected loss
================================  ==========================  =============================================
``exact_score_matching``          ∇log p                      ½ E_p‖s − s*‖² + C,  C = −½ E_p‖∇log p‖²
``sliced_score_matching``         ∇log p                      same as exact (E_v vvᵀ = I), both variants
``denoising_score_matching``      ∇log p_σ, p_σ = p * N(0,σ²I) ½ σ² E_{p_σ}‖s − s*‖² + C_σ,
                                                              C_σ = ½ (d − σ² E_{p_σ}‖∇log p_σ‖²)
``ncsn_loss``                     ∇log p_{σ_i} at each σ_i    mean over i of the DSM line at σ_i
``sde_loss``                      ∇log p_t at σ = σ(t)        E_t[½ σ(t)² E_{p_t}‖s(·, σ(t)) − s*‖² + C_t],
                                                              C_t = ½ (d − σ(t)² E_{p_t}‖∇log p_t‖²)
================================  ==========================  =============================================

Here p_t is the law of m(t)·x₀ + σ(t)·ε (x₀ ~ p, ε ~ N(0, I)). The exact and
sliced identities rest on integration by parts (Hyvärinen 2005): p and s must
be smooth and decay fast enough that the boundary terms vanish. The DSM
identities (Vincent 2011) follow from Tweedie's formula
E[x̃ − m x₀ | x̃] = −σ² ∇log p_σ(x̃): the cross term E[s(x̃)·ε/σ] equals
−E[s·∇log p_σ], and E‖ε/σ‖² = d/σ².

References: Hyvärinen (2005), "Estimation of non-normalized statistical models
by score matching"; Vincent (2011), "A connection between score matching and
denoising autoencoders"; Song, Garg, Shi & Ermon (2019), "Sliced score
matching"; Song & Ermon (2019, 2020), NCSN and NCSNv2; Song et al. (2021),
"Score-based generative modeling through stochastic differential equations".
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .._checks import check_finite, check_nonnegative, check_positive_int
from .parameterization import expand_like
from .sde import SDE

Score = Callable[[torch.Tensor], torch.Tensor]  # x (B, ...) -> score (B, ...)
NoiseConditionalScore = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (B, ...), sigma (B,)) -> (B, ...)

REDUCTIONS = ("mean", "none")

__all__ = [
    "exact_score_matching",
    "sliced_score_matching",
    "denoising_score_matching",
    "geometric_sigmas",
    "sigma_max_from_data",
    "ncsn_loss",
    "sde_loss",
]


# ----------------------------------------------------------------------------- helpers


def _check_batch(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """A finite floating tensor (B, ...) with B >= 1 and at least one non-batch dimension."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, ...), got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor (float32 or float64), got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[0] < 1 or x[0].numel() < 1:
        raise ValueError(
            f"{name} must have shape (B, ...) with a batch dimension and at least one data dimension "
            f"(vectors (B, d) or images (B, C, H, W)), got {tuple(x.shape)}"
        )
    check_finite(x, name)
    return x


def _check_callable(score, name: str = "score") -> None:
    if not callable(score):
        raise ValueError(f"{name} must be callable, got {type(score).__name__}")


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _check_score_output(s, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(s, torch.Tensor) or s.shape != x.shape:
        got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise ValueError(f"score must return a tensor of the shape of its input {tuple(x.shape)}, got {got}")
    return s


def _sum_nonbatch(t: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first: (B, ...) -> (B,)."""
    return t.reshape(t.shape[0], -1).sum(1)


def _reduce(per_example: torch.Tensor, reduction: str) -> torch.Tensor:
    return per_example.mean() if reduction == "mean" else per_example


def _grad_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself if autograd already tracks it (keeps its graph), else a detached leaf that requires grad."""
    return x if x.requires_grad else x.detach().requires_grad_(True)


def _per_example_sigma(sigma, x: torch.Tensor, name: str = "sigma") -> torch.Tensor:
    """A noise level given as a number, a 0-d tensor or a (B,) tensor, as a (B,) tensor like ``x``."""
    batch = x.shape[0]
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, torch.Tensor)):
        raise ValueError(f"{name} must be a number or a tensor of shape ({batch},), got {type(sigma).__name__}")
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(batch)
    if sigma.shape != (batch,):
        raise ValueError(f"{name} must be a number or a tensor of shape ({batch},), got shape {tuple(sigma.shape)}")
    check_finite(sigma, name)
    if bool((sigma <= 0).any()):
        raise ValueError(f"{name} must be > 0, got minimum {float(sigma.min())}")
    return sigma


def _check_sigmas(sigmas, name: str = "sigmas") -> torch.Tensor:
    """A 1-D, finite, positive, strictly decreasing sequence of noise levels."""
    if isinstance(sigmas, torch.Tensor):
        if not sigmas.is_floating_point():
            sigmas = sigmas.to(torch.get_default_dtype())
    else:
        try:
            sigmas = torch.as_tensor(sigmas, dtype=torch.get_default_dtype())
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be a 1-D sequence of numbers, got {type(sigmas).__name__}") from None
    if sigmas.ndim != 1 or sigmas.numel() < 1:
        raise ValueError(f"{name} must be a non-empty 1-D tensor, got shape {tuple(sigmas.shape)}")
    check_finite(sigmas, name)
    if bool((sigmas <= 0).any()):
        raise ValueError(f"{name} must be > 0, got minimum {float(sigmas.min())}")
    if sigmas.numel() > 1 and bool((sigmas[1:] >= sigmas[:-1]).any()):
        raise ValueError(f"{name} must be strictly decreasing (largest first, NCSN's order), got {sigmas.tolist()}")
    return sigmas


def _dsm_terms(
    score: NoiseConditionalScore, x: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Per-example ½ σ² ‖s(x + σε, σ) + ε/σ‖² = ½ ‖σ s + ε‖², shape (B,)."""
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    sig = expand_like(sigma, x)
    s = _check_score_output(score(x + sig * eps, sigma), x)
    return 0.5 * _sum_nonbatch((sig * s + eps) ** 2)


# ----------------------------------------------------------------------------- clean data


def exact_score_matching(score: Score, x: torch.Tensor, *, max_dim: int = 64, reduction: str = "mean") -> torch.Tensor:
    """Hyvärinen's score-matching loss E_p[½‖s(x)‖² + tr ∇ₓs(x)], with the exact trace.

    Args:
        score: unconditional score, (B, d) -> (B, d), examples independent.
        x: data, (B, d) (vectors only: the Jacobian trace costs d backward passes).
        max_dim: largest d accepted (default 64); above it a ValueError points to
            ``sliced_score_matching``, whose cost does not grow with d.
        reduction: ``"mean"`` (scalar) or ``"none"`` (per-example (B,)).

    The trace is Σᵢ ∂sᵢ/∂xᵢ, one ``torch.autograd.grad`` of Σ_b s_b,i per
    coordinate with ``create_graph=True``, so the loss is differentiable with
    respect to the parameters (and works for scores that are themselves
    autograd gradients, such as ``score_of``). Minimiser: ∇log p (module table).
    """
    _check_callable(score)
    _check_reduction(reduction)
    _check_batch(x)
    if x.ndim != 2:
        raise ValueError(
            f"x must have shape (B, d) for exact score matching, got {tuple(x.shape)}; "
            "use sliced_score_matching for images"
        )
    check_positive_int(max_dim, "max_dim")
    d = x.shape[1]
    if d > max_dim:
        raise ValueError(
            f"x has d={d} > max_dim={max_dim}: the exact trace costs d backward passes; "
            "use sliced_score_matching or raise max_dim"
        )
    with torch.enable_grad():
        xr = _grad_input(x)
        s = _check_score_output(score(xr), xr)
        trace = torch.zeros(x.shape[0], dtype=s.dtype, device=s.device)
        if s.requires_grad:
            for i in range(d):
                (g,) = torch.autograd.grad(s[:, i].sum(), xr, create_graph=True, allow_unused=True)
                if g is not None:
                    trace = trace + g[:, i]
        per_example = 0.5 * (s**2).sum(1) + trace
    return _reduce(per_example, reduction)


def sliced_score_matching(
    score: Score,
    x: torch.Tensor,
    n_projections: int = 1,
    variance_reduced: bool = False,
    generator: torch.Generator | None = None,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    """Sliced score matching (Song et al. 2019): E_x E_v[vᵀ∇ₓs v + ½ (vᵀs)²], v ~ N(0, I).

    Args:
        score: unconditional score, (B, ...) -> (B, ...), examples independent.
        x: data, (B, d) vectors or (B, C, H, W) images (v has the shape of x).
        n_projections: number M of projections per example; the loss averages them.
        variance_reduced: SSM-VR, replace ½(vᵀs)² by its v-expectation ½‖s‖².
        generator: source of the projections (M draws of shape x.shape, in order).
        reduction: ``"mean"`` (scalar) or ``"none"`` (per-example (B,)).

    The score is evaluated once; vᵀ∇ₓs v is one vector-Jacobian product per
    projection, ((∇ₓs)ᵀv)·v with (∇ₓs)ᵀv = ∇ₓ(s·v), taken with
    ``create_graph=True`` so that the loss is differentiable with respect to
    the parameters. Both variants are unbiased for the exact score-matching
    loss (E_v vvᵀ = I); minimiser ∇log p.
    """
    _check_callable(score)
    _check_reduction(reduction)
    _check_batch(x)
    check_positive_int(n_projections, "n_projections")
    if not isinstance(variance_reduced, bool):
        raise ValueError(f"variance_reduced must be a bool, got {variance_reduced!r}")
    with torch.enable_grad():
        xr = _grad_input(x)
        s = _check_score_output(score(xr), xr)
        total = torch.zeros(x.shape[0], dtype=s.dtype, device=s.device)
        for _ in range(n_projections):
            v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            sv = _sum_nonbatch(s * v)
            if s.requires_grad:
                (g,) = torch.autograd.grad(sv.sum(), xr, create_graph=True, allow_unused=True)
                if g is not None:
                    total = total + _sum_nonbatch(g * v)
            if not variance_reduced:
                total = total + 0.5 * sv**2
        per_example = total / n_projections
        if variance_reduced:
            per_example = per_example + 0.5 * _sum_nonbatch(s**2)
    return _reduce(per_example, reduction)


# ----------------------------------------------------------------------------- noisy data


def denoising_score_matching(
    score: NoiseConditionalScore,
    x: torch.Tensor,
    sigma: float | torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    """Denoising score matching with Song & Ermon's σ² weighting: ½ E σ²‖s(x + σε, σ) + ε/σ‖².

    Args:
        score: noise-conditional score (x̃ (B, ...), σ (B,)) -> (B, ...).
        x: clean data, (B, ...) vectors or images.
        sigma: noise level > 0, a number or a (B,) tensor (one level per example);
            ``score`` always receives it as (B,).
        generator: source of ε (one draw of shape x.shape).
        reduction: ``"mean"`` (scalar) or ``"none"`` (per-example (B,)).

    Computed as ½‖σ s + ε‖², which avoids dividing by σ. The weight σ² makes
    the loss O(d) at every level. Minimiser: the score of p_σ = p * N(0, σ²I);
    the loss exceeds ½σ² E_{p_σ}‖s − ∇log p_σ‖² by ½(d − σ² E‖∇log p_σ‖²).
    """
    _check_callable(score)
    _check_reduction(reduction)
    _check_batch(x)
    sigma = _per_example_sigma(sigma, x)
    return _reduce(_dsm_terms(score, x, sigma, generator), reduction)


def geometric_sigmas(
    sigma_min: float,
    sigma_max: float,
    n: int,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """NCSN's noise levels: the (n,) geometric sequence σ₁ = σ_max > σ₂ > … > σ_n = σ_min.

    Largest first, as in NCSN/NCSNv2 (σ_i = σ_max (σ_min/σ_max)^((i−1)/(n−1)));
    consecutive ratios are all equal to (σ_min/σ_max)^(1/(n−1)). Requires
    0 < sigma_min < sigma_max and n >= 2; the endpoints are exact.
    """
    sigma_min = check_nonnegative(sigma_min, "sigma_min")
    sigma_max = check_nonnegative(sigma_max, "sigma_max")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    n = check_positive_int(n, "n", minimum=2)
    logs = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64)
    sigmas = torch.exp(logs)
    sigmas[0], sigmas[-1] = sigma_max, sigma_min
    return sigmas.to(dtype=dtype or torch.get_default_dtype(), device=device)


def sigma_max_from_data(x: torch.Tensor, chunk_size: int | None = None) -> float:
    """The largest pairwise Euclidean distance between examples of x (NCSNv2's choice of σ_max).

    Args:
        x: data, (N, ...) with N >= 2; each example is flattened.
        chunk_size: rows per block of the distance computation; by default about
            2²² distances per block.

    Exact over all N(N−1)/2 pairs, in O(N²) time and O(chunk_size·N) memory
    (fine up to ~10⁴–10⁵ points). The data are centred first; each block's
    candidates use the Gram-matrix expansion and the winning pair's distance is
    recomputed directly in float64, so the result is the exact maximum up to a
    relative error of the order of x's machine epsilon.
    """
    _check_batch(x)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"x must hold at least 2 examples, got {n}")
    if chunk_size is None:
        chunk_size = max(1, (1 << 22) // n)
    check_positive_int(chunk_size, "chunk_size")
    with torch.no_grad():
        flat = x.reshape(n, -1)
        flat = flat - flat.mean(0)
        sq = (flat**2).sum(1)
        best = 0.0
        for start in range(0, n, chunk_size):
            rows = flat[start : start + chunk_size]
            cols = flat[start:]  # pairs (i, j) with j >= i: each pair is seen once
            d2 = sq[start : start + chunk_size, None] + sq[None, start:] - 2.0 * rows @ cols.T
            k = int(torch.argmax(d2))
            i, j = divmod(k, cols.shape[0])
            exact = float(torch.linalg.vector_norm(rows[i].double() - cols[j].double()))
            best = max(best, exact)
    return best


def ncsn_loss(
    score: NoiseConditionalScore,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    generator: torch.Generator | None = None,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    """NCSN's multi-scale loss: one σ drawn uniformly from ``sigmas`` per example, then σ²-weighted DSM.

    Args:
        score: noise-conditional score (x̃ (B, ...), σ (B,)) -> (B, ...).
        x: clean data, (B, ...) vectors or images.
        sigmas: (L,) positive, strictly decreasing noise levels (``geometric_sigmas``).
        generator: source of the level indices (one ``randint`` draw of shape (B,))
            then of ε (one draw of shape x.shape).
        reduction: ``"mean"`` (scalar) or ``"none"`` (per-example (B,)).

    Expected value: (1/L) Σᵢ DSM(σᵢ); minimiser ∇log p_{σᵢ} at every level.
    """
    _check_callable(score)
    _check_reduction(reduction)
    _check_batch(x)
    sigmas = _check_sigmas(sigmas).to(dtype=x.dtype, device=x.device)
    idx = torch.randint(sigmas.numel(), (x.shape[0],), generator=generator, device=x.device)
    return _reduce(_dsm_terms(score, x, sigmas[idx], generator), reduction)


def sde_loss(
    score: NoiseConditionalScore,
    sde: SDE,
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    """Continuous-time DSM for a VE or VP SDE with λ(t) = σ(t)²: ½ E_t E ‖σ s(x_t, σ) + ε‖².

    Args:
        score: noise-conditional score (x_t (B, ...), σ (B,)) -> (B, ...). It is
            conditioned on σ(t) = ``sde.std(t)``, not on t (σ(t) is increasing, so
            both carry the same information).
        sde: a ``VESDE`` or ``VPSDE`` (any ``SDE`` with Gaussian kernels).
        x: clean data x₀, (B, ...) vectors or images.
        generator: source of t ~ U(sde.t_min, sde.T) (one draw of shape (B,)) then
            of ε (``sde.perturb``).
        reduction: ``"mean"`` (scalar) or ``"none"`` (per-example (B,)).

    x_t = m(t) x₀ + σ(t) ε, target −ε/σ(t). Minimiser: ∇log p_t, the score of
    the law of x_t; see the module table for the constant.
    """
    _check_callable(score)
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be an SDE (VESDE or VPSDE), got {type(sde).__name__}")
    _check_reduction(reduction)
    _check_batch(x)
    u = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
    t = sde.t_min + (sde.T - sde.t_min) * u
    x_t, eps, sigma = sde.perturb(x, t, generator)
    s = _check_score_output(score(x_t, sigma), x)
    per_example = 0.5 * _sum_nonbatch((expand_like(sigma, x) * s + eps) ** 2)
    return _reduce(per_example, reduction)
