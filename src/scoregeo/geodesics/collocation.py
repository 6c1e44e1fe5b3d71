"""Boundary-value geodesics by Chebyshev spectral collocation with Newton's method.

The curve is sought in its *Euclidean* arc-length parameter τ ∈ [0, 1], where
|x′(τ)| is constant. There the geodesic equation becomes

    x″ = P(x′) a(x, x′),     P(u) = I − u uᵀ / |u|²,

with a(x, v) = −Γ(v, v) the metric's geodesic acceleration: the projection
removes the tangential part, which only reparametrises the curve, and keeps
x′·x″ = 0. In this parameter a curve through a region where the metric is
large is as smooth as its Euclidean shape, whereas in metric time it would
crawl there and race elsewhere (much harder for a polynomial to follow).

The interior values of x at N + 1 Chebyshev nodes are the unknowns; the
equations are the ODE at the interior nodes, the end points are fixed. Newton's
method uses the exact Jacobian (from one batched JVP of the right-hand side in
all 2d directions of x and x′) and a backtracking line search on the residual.
The degree N doubles until two successive solutions give lengths that agree to
``rtol``; the Newton solution of one degree, interpolated, starts the next. The
length is the Clenshaw–Curtis quadrature of the metric speed, spectrally
accurate, and stationary at a geodesic, so that its error is quadratic in the
error of the curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import jvp

from ..metrics import Metric
from .chebyshev import ChebyshevGrid, chebyshev_grid, interpolate, resample_polylines
from .path import Path
from .solver import BVPSolver

_FIRST_ORDER = 32  # polynomial degree of the first solve
_NEWTON_MAX_ITER = 20
_MAX_FAILED_LEVELS = 3  # Newton failures at successive degrees before a curve is given up
_LINE_SEARCH_STEPS = 12
_TRUST_REGION = 0.1  # largest first trial move of a node in a Newton step, relative to the curve's length
_SOLVE_CHUNK = 2**25  # entries of the batched Newton matrices assembled at once (256 MB in float64)


@dataclass
class CollocationResult:
    """Flat-batch result of :func:`collocation_geodesic` (B pairs, d dimensions).

    Attributes:
        grid: the Chebyshev grid of the final degree N.
        values: (B, N+1, d) the curve at ``grid.nodes`` (Euclidean arc-length parameter).
        length: (B,) Riemannian length (Clenshaw–Curtis quadrature).
        converged: (B,) Newton converged at the last two degrees and their lengths agree to ``rtol``.
        residual: (B,) relative length change between the last two degrees (the error estimate).
    """

    grid: ChebyshevGrid
    values: torch.Tensor
    length: torch.Tensor
    converged: torch.Tensor
    residual: torch.Tensor


def collocation_geodesic(
    metric: Metric,
    starts: torch.Tensor,
    rtol: float | None = None,
    max_order: int = 1024,
    groups: torch.Tensor | None = None,
) -> CollocationResult:
    """Refine initial curves (B, m, d), polylines from x0 to x1, into geodesics.

    Args:
        metric: the metric; its ``_acceleration`` must support forward-mode AD.
        starts: (B, m, d) initial curves, m >= 2 (first and last points are the end points).
        rtol: agreement of the lengths at two successive degrees that counts as
            converged (default 1e-7 in float64, 1e-4 in float32). The length
            at the finer degree is then far more accurate than this (on the
            λ = 10 mixture score metric, rtol = 1e-6 gave errors below 2e-8
            against solves at rtol = 1e-11).
        max_order: largest polynomial degree tried.
        groups: (B,) integer labels of curves that join the same end points
            (several starts per pair). Once a curve of a group has converged,
            the group's unconverged curves stop there (unconverged) when they
            are longer by more than ten times their own last length change,
            or more than twice as long: refining them will not make them the
            shortest.
    """
    dtype, device = starts.dtype, starts.device
    rtol = (1e-7 if dtype == torch.float64 else 1e-4) if rtol is None else rtol
    B = starts.shape[0]
    grid = chebyshev_grid(_FIRST_ORDER, dtype, device)
    values = _pin_ends(resample_polylines(starts, grid.nodes), starts[:, 0], starts[:, -1])
    length = torch.full((B,), float("nan"), dtype=dtype, device=device)
    residual = torch.full((B,), float("inf"), dtype=dtype, device=device)
    newton_ok = torch.zeros(B, dtype=torch.bool, device=device)
    failures = torch.zeros(B, dtype=torch.long, device=device)  # successive degrees where Newton failed
    converged = torch.zeros(B, dtype=torch.bool, device=device)
    finished: list[tuple[torch.Tensor, ChebyshevGrid, torch.Tensor]] = []  # (pairs, grid, values)
    active = torch.arange(B, device=device)
    while True:
        solved, ok = _newton(metric, grid, values)
        new_length = _length(metric, grid, solved)
        change = (new_length - length[active]).abs() / new_length.abs().clamp_min(torch.finfo(dtype).tiny)
        done = ok & newton_ok[active] & (change <= rtol)
        failures[active] = torch.where(ok, 0, failures[active] + 1)
        residual[active] = torch.where(ok, change, torch.full_like(change, float("inf")))
        length[active], newton_ok[active] = new_length, ok
        converged[active[done]] = True
        stop = done | (failures[active] >= _MAX_FAILED_LEVELS)
        if groups is not None:
            stop |= _outrun(length, residual, converged, groups, active) & ~done
        if 2 * grid.order > max_order or bool(stop.all()):
            finished.append((active, grid, solved))
            break
        finished.append((active[stop], grid, solved[stop]))
        finer = chebyshev_grid(2 * grid.order, dtype, device)
        values = _pin_ends(interpolate(grid, solved[~stop], finer.nodes), solved[~stop, 0], solved[~stop, -1])
        active, grid = active[~stop], finer
    top = grid
    values = torch.empty(B, top.order + 1, starts.shape[-1], dtype=dtype, device=device)
    for pairs, pair_grid, pair_values in finished:
        values[pairs] = pair_values if pair_grid is top else interpolate(pair_grid, pair_values, top.nodes)
    return CollocationResult(grid=top, values=values, length=length, converged=converged, residual=residual)


def _outrun(length, change, converged, groups, active) -> torch.Tensor:
    """(len(active),) active curves whose group has a converged curve shorter than they can become.

    ``change``: each curve's relative length change at its last doubling (inf
    after a failed Newton solve, which never counts as outrun; NaN lengths do).
    """
    shortest = torch.full((int(groups.max()) + 1,), float("inf"), dtype=length.dtype, device=length.device)
    shortest = shortest.scatter_reduce(0, groups[converged], length[converged], reduce="amin")
    bound = shortest[groups[active]]
    mine = length[active]
    # a curve's length moves by about its last change per doubling and converges fast: ten times that is a
    # wide margin; and no refinement halves a length (curves that cross a singularity grow without bound)
    floor = mine * (1 - 10 * change[active]).clamp(min=0.5)
    return torch.isfinite(bound) & ~(floor <= bound * (1 + 1e-6))


def _pin_ends(values: torch.Tensor, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    values[:, 0], values[:, -1] = first, last
    return values


def projected_field(metric: Metric):
    """f(x, u) = P(u) a(x, u): the geodesic equation in Euclidean arc length (see the module docstring)."""

    def field(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        a = metric._acceleration(x, u)
        return a - u * (u * a).sum(-1, keepdim=True) / (u * u).sum(-1, keepdim=True)

    return field


def _residual(field, grid: ChebyshevGrid, values: torch.Tensor) -> torch.Tensor:
    """x″ − f(x, x′) at the interior nodes, (B, N−1, d)."""
    first = grid.diff @ values
    second = grid.diff @ first
    return second[:, 1:-1] - field(values[:, 1:-1], first[:, 1:-1])


def _newton(metric: Metric, grid: ChebyshevGrid, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Damped Newton on the collocation equations; returns the curves and whether each converged.

    Converged: the last full Newton step moved no node by more than 1e-10
    (float64; 1e-5 in float32) times the scale of the coordinates, or by less
    than 100 times that while the residual no longer halved (its rounding floor).
    """
    field = projected_field(metric)
    B, n1, d = values.shape
    step_tol = (1e-10 if values.dtype == torch.float64 else 1e-5) * (1 + values.abs().amax((1, 2)))
    values = values.clone()
    residual = _residual(field, grid, values)
    norm = residual.flatten(1).norm(dim=-1)
    converged = torch.zeros(B, dtype=torch.bool, device=values.device)
    failed = ~torch.isfinite(norm)
    for _ in range(_NEWTON_MAX_ITER):
        live = (~converged & ~failed).nonzero().squeeze(-1)
        if live.numel() == 0:
            break
        step = _newton_step(field, grid, values[live], residual[live])
        previous = norm[live]
        trial, trial_residual, trial_norm, accepted = _line_search(field, grid, values[live], step, previous)
        values[live], residual[live], norm[live] = trial, trial_residual, trial_norm
        size = step.abs().amax((1, 2))
        # at high degree rounding sets a floor under the residual: a step that is small and no longer
        # lowers the residual much has converged as far as the arithmetic allows
        at_floor = (size <= 100 * step_tol[live]) & ~(trial_norm < 0.5 * previous)
        small = (size <= step_tol[live]) | at_floor
        converged[live] = small
        failed[live] = ~accepted & ~small
    return values, converged


def _newton_step(field, grid: ChebyshevGrid, values: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Solve J Δ = −R for the interior nodes, (B, N−1, d)."""
    B, n1, d = values.shape
    n = n1 - 2
    first = grid.diff @ values
    fx, fu = _field_jacobians(field, values[:, 1:-1], first[:, 1:-1])
    D = grid.diff[1:-1, 1:-1]
    D2 = (grid.diff @ grid.diff)[1:-1, 1:-1]
    eye = torch.eye(d, dtype=values.dtype, device=values.device)
    steps = []
    chunk = max(1, _SOLVE_CHUNK // (n * d) ** 2)
    for lo in range(0, B, chunk):
        sl = slice(lo, lo + chunk)
        # J[(j,k), (m,l)] = D2[j,m] δ_kl − fx[j,k,l] δ_jm − fu[j,k,l] D[j,m]
        J = torch.einsum("jm,kl->jkml", D2, eye).expand(fx[sl].shape[0], n, d, n, d).clone()
        J -= torch.einsum("bjkl,jm->bjkml", fu[sl], D)
        diag = torch.arange(n, device=values.device)
        J[:, diag, :, diag, :] -= fx[sl].transpose(0, 1)
        J, rhs = J.reshape(-1, n * d, n * d), -residual[sl].reshape(-1, n * d, 1)
        finite = torch.isfinite(fx[sl]).flatten(1).all(-1) & torch.isfinite(fu[sl]).flatten(1).all(-1)
        finite &= torch.isfinite(rhs).flatten(1).all(-1)
        solution = torch.full_like(rhs, float("nan"))  # non-finite systems give a NaN step: the pair fails
        solution[finite] = _solve_each(J[finite], rhs[finite])
        steps.append(solution.reshape(-1, n, d))
    step = torch.zeros_like(values)
    step[:, 1:-1] = torch.cat(steps)
    return step


def _field_jacobians(field, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """∂f/∂x and ∂f/∂u at points x, u (..., d), each (..., d, d) with [k, i] = ∂f_k/∂·_i.

    One JVP for all 2d directions: the points are repeated 2d times along the
    batch (the field acts on each point independently).
    """
    d = x.shape[-1]
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    basis = torch.cat([torch.cat([eye, torch.zeros_like(eye)], 1), torch.cat([torch.zeros_like(eye), eye], 1)])
    tangents = basis.reshape(2 * d, *([1] * (x.ndim - 1)), 2 * d).expand(2 * d, *x.shape[:-1], 2 * d)
    repeat = (2 * d,) + (1,) * x.ndim
    primal_x, primal_u = x.repeat(repeat).contiguous(), u.repeat(repeat).contiguous()
    _, columns = jvp(field, (primal_x, primal_u), (tangents[..., :d].contiguous(), tangents[..., d:].contiguous()))
    columns = columns.movedim(0, -1)  # (..., d, 2d)
    return columns[..., :d], columns[..., d:]


def _solve_each(matrices: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve a batch of linear systems; on the CPU one at a time when they are large.

    torch 2.13's batched CPU LU (MKL) returns corrupt pivots for matrices of
    order above 128 when it runs on more than one thread; single systems are fine.
    """
    if matrices.device.type != "cpu" or matrices.shape[-1] <= 128:
        return torch.linalg.solve(matrices, rhs)
    return torch.stack([torch.linalg.solve(m, r) for m, r in zip(matrices, rhs)]) if len(rhs) else rhs.clone()


def _line_search(field, grid, values, step, norm):
    """Backtracking on the residual norm (Armijo with slope −‖R‖); per pair.

    The first trial moves no node by more than a tenth of the curve's Euclidean
    length (a trust region): a full Newton step from a rough start can jump to
    another local geodesic, and the start was chosen for its basin.
    """
    B = values.shape[0]
    extent = (values[:, 1:] - values[:, :-1]).norm(dim=-1).sum(-1)
    reach = step.norm(dim=-1).amax(-1).clamp_min(torch.finfo(values.dtype).tiny)
    scale = (_TRUST_REGION * extent / reach).clamp(max=1.0)[:, None, None]
    best = values.clone()
    best_residual = _residual(field, grid, values)
    best_norm = norm.clone()
    accepted = torch.zeros(B, dtype=torch.bool, device=values.device)
    for _ in range(_LINE_SEARCH_STEPS):
        todo = (~accepted).nonzero().squeeze(-1)
        if todo.numel() == 0:
            break
        trial = values[todo] + scale[todo] * step[todo]
        trial_residual = _residual(field, grid, trial)
        trial_norm = trial_residual.flatten(1).norm(dim=-1)
        good = trial_norm <= (1 - 1e-4 * scale[todo, 0, 0]) * norm[todo]
        ok = todo[good]
        best[ok], best_residual[ok], best_norm[ok] = trial[good], trial_residual[good], trial_norm[good]
        accepted[ok] = True
        scale[todo[~good]] *= 0.5
    return best, best_residual, best_norm, accepted


def _length(metric: Metric, grid: ChebyshevGrid, values: torch.Tensor) -> torch.Tensor:
    """Riemannian length (B,) of the interpolating polynomials, by Clenshaw–Curtis quadrature."""
    velocity = grid.diff @ values
    speed = metric._inner(values, velocity, velocity).clamp_min(0).sqrt()
    return speed @ grid.weights


def initial_velocity(metric: Metric, result: CollocationResult) -> torch.Tensor:
    """ẋ(0) (B, d) of the solved curves in metric time t ∈ [0, 1]: x′(0) rescaled to metric norm = length."""
    tangent = result.grid.diff[0] @ result.values  # x′ at τ = 0
    speed = metric._inner(result.values[:, 0], tangent, tangent).clamp_min(0).sqrt()
    return tangent * (result.length / speed).unsqueeze(-1)


def metric_time_samples(
    metric: Metric, result: CollocationResult, n_points: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample the solved curves uniformly in metric arc length (the geodesic's own time t ∈ [0, 1]).

    Returns:
        points: (B, n_points, d) x(t_k), t_k = k / (n_points − 1).
        initial_velocity: (B, d) ẋ(0), whose metric norm is the length.
        timing_error: (B,) max_k |S(τ_k) − t_k L| / L, how far the samples are
            from equal arc length (S: metric arc length up to the parameter τ).
    """
    grid, values = result.grid, result.values
    velocity = grid.diff @ values
    speed = metric._inner(values, velocity, velocity).clamp_min(0).sqrt()  # (B, N+1)
    # arc length at the nodes: the polynomial S with S(0) = 0 and S′ = speed at nodes 1 … N
    arc = torch.zeros_like(speed)
    arc[:, 1:] = torch.linalg.solve(grid.diff[1:, 1:], speed[:, 1:].T).T  # one matrix, B right-hand sides
    total = arc[:, -1:]
    goal = torch.linspace(0, 1, n_points, dtype=values.dtype, device=values.device) * total  # (B, n)
    # start from piecewise-linear inversion, then Newton on the interpolant (S′ = speed > 0)
    right = torch.searchsorted(arc.contiguous(), goal.contiguous()).clamp(1, grid.order)
    a0, a1 = arc.gather(1, right - 1), arc.gather(1, right)
    t0, t1 = grid.nodes[right - 1], grid.nodes[right]
    tau = t0 + (goal - a0) / (a1 - a0).clamp_min(torch.finfo(values.dtype).tiny) * (t1 - t0)
    both = torch.stack([arc, speed], -1)
    for _ in range(8):
        s_and_ds = interpolate(grid, both, tau.clamp(0, 1))
        tau = (tau - (s_and_ds[..., 0] - goal) / s_and_ds[..., 1].clamp_min(torch.finfo(values.dtype).tiny)).clamp(0, 1)
    tau[:, 0], tau[:, -1] = 0.0, 1.0
    timing_error = ((interpolate(grid, arc.unsqueeze(-1), tau)[..., 0] - goal).abs().amax(-1) / total[:, 0])
    points = interpolate(grid, values, tau)
    points[:, 0], points[:, -1] = values[:, 0], values[:, -1]
    return points, initial_velocity(metric, result), timing_error


@dataclass
class CollocationSolver(BVPSolver):
    """Chebyshev collocation with Newton's method (registered as "collocation"); dense, for small d.

    Args:
        rtol: length agreement of two successive degrees (see :func:`collocation_geodesic`).
        max_order: largest polynomial degree tried.

    ``Path.residual`` is the relative change of the length between the last two
    degrees; ``speed_drift`` the largest error of the samples' arc-length positions.
    """

    rtol: float | None = None
    max_order: int = 1024
    name: str = "collocation"

    def __post_init__(self):
        if self.rtol is not None and not (isinstance(self.rtol, (int, float)) and 0 < self.rtol < 1):
            raise ValueError(f"rtol must be in (0, 1) or None, got {self.rtol!r}")
        if not (isinstance(self.max_order, int) and self.max_order >= _FIRST_ORDER):
            raise ValueError(f"max_order must be an integer >= {_FIRST_ORDER}, got {self.max_order!r}")

    def refine(self, metric: Metric, starts: torch.Tensor, groups: torch.Tensor, n_points: int) -> Path:
        result = collocation_geodesic(metric, starts, rtol=self.rtol, max_order=self.max_order, groups=groups)
        points, velocity, timing_error = metric_time_samples(metric, result, n_points)
        length = result.length
        return Path(
            points=points,
            times=torch.linspace(0, 1, n_points, dtype=points.dtype, device=points.device),
            length=length,
            energy=length**2,
            converged=result.converged,
            initial_velocity=velocity,
            residual=result.residual,
            speed_drift=timing_error,
            method=self.name,
            local_lengths=length.unsqueeze(-1).clone(),
            n_local=torch.ones_like(length, dtype=torch.long),
        )
