"""How good is a learned score, and how good are its samples.

* ``fisher_divergence``: E_p ‖s_θ(x) − s(x)‖² against a known score.
* ``sliced_wasserstein``: sliced Wasserstein-2 distance between two sample sets.
* ``mmd``: maximum mean discrepancy with a Gaussian kernel.

Samples are (N, d) tensors; every function returns a float tensor scalar in the
dtype of its inputs.
"""

from __future__ import annotations

import torch

from ._checks import check_positive_int


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


def _check_sample_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim != 2 or t.shape[0] < 1:
            raise ValueError(f"{name} must be a floating-point tensor of shape (N, d) with N >= 1, got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or Inf samples")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension d, got {x.shape[1]} and {y.shape[1]}")
    return x, y.to(x)
