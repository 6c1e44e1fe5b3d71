"""Boundary-value geodesics by minimising the discrete curve energy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..metrics import Metric
from . import hermite
from .chebyshev import resample_polylines
from .discrete import discrete_energy
from .graph import segment_lengths
from .path import Path
from .solver import BVPSolver


@dataclass
class EnergyResult:
    """Flat-batch result of :func:`minimize_energy`: points (B, n, d), gradient norms (B,), flags (B,)."""

    points: torch.Tensor
    gradient_norm: torch.Tensor
    converged: torch.Tensor
    iterations: int


def minimize_energy(
    metric: Metric,
    init: torch.Tensor,
    gtol: float | None = None,
    max_iter: int = 2000,
    potential: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> EnergyResult:
    """Minimise the discrete energy over the interior points of curves (B, n, d).

    ``potential`` (curves (B, n, d) → (B,)), if given, is added to the energy:
    the minimiser is then a curve of least action rather than a geodesic.

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

    def objective(points: torch.Tensor) -> torch.Tensor:
        energy = discrete_energy(metric, points)
        return energy if potential is None else energy + potential(points)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        total = objective(curves()).sum()
        total.backward()
        return total

    def relative_gradient() -> torch.Tensor:
        """max |∂E/∂x_i| / (E / (n − 1)) per curve: invariant to the scale of the metric."""
        with torch.enable_grad():
            energy = objective(curves())
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
            previous, energy = energy, float(objective(curves()).sum())
        rel = relative_gradient()
        if not bool(torch.isfinite(rel).all()) or not energy < previous:
            break  # diverged, or a whole chunk of L-BFGS no longer lowers the energy: report what we have
    return EnergyResult(points=curves().detach(), gradient_norm=rel, converged=rel <= gtol, iterations=iterations)


@dataclass
class EnergySolver(BVPSolver):
    """Discrete curve-energy minimisation by L-BFGS at the requested number of points (registered as "energy").

    A discretisation-limited solver: its error is O(1/n_points²). The returned
    curve is the polyline through its points, and ``length`` is its metric
    length (Gauss–Legendre quadrature on every segment, not the midpoint rule,
    which can miss a steep metric between two points); ``residual`` estimates
    the discretisation error as the relative length change when every other
    point is dropped; ``converged`` needs the optimiser's gradient tolerance
    and ``residual <= rtol``.

    Args:
        rtol: largest accepted ``residual`` (default 1e-3).
        gtol: optimiser tolerance (see :func:`minimize_energy`).
        max_iter: L-BFGS iterations.
    """

    rtol: float = 1e-3
    gtol: float | None = None
    max_iter: int = 2000
    name: str = "energy"

    def __post_init__(self):
        for field, value in (("rtol", self.rtol), ("gtol", 1.0 if self.gtol is None else self.gtol)):
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"{field} must be a finite number > 0, got {value!r}")
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be a positive integer, got {self.max_iter!r}")

    def refine(self, metric: Metric, starts: torch.Tensor, groups: torch.Tensor, n_points: int) -> Path:
        targets = torch.linspace(0, 1, max(n_points, 5), dtype=starts.dtype, device=starts.device)
        init = resample_polylines(starts, targets)
        init[:, 0], init[:, -1] = starts[:, 0], starts[:, -1]
        result = minimize_energy(metric, init, gtol=self.gtol, max_iter=self.max_iter)
        points = result.points
        length = polyline_length(metric, points)
        energy = discrete_energy(metric, points)
        residual = _halving_change(metric, points, length)
        path_points = points if points.shape[1] == n_points else _polyline_samples(points, n_points)
        return Path(
            points=path_points,
            times=torch.linspace(0, 1, n_points, dtype=points.dtype, device=points.device),
            length=length,
            energy=energy,
            converged=result.converged & (residual <= self.rtol),
            initial_velocity=hermite.derivatives(points)[:, 0],
            residual=residual,
            speed_drift=_speed_spread(metric, points),
            method=self.name,
            local_lengths=length.unsqueeze(-1).clone(),
            n_local=torch.ones_like(length, dtype=torch.long),
            evaluations=torch.full_like(length, result.iterations * (points.shape[1] - 1), dtype=torch.long),
        )


def polyline_length(metric: Metric, points: torch.Tensor, pieces: int = 16) -> torch.Tensor:
    """Metric length (B,) of polylines (B, n, d): every segment cut into ``pieces``, 4-point Gauss–Legendre on each.

    A discrete geodesic of a steep metric can cross a narrow region of large G
    between two of its points, which a single quadrature rule per segment misses.
    """
    B, n, d = points.shape
    fractions = torch.linspace(0, 1, pieces + 1, dtype=points.dtype, device=points.device)[:, None]
    cuts = torch.lerp(points[:, :-1, None], points[:, 1:, None], fractions)  # (B, n − 1, pieces + 1, d)
    starts, ends = cuts[:, :, :-1].reshape(-1, d), cuts[:, :, 1:].reshape(-1, d)
    return segment_lengths(metric, starts, ends).reshape(B, -1).sum(-1)


def _speed_spread(metric: Metric, points: torch.Tensor) -> torch.Tensor:
    """max_i |s_i − mean s| / mean s over the segments' metric speeds s_i (0 at constant speed)."""
    steps = points[:, 1:] - points[:, :-1]
    speed = metric._inner(0.5 * (points[:, 1:] + points[:, :-1]), steps, steps).clamp_min(0).sqrt()
    mean = speed.mean(-1, keepdim=True).clamp_min(torch.finfo(points.dtype).tiny)
    return ((speed - mean).abs() / mean).amax(-1)


def _polyline_samples(points: torch.Tensor, n_points: int) -> torch.Tensor:
    """The polylines (B, n, d), taken as uniform in t, sampled at n_points uniform times."""
    t = torch.linspace(0, points.shape[1] - 1, n_points, dtype=points.dtype, device=points.device)
    left = t.floor().long().clamp(max=points.shape[1] - 2)
    frac = (t - left)[None, :, None]
    return points[:, left] + frac * (points[:, left + 1] - points[:, left])


def _halving_change(metric: Metric, points: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """|L − L_half| / L, L_half the length of the polyline through every other point (an error estimate)."""
    coarse = points[:, ::2] if (points.shape[1] - 1) % 2 == 0 else _polyline_samples(points, (points.shape[1] + 1) // 2)
    half = polyline_length(metric, coarse)
    change = (length - half).abs() / length.abs().clamp_min(torch.finfo(points.dtype).tiny)
    return torch.where(torch.isfinite(change), change, torch.inf)
