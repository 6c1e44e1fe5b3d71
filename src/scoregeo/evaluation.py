"""How good is a learned score, and how good are its samples.

* ``fisher_divergence``: E_p ‖s_θ(x) − s(x)‖² against a known score, a Monte
  Carlo average over samples x ~ p; ``relative=True`` divides by E_p ‖s(x)‖².
* ``sliced_wasserstein``: sliced Wasserstein-2 distance between two sample sets.
* ``mmd``: squared maximum mean discrepancy with a Gaussian kernel (median-heuristic
  or given bandwidths), unbiased U-statistic by default, biased V-statistic on request.

Samples are (N, d) tensors; every function returns a float tensor scalar in the
dtype of its inputs.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

import torch

from ._checks import check_positive_int

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def fisher_divergence(
    score_fn: ScoreFn, target_score: ScoreFn, x: torch.Tensor, relative: bool = False
) -> torch.Tensor:
    """Fisher divergence E_p ‖s_θ(x) − s(x)‖², estimated by the mean over samples x ~ p.

    Both callables are evaluated once on the whole batch under ``torch.no_grad()``
    (a ``torch.func`` score such as ``sg.score_of(log_prob)`` still works there);
    their outputs are cast to the dtype and device of ``x``.

    Args:
        score_fn: the score s_θ being assessed, (N, d) → (N, d).
        target_score: the true score s of p, (N, d) → (N, d).
        x: (N, d) samples drawn from p.
        relative: if True return E‖s_θ − s‖² / E‖s‖² (both means over the same x),
            the scale-free quantity "Fisher divergence ≤ 5% of E‖s‖²".
    Returns: a scalar tensor, in squared score units (dimensionless if ``relative``).
    """
    x = _check_samples(x, "x")
    with torch.no_grad():
        s_model = _call_score(score_fn, x, "score_fn")
        s_true = _call_score(target_score, x, "target_score")
        value = ((s_model - s_true) ** 2).sum(-1).mean()
        if relative:
            norm = (s_true**2).sum(-1).mean()
            if not bool(norm > 0):
                raise ValueError("relative=True needs E‖target_score(x)‖² > 0, but target_score is 0 at every x")
            value = value / norm
    return value


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    bandwidth: float | Sequence[float] | None = None,
    unbiased: bool = True,
) -> torch.Tensor:
    """Squared maximum mean discrepancy MMD²(x, y) with a Gaussian kernel.

    The kernel is k(a, b) = Σ_h exp(−‖a − b‖² / (2h²)), a sum over the given
    bandwidths h (a single bandwidth gives the usual Gaussian kernel; a sum of
    characteristic kernels is characteristic, and covers several length scales).
    With ``bandwidth=None`` a single bandwidth is chosen by the median heuristic:
    h = the median of the pairwise Euclidean distances ‖z_i − z_j‖, i < j, over the
    pooled sample z = (x; y) of N + M points (the lower of the two middle values
    when their number is even, as ``torch.median``); h is not differentiated.

    ``unbiased=True`` returns the U-statistic
    1/(N(N−1)) Σ_{i≠j} k(x_i, x_j) + 1/(M(M−1)) Σ_{i≠j} k(y_i, y_j) − 2/(NM) Σ_{i,j} k(x_i, y_j),
    an unbiased estimate of the population MMD² that can be slightly negative when
    the two distributions are equal or close. ``unbiased=False`` returns the
    V-statistic (the diagonal terms included, 1/N² and 1/M² normalisation), the
    exact MMD² between the two empirical measures: always ≥ 0 and ≥ the U-statistic,
    but biased upwards by O(1/N + 1/M).

    It forms the (N + M) × (N + M) matrix of pairwise distances, so it is meant for
    a few thousand samples.

    Args:
        x: (N, d) samples. y: (M, d) samples (N, M ≥ 2 when ``unbiased``).
        bandwidth: None (median heuristic), a number h > 0, or a non-empty sequence
            of such numbers (a list, tuple or 1-D tensor).
        unbiased: U-statistic (True) or V-statistic (False).
    Returns: a scalar tensor (with K bandwidths, in [−2K, 2K]).
    """
    x, y = _check_sample_pair(x, y)
    n, m = x.shape[0], y.shape[0]
    if unbiased and (n < 2 or m < 2):
        raise ValueError(f"the unbiased MMD needs at least 2 samples in x and in y, got N={n}, M={m}")
    z = torch.cat([x, y])
    # direct differences (not the ‖a‖² + ‖b‖² − 2a·b expansion): exact zeros on the diagonal
    sqdist = torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist").square()
    if bandwidth is None:
        with torch.no_grad():
            upper = torch.ones_like(sqdist, dtype=torch.bool).triu(1)
            h = sqdist[upper].median().sqrt()
        if not bool(h > 0):
            raise ValueError("the median heuristic gave bandwidth 0 (more than half the pooled points coincide); "
                             "pass bandwidth explicitly")
        widths = [float(h)]
    else:
        widths = _check_bandwidths(bandwidth)
    kernel = sum(torch.exp(sqdist * (-0.5 / (w * w))) for w in widths)
    kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    if unbiased:
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        sxx = kxx.sum() / (n * n)
        syy = kyy.sum() / (m * m)
    return sxx + syy - 2.0 * kxy.mean()


def sliced_wasserstein(
    x: torch.Tensor, y: torch.Tensor, n_projections: int = 256, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sliced Wasserstein-2 distance SW₂(x, y) = (E_θ W₂²(θ·x, θ·y))^½, θ uniform on the unit sphere.

    Each 1-D W₂ is computed exactly between the two empirical measures from their
    quantile functions (sorted projections; when N ≠ M both are evaluated at the
    merged quantile levels). The expectation over directions is a Monte Carlo
    average over ``n_projections`` random directions drawn with ``generator``.

    Args:
        x: (N, d) samples. y: (M, d) samples.
    Returns: a scalar tensor, in the units of the data.
    """
    x, y = _check_sample_pair(x, y)
    check_positive_int(n_projections, "n_projections")
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=x.dtype, device=x.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ theta, dim=0)  # (N, P)
    py, _ = torch.sort(y @ theta, dim=0)  # (M, P)
    if px.shape[0] == py.shape[0]:
        return ((px - py) ** 2).mean().sqrt()
    # Exact 1-D W₂ between empirical measures of different sizes: integrate
    # (F⁻¹_x(u) − F⁻¹_y(u))² over the pieces between the merged quantile levels.
    n, m = px.shape[0], py.shape[0]
    levels = torch.unique(torch.cat([torch.arange(1, n + 1, dtype=x.dtype, device=x.device) / n,
                                     torch.arange(1, m + 1, dtype=x.dtype, device=x.device) / m]))
    widths = torch.diff(levels, prepend=levels.new_zeros(1))
    mid = levels - widths / 2
    ix = torch.clamp((mid * n).floor().long(), max=n - 1)
    iy = torch.clamp((mid * m).floor().long(), max=m - 1)
    return (widths[:, None] * (px[ix] - py[iy]) ** 2).sum(0).mean().sqrt()


def _check_samples(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must be a floating-point tensor of shape (N, d) with N >= 1, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf samples")
    return x


def _call_score(fn: ScoreFn, x: torch.Tensor, name: str) -> torch.Tensor:
    if not callable(fn):
        raise ValueError(f"{name} must be callable, got {type(fn).__name__}")
    out = fn(x)
    if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.shape != x.shape:
        raise ValueError(f"{name} must map x of shape {tuple(x.shape)} to a floating-point tensor of the same "
                         f"shape, got {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} returned NaN or Inf values")
    return out.to(x)


def _check_bandwidths(bandwidth: float | Sequence[float] | torch.Tensor) -> list[float]:
    if isinstance(bandwidth, torch.Tensor):
        if bandwidth.ndim > 1:
            raise ValueError(f"bandwidth must be a number or a 1-D sequence, got shape {tuple(bandwidth.shape)}")
        values = bandwidth.reshape(-1).tolist()
    elif isinstance(bandwidth, numbers.Real) and not isinstance(bandwidth, bool):
        values = [bandwidth]
    elif isinstance(bandwidth, Sequence) and not isinstance(bandwidth, str):
        values = list(bandwidth)
    else:
        raise ValueError(f"bandwidth must be None, a number or a sequence of numbers, got {type(bandwidth).__name__}")
    if not values:
        raise ValueError("bandwidth must not be an empty sequence")
    for v in values:
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"every bandwidth must be a finite number > 0, got {v!r}")
    return [float(v) for v in values]


def _check_sample_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _check_samples(x, "x")
    _check_samples(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension d, got {x.shape[1]} and {y.shape[1]}")
    return x, y.to(x)


def path_log_prob(log_prob: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor) -> dict[str, torch.Tensor]:
    """log p along curves (..., n, d): the values (..., n), their minimum and their mean per unit Euclidean length (...).

    ``log_prob`` maps (..., d) to (...) (an analytic log-density, or a model's
    ``log_prob`` by the probability-flow ODE); the mean weights each segment's
    midpoint value by the segment's Euclidean length (midpoint rule), so it
    does not depend on how the curve is parametrised.
    """
    if not isinstance(points, torch.Tensor) or points.ndim < 2 or points.shape[-2] < 2:
        raise ValueError(f"points must have shape (..., n, d) with n >= 2, got {getattr(points, 'shape', type(points))}")
    values = log_prob(points)
    mids = log_prob(0.5 * (points[..., 1:, :] + points[..., :-1, :]))
    steps = (points[..., 1:, :] - points[..., :-1, :]).norm(dim=-1)
    mean = (mids * steps).sum(-1) / steps.sum(-1).clamp_min(torch.finfo(points.dtype).tiny)
    return {"values": values, "minimum": values.amin(-1), "mean": mean}
