"""Boundary-value geodesics by minimising the discrete curve energy."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..metrics import Metric


@dataclass
class EnergyResult:
    """Flat-batch result of :func:`minimize_energy`: points (B, n, d), gradient norms (B,), flags (B,)."""

    points: torch.Tensor
    gradient_norm: torch.Tensor
    converged: torch.Tensor
    iterations: int


def discrete_energy(metric: Metric, points: torch.Tensor) -> torch.Tensor:
    """(n − 1) Σ ⟨Δ_i, Δ_i⟩ at segment midpoints for points (B, n, d) → (B,)."""
    steps = points[:, 1:] - points[:, :-1]
    mids = 0.5 * (points[:, 1:] + points[:, :-1])
    return (points.shape[1] - 1) * metric._inner(mids, steps, steps).sum(-1)


def minimize_energy(
    metric: Metric,
    init: torch.Tensor,
    gtol: float | None = None,
    max_iter: int = 2000,
) -> EnergyResult:
    """Minimise the discrete energy over the interior points of curves (B, n, d).

    End points stay fixed. All curves are optimised together by L-BFGS with a
    strong-Wolfe line search on the summed energy (the curves are independent,
    so the sum's gradient is each curve's own). A curve has converged when the
    largest component of its energy gradient, divided by its energy over the
    number of segments (the natural gradient scale), is below ``gtol``
    (default 1e-5 in float64, 1e-3 in float32: about what L-BFGS reliably
    reaches on the ill-conditioned discrete energy, and far below the O(1/n²)
    error of the discretisation itself).
    """
    if gtol is None:
        gtol = 1e-5 if init.dtype == torch.float64 else 1e-3
    ends = init[:, :1], init[:, -1:]
    interior = init[:, 1:-1].detach().clone().requires_grad_(True)
    chunk = 50
    optimizer = torch.optim.LBFGS(
        [interior], lr=1.0, max_iter=chunk, history_size=50, line_search_fn="strong_wolfe",
        tolerance_grad=0.0, tolerance_change=0.0,
    )

    def curves() -> torch.Tensor:
        return torch.cat([ends[0], interior, ends[1]], dim=1)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        total = discrete_energy(metric, curves()).sum()
        total.backward()
        return total

    def relative_gradient() -> torch.Tensor:
        """max |∂E/∂x_i| / (E / (n − 1)) per curve: invariant to the scale of the metric."""
        with torch.enable_grad():
            energy = discrete_energy(metric, curves())
            (grad,) = torch.autograd.grad(energy.sum(), interior)
        scale = energy.detach().abs() / (init.shape[1] - 1) + torch.finfo(init.dtype).tiny
        return grad.abs().amax(dim=(1, 2)) / scale

    iterations = 0
    rel = relative_gradient() if init.shape[1] > 2 else torch.zeros(init.shape[0], dtype=init.dtype)
    energy = float("inf")
    while iterations < max_iter and not bool((rel <= gtol).all()):
        with torch.enable_grad():
            optimizer.step(closure)
        iterations += chunk
        with torch.no_grad():
            previous, energy = energy, float(discrete_energy(metric, curves()).sum())
        rel = relative_gradient()
        if not bool(torch.isfinite(rel).all()) or not energy < previous:
            break  # diverged, or a whole chunk of L-BFGS no longer lowers the energy: report what we have
    return EnergyResult(points=curves().detach(), gradient_norm=rel, converged=rel <= gtol, iterations=iterations)
