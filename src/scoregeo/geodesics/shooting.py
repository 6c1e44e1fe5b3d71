"""Boundary-value geodesics by Newton's method on the exponential map."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..metrics import Metric
from . import hermite
from .ivp import default_tolerances, integrate, integrate_with_jacobian, path_from_trajectory
from .path import Path
from .solver import BVPSolver


_MAX_STALLS = 4  # tightly measured residuals that failed to decrease in a row before a pair is given up


@dataclass
class ShootingResult:
    """Flat-batch result of :func:`newton_shooting`: velocities (B, d), residuals (B,), flags (B,)."""

    velocity: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    iterations: int


def endpoint_tolerance(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Euclidean end-point tolerance (B,): 1e-7 (float64) or 1e-4 (float32) relative to the coordinates' size.

    Above the error of a tightly integrated shot, and small enough that the
    distance (the norm of the initial velocity) is accurate to about 1e-7.
    """
    rel = 1e-7 if x0.dtype == torch.float64 else 1e-4
    scale = 1.0 + torch.maximum(x0.abs().amax(-1), x1.abs().amax(-1))
    return rel * scale


def newton_shooting(
    metric: Metric,
    x0: torch.Tensor,
    x1: torch.Tensor,
    v_init: torch.Tensor,
    max_iter: int = 25,
    method: str = "dopri5",
) -> ShootingResult:
    """Find v with exp_{x0}(v) = x1 for a flat batch (B, d) by damped Newton iterations.

    The Jacobian ∂ exp_{x0}(v)/∂v comes from the Jacobi equation integrated
    alongside the geodesic (not part of the step-size control) and is reused by the next
    iterations for as long as each one shrinks the residual tenfold (a chord
    method); otherwise it is recomputed. It is an inexact Newton method: while the residual is
    large the integration tolerance is loose (a thousandth of the worst
    residual), and convergence is only declared from a shot integrated with the
    tight default tolerance. A pair whose residual grew goes back half-way
    towards its previous velocity instead of taking a Newton step (backtracking);
    a batch whose integration fails does the same for all its pairs. Pairs stop
    once their residual is below :func:`endpoint_tolerance`, or, unconverged,
    after four tightly measured backtracks in a row.
    """
    tol = endpoint_tolerance(x0, x1)
    tight_rtol, tight_atol = default_tolerances(x0.dtype)
    times = torch.tensor([0.0, 1.0], dtype=x0.dtype, device=x0.device)
    v, v_prev = v_init.clone(), v_init.clone()
    residual = torch.full_like(tol, float("inf"))
    active = torch.ones_like(tol, dtype=torch.bool)
    converged = torch.zeros_like(tol, dtype=torch.bool)
    stalls = torch.zeros_like(tol, dtype=torch.long)
    jacobian = torch.zeros(*x0.shape, x0.shape[-1], dtype=x0.dtype, device=x0.device)
    refresh, force_tight = True, False
    iterations = 0
    for iterations in range(1, max_iter + 1):
        idx = active.nonzero().squeeze(-1)
        worst = float(residual[idx].max())
        rtol = tight_rtol if force_tight else min(max(1e-3 * worst, tight_rtol), 1e-5)
        try:
            shot = _shoot_end(metric, x0[idx], v[idx], times, rtol, rtol * tight_atol / tight_rtol, method, refresh)
        except (AssertionError, RuntimeError, ValueError):  # a trial shot blew up or left the metric's domain
            v[idx] = 0.5 * (v[idx] + v_prev[idx])
            refresh = True
            continue
        if refresh:
            jacobian[idx] = shot[1]
        error = shot[0] - x1[idx]
        new_residual = error.norm(dim=-1)
        tight = rtol == tight_rtol
        done = (new_residual <= tol[idx]) & tight
        # a residual that grew by less than 2x under a loose tolerance may be integration noise:
        # measure it again tightly before backtracking
        worse = ~(new_residual < residual[idx])  # also catches NaN
        noise = worse & (new_residual <= 2 * residual[idx]) & (not tight)
        back = worse & ~noise & ~done
        slow = ~worse & (new_residual > 0.1 * residual[idx])
        residual[idx] = torch.where(back, residual[idx], new_residual)
        stalls[idx] = torch.where(back & tight, stalls[idx] + 1, 0)
        converged[idx[done]] = True
        active[idx[done]] = False
        active[idx[stalls[idx] >= _MAX_STALLS]] = False  # cannot improve: give up on these pairs
        if not bool(active.any()):
            break
        force_tight = bool(noise.any())
        # chord iterations reuse the Jacobian while they contract fast; refresh it when they do not
        refresh = bool((back | slow)[~done].any()) and not refresh
        v[idx[back]] = 0.5 * (v[idx[back]] + v_prev[idx[back]])
        go = ~back & ~done & ~noise
        forward = idx[go]
        v_prev[forward] = v[forward]
        v[forward] = v[forward] + _newton_step(jacobian[forward], error[go])
    velocity = torch.where(converged.unsqueeze(-1), v, v_prev)
    return ShootingResult(velocity=velocity, residual=residual, converged=converged, iterations=iterations)


def _shoot_end(metric, x0, v, times, rtol, atol, method, with_jacobian):
    """End points (B, d) of shots, and ∂x(1)/∂v (B, d, d) when ``with_jacobian``."""
    if with_jacobian:
        xs, _, jac = integrate_with_jacobian(metric, x0, v, times, rtol=rtol, atol=atol, method=method)
        return xs[:, -1], jac
    xs, _ = integrate(metric, x0, v, times, rtol=rtol, atol=atol, method=method)
    return xs[:, -1], None


def _newton_step(jac: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    """−J⁻¹ e, by least squares so that a singular J (a conjugate point) gives a finite step."""
    return -torch.linalg.lstsq(jac, error.unsqueeze(-1)).solution.squeeze(-1)


@dataclass
class ShootingSolver(BVPSolver):
    """Newton shooting from the initial velocity of each start curve (registered as "shooting").

    ``Path.residual`` is the Euclidean end-point miss of the final shot; the
    path is an integrated geodesic, so its length is exact up to the integrator's
    tolerance; ``converged`` means the miss is below :func:`endpoint_tolerance`.

    Args:
        max_iter: Newton iterations.
    """

    max_iter: int = 40
    name: str = "shooting"

    def __post_init__(self):
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be a positive integer, got {self.max_iter!r}")

    def refine(self, metric: Metric, starts: torch.Tensor, groups: torch.Tensor, n_points: int) -> Path:
        a, b = starts[:, 0], starts[:, -1]
        result = newton_shooting(metric, a, b, hermite.derivatives(starts)[:, 0], max_iter=self.max_iter)
        times = torch.linspace(0, 1, n_points, dtype=a.dtype, device=a.device)
        xs, vs = integrate(metric, a, result.velocity, times)
        path = path_from_trajectory(metric, xs, vs, times, method=self.name)
        path.converged = result.converged & path.converged
        path.residual = result.residual
        path.local_lengths, path.n_local = path.length.unsqueeze(-1).clone(), torch.ones_like(result.converged, dtype=torch.long)
        return path

