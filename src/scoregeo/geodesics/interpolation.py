"""The interpolations geodesics are compared with: straight lines and spherical linear interpolation (SLERP)."""

from __future__ import annotations

import torch

from .._checks import check_positive_int, check_same_shape


def lerp(x0: torch.Tensor, x1: torch.Tensor, n_points: int) -> torch.Tensor:
    """Straight lines (..., n_points, d) from x0 to x1 (..., d), uniform in t ∈ [0, 1]."""
    check_same_shape(x0, x1, "x0", "x1")
    t = _times(n_points, x0)
    return x0.unsqueeze(-2) + t[:, None] * (x1 - x0).unsqueeze(-2)


def slerp(x0: torch.Tensor, x1: torch.Tensor, n_points: int) -> torch.Tensor:
    """Spherical linear interpolation (..., n_points, d) between x0 and x1 (..., d), uniform in t ∈ [0, 1].

    x(t) = sin((1 − t)θ)/sin θ · x0 + sin(tθ)/sin θ · x1, θ the angle between x0
    and x1 (the usual interpolation of Gaussian latents: for |x0| = |x1| it stays
    on their sphere and moves at constant angular speed). Nearly parallel pairs
    (sin θ < 1e-6) get the straight line; antipodal pairs are ambiguous and
    refused.
    """
    check_same_shape(x0, x1, "x0", "x1")
    t = _times(n_points, x0)[:, None]
    x0e, x1e = x0.unsqueeze(-2), x1.unsqueeze(-2)
    cos = ((x0 * x1).sum(-1) / (x0.norm(dim=-1) * x1.norm(dim=-1)).clamp_min(torch.finfo(x0.dtype).tiny)).clamp(-1, 1)
    theta = torch.arccos(cos)[..., None, None]
    if bool((cos < -1 + 1e-12).any()):
        raise ValueError("slerp is ambiguous between antipodal points (x1 = −c·x0)")
    sin = torch.sin(theta)
    parallel = sin < 1e-6
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    spherical = (torch.sin((1 - t) * theta) * x0e + torch.sin(t * theta) * x1e) / safe
    return torch.where(parallel, x0e + t * (x1e - x0e), spherical)


def _times(n_points: int, like: torch.Tensor) -> torch.Tensor:
    n_points = check_positive_int(n_points, "n_points", minimum=2)
    return torch.linspace(0, 1, n_points, dtype=like.dtype, device=like.device)
