"""Length and energy of discrete curves under a metric."""

from __future__ import annotations

import torch

from .._checks import check_points
from ..metrics import Metric


def curve_length(metric: Metric, points: torch.Tensor) -> torch.Tensor:
    """Riemannian length of polygonal curves, (..., n, d) → (...).

    Midpoint rule: Σ_i ‖x_{i+1} − x_i‖ at (x_i + x_{i+1})/2; second-order accurate
    in the spacing for smooth curves.
    """
    steps, mids = _segments(metric, points)
    return metric._inner(mids, steps, steps).clamp_min(0).sqrt().sum(-1)


def curve_energy(metric: Metric, points: torch.Tensor) -> torch.Tensor:
    """Energy ∫₀¹ ⟨ẋ, ẋ⟩ dt of curves sampled uniformly in t ∈ [0, 1], (..., n, d) → (...).

    Midpoint rule: (n − 1) Σ_i ⟨Δ_i, Δ_i⟩ at the segment midpoints. By
    Cauchy–Schwarz, energy ≥ length², with equality for constant-speed curves.
    """
    steps, mids = _segments(metric, points)
    return (points.shape[-2] - 1) * metric._inner(mids, steps, steps).sum(-1)


def _segments(metric: Metric, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps and midpoints of curves (..., n, d) or (..., n, *metric.event_shape) (flattened)."""
    points, _ = metric.flatten_points(points, "points")
    check_points(points, metric.dim, "points")
    if points.ndim < 2 or points.shape[-2] < 2:
        raise ValueError(f"points must have shape (..., n, {metric.dim}) with n >= 2, got {tuple(points.shape)}")
    return points[..., 1:, :] - points[..., :-1, :], 0.5 * (points[..., 1:, :] + points[..., :-1, :])
