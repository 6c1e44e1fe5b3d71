"""The high-dimensional boundary-value solver: discrete geodesics refined until their length converges.

Each start curve is solved on a hierarchy of uniform grids in t with
N = ``first_segments``, 2N, 4N, … segments. On each grid the discrete energy
(:mod:`scoregeo.geodesics.discrete`) is minimised by Newton–Krylov steps
(exact Hessian-vector products, conjugate gradients preconditioned by the
Gauss–Newton Hessian, a line search per curve), optionally after L-BFGS;
memory is O(N · d) per curve, never d×d. The curve of a grid is the
fourth-order Hermite interpolant of its points
(:mod:`scoregeo.geodesics.hermite`); its metric length, by Gauss–Legendre
quadrature, is the length reported, and it starts the next grid.

Convergence is judged on the continuous problem. Every refined curve is a real
curve, so its length is at least that of the local geodesic it approximates,
and the length error falls as N⁻⁴ for smooth metrics: successive changes
shrink by a ratio q → 16 and the remaining error of the newest length is
about change / (q − 1) (Richardson's estimate). ``Path.residual`` is that
estimate, with q the smaller of the last two observed ratios (capped at 16, so
never better than the method's order); while the changes do not yet shrink by
at least 2 per grid it is the last change itself. A curve has converged when
the estimate is at most ``rtol`` and the energy of each of the last two grids
was minimised to a Newton decrement well below ``rtol``.

A grid can be too coarse to resolve a curve at all: on stiff metrics the
midpoint rule lets a coarse discrete curve step over the regions where the
metric is large, so its discrete length √E falls far below the length of the
curve through its points (9.1 against 39.3 on a d = 784, λ = 100 oracle pair
at N = 16, whose geodesic measures 23.8; the two agree to 2e-5 once N = 256
resolves it). The relative gap between them is bimodal in practice (above 0.1
or below 1e-3). Above 1e-2 the grid does not resolve the curve, and the next
grid is first minimised only to a decrement of 3e-2 (its curve mainly starts
the grid after it), then to the full tolerance if it does resolve the curve.
(On the 8 oracle pairs at d = 784, λ = 100, the default "auto" solve spent
1.62M score evaluations with every grid minimised fully, and 1.32M, 1.07M and
1.30M with this first decrement at 1e-2, 3e-2 and 1e-1; the pairs at λ = 10,
which every grid resolves, are unaffected.) The first grid is always minimised
fully, so that starts which fall into the same discrete geodesic are merged
there. An unresolved curve's length says little about the geodesic it will
become, so it is never dropped for being long unless it is twice as long.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..metrics import Metric
from . import hermite
from .chebyshev import resample_polylines
from .discrete import newton_krylov, quasi_newton
from .path import Path
from .selection import distinct_local, pick_shortest
from .solver import BVPSolver

_HISTORY_BUDGET = 2e7  # entries of one curve's L-BFGS memory (pairs of curve-sized tensors)
_UNRESOLVED_GAP = 1e-2  # relative gap between Hermite and discrete length above which a grid does not resolve a curve
_UNRESOLVED_TOL = 3e-2  # Newton decrement to which a grid after an unresolved one is first minimised


@dataclass
class MultilevelNewton(BVPSolver):
    """Discrete geodesics on doubling grids, each minimised by Newton–Krylov (registered as "newton").

    Args:
        rtol: estimated relative error of the length that counts as converged
            (default 1e-6 in float64, 1e-4 in float32); see the module notes.
        first_segments: segments of the first grid (>= 4).
        max_segments: largest grid tried.
        max_newton: Newton iterations per grid.
        max_cg: conjugate-gradient iterations per Newton step.
        max_lbfgs: L-BFGS iterations per grid before Newton (default 0: none).
            With the Gauss–Newton preconditioner, Newton–Krylov from the
            start was 5.6× faster than L-BFGS followed by Newton on a digits
            pair at σ = 0.1, λ = 1000 (λ|s|² up to 1e6) and 6.4× on 8 oracle
            pairs at d = 64, λ = 100; L-BFGS remains for experiments.
        lbfgs_tol: relative Newton decrement at which L-BFGS hands over to
            Newton–Krylov (default 1e-5 in float64, 1e-4 in float32).
    """

    rtol: float | None = None
    first_segments: int = 16
    max_segments: int = 1024
    max_newton: int = 300
    max_cg: int = 100
    max_lbfgs: int = 0
    lbfgs_tol: float | None = None
    name: str = "newton"

    def __post_init__(self):
        if self.rtol is not None and not (0 < self.rtol < 1):
            raise ValueError(f"rtol must be in (0, 1), got {self.rtol!r}")
        if not (isinstance(self.first_segments, int) and self.first_segments >= 4):
            raise ValueError(f"first_segments must be an integer >= 4, got {self.first_segments!r}")
        if not (isinstance(self.max_segments, int) and self.max_segments >= 2 * self.first_segments):
            raise ValueError(f"max_segments must be an integer >= 2 * first_segments, got {self.max_segments!r}")
        for name in ("max_newton", "max_cg"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.max_lbfgs, int) and self.max_lbfgs >= 0):
            raise ValueError(f"max_lbfgs must be a non-negative integer, got {self.max_lbfgs!r}")
        if self.lbfgs_tol is not None and not (0 < self.lbfgs_tol < 1):
            raise ValueError(f"lbfgs_tol must be in (0, 1), got {self.lbfgs_tol!r}")

    def refine(self, metric: Metric, starts: torch.Tensor, groups: torch.Tensor, n_points: int) -> Path:
        return self._solve(metric, starts, groups).path(n_points, self.name)

    def shortest(self, metric: Metric, starts: torch.Tensor, n_points: int) -> Path:
        """Per pair, the shortest converged local geodesic from start curves (C, B, m, d).

        Only the chosen curves are resampled to ``n_points`` (the others stay on
        their own grids): C·B curves of n_points × d would take 1.2 GB for 8
        pairs of 6 starts at d = 3072 and 1025 points.
        """
        C, B = starts.shape[:2]
        groups = torch.arange(B, device=starts.device).repeat(C)
        run = self._solve(metric, starts.flatten(0, 1), groups)
        lengths, converged = run.length.reshape(C, B), run.converged.reshape(C, B)
        pick = pick_shortest(lengths, converged, run.residual.reshape(C, B))
        path = run.path(n_points, self.name, rows=pick)
        path.local_lengths, path.n_local = distinct_local(run.curves.velocity.reshape(C, B, -1), lengths, converged)
        path.evaluations = run.evaluations.reshape(C, B).sum(0)
        return path

    def _solve(self, metric: Metric, starts: torch.Tensor, groups: torch.Tensor) -> "_Run":
        dtype, device = starts.dtype, starts.device
        double = dtype == torch.float64
        rtol = self.rtol if self.rtol is not None else (1e-6 if double else 1e-4)
        lbfgs_tol = self.lbfgs_tol if self.lbfgs_tol is not None else (1e-5 if double else 1e-4)
        # energy to well below rtol (the length moves by about a quarter of the decrement), but not below
        # what the dtype resolves in a sum over hundreds of segments (float32: 2.4e-5)
        newton_tol = max(0.01 * rtol, 200 * torch.finfo(dtype).eps)
        C = starts.shape[0]
        segments = self.first_segments
        targets = torch.linspace(0, 1, segments + 1, dtype=dtype, device=device)
        curves = resample_polylines(starts, targets)
        curves[:, 0], curves[:, -1] = starts[:, 0], starts[:, -1]

        length = torch.full((C,), float("nan"), dtype=dtype, device=device)
        change = torch.full((C,), float("inf"), dtype=dtype, device=device)
        ratio = torch.full((C,), float("nan"), dtype=dtype, device=device)  # previous change / change
        error = torch.full((C,), float("inf"), dtype=dtype, device=device)
        level_ok = torch.zeros(C, dtype=torch.bool, device=device)
        converged = torch.zeros(C, dtype=torch.bool, device=device)
        evaluations = torch.zeros(C, dtype=torch.long, device=device)
        out = _StoppedCurves(C, starts)
        previous_velocity = starts.new_full(starts.shape[::2], float("nan"))  # ẋ(0) on each curve's previous grid
        active = torch.arange(C, device=device)
        resolved = torch.ones(C, dtype=torch.bool, device=device)  # the curve's last grid resolved it
        while True:
            if self.max_lbfgs:
                # per curve, not per batch: a curve's iterations must not depend on what else is in the batch
                history = int(max(3, min(20, _HISTORY_BUDGET // (2 * curves[0].numel()))))
                coarse = quasi_newton(metric, curves, tol=lbfgs_tol, max_iter=self.max_lbfgs, history=history)
                curves = coarse.points
                evaluations[active] += coarse.evaluations
            grid = self._solve_grid(metric, curves, resolved[active], newton_tol)
            curves, new_length, energy, spread = grid.points, grid.length, grid.energy, grid.spread
            evaluations[active] += grid.evaluations
            resolved[active] = grid.resolved
            ok = grid.minimised & torch.isfinite(new_length)
            new_change = (new_length - length[active]).abs() / new_length.abs().clamp_min(torch.finfo(dtype).tiny)
            new_change = torch.where(torch.isfinite(new_change), new_change, torch.inf)
            previous = change[active]
            shrink = previous / new_change.clamp_min(torch.finfo(dtype).tiny)
            new_ratio = torch.where(torch.isfinite(previous), shrink, torch.nan)
            new_error = _error_estimate(new_change, torch.minimum(new_ratio, ratio[active]))
            done = ok & level_ok[active] & (new_error <= rtol)
            length[active], change[active], level_ok[active] = new_length, new_change, ok
            ratio[active], error[active] = new_ratio, new_error
            converged[active[done]] = True
            reliable = torch.where(resolved, change, torch.inf)  # an unresolved length may still fall a lot
            stop = done | ~torch.isfinite(new_length) | _outrun(length, reliable, groups, active, curves)
            last = 2 * segments > self.max_segments
            if last:
                stop = torch.ones_like(stop)
            velocity = hermite.derivatives(curves)[:, 0]
            if bool(stop.any()):
                extrapolated = _richardson(velocity[stop], previous_velocity[active[stop]])
                out.add(active[stop], curves[stop], extrapolated, energy[stop], spread[stop])
            if last or bool(stop.all()):
                break
            keep = ~stop
            previous_velocity[active[keep]] = velocity[keep]
            active, segments = active[keep], 2 * segments
            curves = hermite.resample(curves[keep], segments + 1)
        residual = torch.where(torch.isfinite(error), error, torch.full_like(error, float("inf")))
        return _Run(out, length, converged, residual, evaluations)

    def _solve_grid(self, metric: Metric, curves: torch.Tensor, resolved: torch.Tensor, newton_tol: float) -> "_Grid":
        """Minimise the discrete energy of curves (A, N + 1, d) on their grid and measure them.

        Curves whose previous grid resolved them (``resolved``, (A,)) are
        minimised to ``newton_tol``; the others first to ``_UNRESOLVED_TOL``,
        then on to ``newton_tol`` if this grid resolves them.
        """
        segments = curves.shape[1] - 1
        loose = ~resolved & (newton_tol < _UNRESOLVED_TOL)
        tol = torch.where(loose, _UNRESOLVED_TOL, newton_tol).to(curves.dtype)
        solved = newton_krylov(metric, curves, tol=tol, max_iter=self.max_newton, max_cg=self.max_cg)
        points, evaluations = solved.points, solved.evaluations + 3 * segments
        length, energy, spread = hermite.measure(metric, points)
        now_resolved = _resolves(length, solved.energy)
        minimised = solved.converged & ~loose
        tighten = (loose & now_resolved & solved.converged).nonzero().squeeze(-1)
        if tighten.numel():
            tight = newton_krylov(metric, points[tighten], tol=newton_tol, max_iter=self.max_newton, max_cg=self.max_cg)
            points[tighten] = tight.points
            evaluations[tighten] += tight.evaluations + 3 * segments
            length[tighten], energy[tighten], spread[tighten] = hermite.measure(metric, tight.points)
            now_resolved[tighten] = _resolves(length[tighten], tight.energy)
            minimised[tighten] = tight.converged
        return _Grid(points, length, energy, spread, minimised, now_resolved, evaluations)


@dataclass
class _Grid:
    """Curves (A, N + 1, d) minimised on one grid: their Hermite length, energy and speed spread (A,),
    whether the energy was minimised to the full tolerance, whether the grid resolves them, and the
    metric evaluations spent (A,)."""

    points: torch.Tensor
    length: torch.Tensor
    energy: torch.Tensor
    spread: torch.Tensor
    minimised: torch.Tensor
    resolved: torch.Tensor
    evaluations: torch.Tensor


def _resolves(length: torch.Tensor, discrete_energy: torch.Tensor) -> torch.Tensor:
    """(A,) the grid resolves the curve: its discrete length √E is within ``_UNRESOLVED_GAP`` of its Hermite length."""
    tiny = torch.finfo(length.dtype).tiny
    gap = (length - discrete_energy.clamp_min(0).sqrt()).abs() / length.abs().clamp_min(tiny)
    return gap <= _UNRESOLVED_GAP


def _error_estimate(change: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Estimated relative error of the newest length: change / (q − 1), q = ratio capped at 16.

    ``ratio`` is the smaller of the last two ratios of successive changes (NaN
    where there are not two yet). Below 2 (or unknown) the changes do not yet
    show the asymptotic rate and the estimate is the change itself.
    """
    rate = ratio.clamp(max=16.0)
    asymptotic = torch.isfinite(ratio) & (ratio >= 2)
    return torch.where(asymptotic, change / torch.where(asymptotic, rate - 1, 1.0), change)


def _outrun(length, change, groups, active, curves) -> torch.Tensor:
    """(len(active),) curves that cannot become the shortest of their group, or duplicate a shorter one.

    A curve's length decreases under refinement towards its local geodesic and
    moves by about its last change per refinement: when even ten times that
    change (at most half the length) cannot bring it below another curve of its
    group, it is dropped. Two curves of a group closer than 1e-3 of their
    chord at every point are the same local geodesic: the longer is dropped.
    """
    mine = length[active]
    group = groups[active]
    floor = mine * (1 - 10 * change[active]).clamp(min=0.5)
    count = active.shape[0]
    same_group = group[:, None] == group[None, :]
    other = same_group & ~torch.eye(count, dtype=torch.bool, device=active.device)
    beaten = (other & (floor[:, None] > mine[None, :] * (1 + 1e-9))).any(1)
    chord = (curves[:, -1] - curves[:, 0]).norm(dim=-1)
    order = torch.arange(count, device=active.device)
    longer = (mine[:, None] > mine[None, :]) | ((mine[:, None] == mine[None, :]) & (order[:, None] > order[None, :]))
    first, second = (other & longer).nonzero(as_tuple=True)  # only pairs of one group, the longer curve first
    gaps = _max_gaps(curves, first, second)
    duplicate = torch.zeros(count, dtype=torch.bool, device=active.device)
    duplicate[first[gaps <= 1e-3 * chord[first]]] = True
    return torch.isfinite(mine) & (beaten | duplicate)


def _max_gaps(curves: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """max over the points of |curves[first] − curves[second]| (P,), in tiles of at most 8 MB of differences."""
    per_tile = max(1, hermite._TILE_BYTES // (curves[0].numel() * curves.element_size()))
    return torch.cat([
        (curves[first[k:k + per_tile]] - curves[second[k:k + per_tile]]).norm(dim=-1).amax(-1)
        for k in range(0, first.shape[0], per_tile)
    ] or [curves.new_empty(0)])


def _richardson(fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """(4 v_fine − v_coarse) / 3: the initial velocity with its O(N⁻²) discretisation error removed.

    The discrete geodesic's error has an expansion in even powers of the grid
    step, so one extrapolation over two grids cancels the leading term. The
    fine value is kept where there is no coarse grid yet (NaN).
    """
    extrapolated = (4 * fine - coarse) / 3
    return torch.where(torch.isfinite(coarse), extrapolated, fine)


class _StoppedCurves:
    """Each curve as it stopped, on its own grid, with its initial velocity, energy and speed spread."""

    def __init__(self, count: int, starts: torch.Tensor):
        self.grids: list[torch.Tensor | None] = [None] * count  # (N + 1, d) each
        self.energy = starts.new_full((count,), float("nan"))
        self.spread = starts.new_full((count,), float("nan"))
        self.velocity = starts.new_full((count, starts.shape[-1]), float("nan"))

    def add(self, index: torch.Tensor, curves: torch.Tensor, velocity: torch.Tensor, energy, spread) -> None:
        for row, curve in zip(index.tolist(), curves):
            self.grids[row] = curve
        self.velocity[index] = velocity
        self.energy[index], self.spread[index] = energy, spread

    def sampled(self, rows: torch.Tensor, n_points: int) -> torch.Tensor:
        """The curves ``rows`` (R,) resampled to (R, n_points, d), those on the same grid together."""
        rows = rows.tolist()
        out = self.velocity.new_empty(len(rows), n_points, self.velocity.shape[-1])
        by_grid: dict[int, list[int]] = {}
        for slot, row in enumerate(rows):
            by_grid.setdefault(self.grids[row].shape[0], []).append(slot)
        for slots in by_grid.values():
            out[slots] = hermite.resample(torch.stack([self.grids[rows[k]] for k in slots]), n_points)
        return out


@dataclass
class _Run:
    """The outcome of a multilevel solve of C curves: stopped curves and per-curve results (C,)."""

    curves: _StoppedCurves
    length: torch.Tensor
    converged: torch.Tensor
    residual: torch.Tensor
    evaluations: torch.Tensor

    def path(self, n_points: int, name: str, rows: torch.Tensor | None = None) -> Path:
        """The Path of the curves ``rows`` (all by default), sampled at n_points uniform times."""
        if rows is None:
            rows = torch.arange(self.length.shape[0], device=self.length.device)
        return Path(
            points=self.curves.sampled(rows, n_points),
            times=torch.linspace(0, 1, n_points, dtype=self.length.dtype, device=self.length.device),
            length=self.length[rows],
            energy=self.curves.energy[rows],
            converged=self.converged[rows],
            initial_velocity=self.curves.velocity[rows],
            residual=self.residual[rows],
            speed_drift=self.curves.spread[rows],
            method=name,
            local_lengths=self.length[rows].unsqueeze(-1).clone(),
            n_local=torch.ones_like(rows),
            evaluations=self.evaluations[rows],
        )
