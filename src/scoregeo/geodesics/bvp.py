"""Boundary-value geodesics, distances and logarithms: the public entry points."""

from __future__ import annotations

import warnings

import torch
from tqdm.auto import tqdm

from .._checks import check_positive_int
from ..metrics import Metric
from .collocation import CollocationResult, collocation_geodesic, initial_velocity, metric_time_samples
from .curves import curve_energy, curve_length
from .energy import minimize_energy
from .graph import graph_paths
from .ivp import integrate, path_from_trajectory, validated_points
from .path import Path
from .shooting import newton_shooting

METHODS = ("auto", "collocation", "energy", "shooting")
_COARSE_POINTS = 24  # points of the start curves in "auto"
_BOWS = (0.4, 1.2)  # sideways bulges of the bowed starts, relative to |x1 − x0|
_COLLOCATION_MAX_DIM = 3  # the dense Newton matrices of collocation grow as (degree · d)²


def geodesic(
    metric: Metric,
    x0: torch.Tensor,
    x1: torch.Tensor,
    n_points: int = 64,
    method: str = "auto",
    max_iter: int | None = None,
    progress: bool = False,
) -> Path:
    """Geodesic from x0 to x1 (boundary-value problem), batched over leading dimensions.

    Args:
        metric: any :class:`~scoregeo.Metric`.
        x0, x1: (..., d) end points (broadcast together).
        n_points: samples along each returned path (>= 2).
        method:
            ``"auto"`` (default): the shortest geodesic, not just a local one.
            In dimension d <= 3, six starts per pair, the straight line,
            four arcs bowed to either side of it (by 0.4 and 1.2 times the
            distance of the end points), and the shortest path through
            a graph of random points with Riemannian edge lengths, are each
            refined by Chebyshev collocation; the shortest
            converged geodesic wins, and ``Path.n_local`` / ``Path.local_lengths``
            report the distinct local geodesics found. Pairs no start solves
            get seven more: the six first starts and a graph path from a
            denser graph around the pair, each relaxed by energy minimisation.
            When d > 3, every pair is solved from the straight line by discrete
            energy minimisation followed by Newton shooting.
            ``"collocation"``: Chebyshev spectral collocation alone from the
            straight line (see :mod:`scoregeo.geodesics.collocation`); its
            ``residual`` is the relative change of the length between the last
            two polynomial degrees.
            ``"energy"``: discrete curve-energy minimisation alone from the
            straight line, with ``n_points`` points (second-order accurate in
            1/n_points); its ``residual`` is the relative energy gradient.
            ``"shooting"``: Newton shooting alone from v = x1 − x0; its
            ``residual`` is the Euclidean end-point miss.
        max_iter: iteration cap (energy: L-BFGS iterations, default 2000;
            shooting: Newton iterations, default 40; unused by collocation,
            which stops at polynomial degree 1024).
        progress: show a tqdm progress bar over the solver stages.

    Returns:
        A :class:`Path`; ``converged`` is False (and a warning is issued) for
        pairs where the solver did not meet its tolerance.
    """
    x0, x1 = validated_points(metric, x0, x1, ("x0", "x1"))
    n_points = check_positive_int(n_points, "n_points", minimum=2)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if max_iter is not None:
        check_positive_int(max_iter, "max_iter")
    batch = x0.shape[:-1]
    a, b = x0.reshape(-1, metric.dim).contiguous(), x1.reshape(-1, metric.dim).contiguous()
    if a.shape[0] == 0:
        raise ValueError("x0 and x1 must hold at least one pair of points")
    same = (a == b).all(-1)  # coincident end points: the constant curve, distance exactly 0
    if bool(same.all()):
        return _constant_paths(a, n_points, method).reshape(batch)
    moving = (~same).nonzero().squeeze(-1)
    with torch.no_grad():
        path = _solve(metric, a[moving], b[moving], n_points, method, max_iter, progress)
    if bool(same.any()):
        path = _scatter(_constant_paths(a, n_points, method), moving, path)
    _warn_unconverged(path)
    return path.reshape(batch)


def _solve(metric, a, b, n_points, method, max_iter, progress) -> Path:
    if method == "energy":
        return _energy_path(metric, a, b, n_points, max_iter or 2000)
    if method == "collocation":
        return _collocation_path(metric, collocation_geodesic(metric, _straight_lines(a, b, 2)), n_points)
    if method == "shooting":
        with tqdm(total=1, desc="geodesic", disable=not progress, leave=False) as bar:
            return _shooting_path(metric, a, b, [b - a], n_points, max_iter or 40, bar)
    return _auto_path(metric, a, b, n_points, max_iter or 40, progress)


def _constant_paths(a: torch.Tensor, n_points: int, method: str) -> Path:
    """Constant curves at the points a (B, d): the geodesics between coincident end points."""
    zeros = a.new_zeros(a.shape[0])
    return Path(
        points=a[:, None].expand(-1, n_points, -1).clone(),
        times=torch.linspace(0, 1, n_points, dtype=a.dtype, device=a.device),
        length=zeros,
        energy=zeros.clone(),
        converged=torch.ones_like(zeros, dtype=torch.bool),
        initial_velocity=torch.zeros_like(a),
        residual=zeros.clone(),
        speed_drift=zeros.clone(),
        method=method,
        local_lengths=zeros[:, None].clone(),
        n_local=torch.ones_like(zeros, dtype=torch.long),
    )


def _scatter(path: Path, index: torch.Tensor, solved: Path) -> Path:
    """``path`` with the pairs at ``index`` replaced by ``solved`` (NaN-padding ``local_lengths``)."""
    width = max(path.local_lengths.shape[-1], solved.local_lengths.shape[-1])
    local = torch.full((path.length.shape[0], width), float("nan"), dtype=path.length.dtype, device=path.length.device)
    local[:, : path.local_lengths.shape[-1]] = path.local_lengths
    local[index] = float("nan")
    local[index, : solved.local_lengths.shape[-1]] = solved.local_lengths
    fields = ("points", "length", "energy", "converged", "initial_velocity", "residual", "speed_drift", "n_local")
    for name in fields:
        getattr(path, name)[index] = getattr(solved, name)
    path.local_lengths, path.method = local, solved.method
    return path


def distance(metric: Metric, x0: torch.Tensor, x1: torch.Tensor, **kwargs) -> torch.Tensor:
    """Geodesic distance (...) between x0 and x1 (..., d); keyword arguments go to :func:`geodesic`."""
    return geodesic(metric, x0, x1, **kwargs).length


def log_map(metric: Metric, x0: torch.Tensor, x1: torch.Tensor, **kwargs) -> torch.Tensor:
    """Riemannian logarithm log_{x0}(x1) (..., d): the initial velocity of the geodesic on [0, 1]."""
    return geodesic(metric, x0, x1, **kwargs).initial_velocity


def _energy_path(metric: Metric, a: torch.Tensor, b: torch.Tensor, n_points: int, max_iter: int) -> Path:
    result = minimize_energy(metric, _straight_lines(a, b, n_points), max_iter=max_iter)
    points = result.points
    seg_speed_sq = (n_points - 1) ** 2 * metric._inner(
        0.5 * (points[:, 1:] + points[:, :-1]), points[:, 1:] - points[:, :-1], points[:, 1:] - points[:, :-1]
    )
    mean = seg_speed_sq.mean(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    length = curve_length(metric, points)
    return Path(
        points=points,
        times=torch.linspace(0, 1, n_points, dtype=a.dtype, device=a.device),
        length=length,
        energy=curve_energy(metric, points),
        converged=result.converged,
        initial_velocity=_initial_velocity(points),
        residual=result.gradient_norm,
        speed_drift=((seg_speed_sq - mean).abs() / mean).amax(-1),
        method="energy",
        local_lengths=length.unsqueeze(-1),
        n_local=torch.ones_like(length, dtype=torch.long),
    )


def _shooting_path(metric, a, b, starts, n_points, max_iter, bar) -> Path:
    """Newton shooting from each start velocity in ``starts`` (list of (B, d)); keep the shortest converged."""
    results = []
    for v_init in starts:
        results.append(newton_shooting(metric, a, b, v_init, max_iter=max_iter))
        bar.update(1)
    velocities = torch.stack([r.velocity for r in results])  # (C, B, d)
    converged = torch.stack([r.converged for r in results])  # (C, B)
    residuals = torch.stack([r.residual for r in results])
    lengths = metric._inner(a.expand_as(velocities), velocities, velocities).clamp_min(0).sqrt()
    score = torch.where(converged, lengths, torch.inf)
    best = torch.where(converged.any(0), score.argmin(0), residuals.argmin(0))
    pick = torch.arange(a.shape[0], device=a.device)
    times = torch.linspace(0, 1, n_points, dtype=a.dtype, device=a.device)
    xs, vs = integrate(metric, a, velocities[best, pick], times)
    path = path_from_trajectory(metric, xs, vs, times, method="shooting")
    path.converged = converged[best, pick] & path.converged
    path.residual = residuals[best, pick]
    path.local_lengths, path.n_local = _distinct_local(velocities, lengths, converged)
    return path


def _auto_path(metric, a, b, n_points, max_iter, progress) -> Path:
    if metric.dim > _COLLOCATION_MAX_DIM:
        return _energy_then_shooting(metric, a, b, n_points, max_iter, progress)
    with tqdm(total=3, desc="geodesic", disable=not progress, leave=False) as bar:
        starts = _first_starts(metric, a, b)
        bar.update(1)
        path = _best_collocation(metric, starts, n_points)
        bar.update(1)
        failed = (~path.converged).nonzero().squeeze(-1)
        if failed.numel():
            path = _scatter(path, failed, _best_collocation(metric, _second_starts(metric, a[failed], b[failed]), n_points))
        bar.update(1)
    path.method = "auto"
    return path


def _best_collocation(metric: Metric, starts: torch.Tensor, n_points: int) -> Path:
    """Collocation from C start curves per pair, (C, B, m, d); the shortest converged geodesic of each pair."""
    C, B = starts.shape[:2]
    groups = torch.arange(B, device=starts.device).repeat(C)
    solved = collocation_geodesic(metric, starts.flatten(0, 1), groups=groups)
    velocities = initial_velocity(metric, solved)
    lengths, converged = solved.length.reshape(C, B), solved.converged.reshape(C, B)
    score = torch.where(converged, lengths, torch.inf)
    best = torch.where(converged.any(0), score.argmin(0), solved.residual.reshape(C, B).argmin(0))
    path = _collocation_path(metric, _select(solved, best * B + torch.arange(B, device=starts.device)), n_points)
    path.local_lengths, path.n_local = _distinct_local(velocities.reshape(C, B, -1), lengths, converged)
    return path


def _first_starts(metric: Metric, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Starts (C, B, m, d): the straight line and, when d >= 2, a graph path and four bowed arcs.

    (In one dimension the segment is the only curve between two points.)
    """
    line = _straight_lines(a, b, _COARSE_POINTS)
    if metric.dim == 1:
        return line.unsqueeze(0)
    bows = [_bowed_lines(a, b, _COARSE_POINTS, side * bend) for bend in _BOWS for side in (1, -1)]
    return torch.stack([line, graph_paths(metric, a, b, _COARSE_POINTS), *bows])


def _second_starts(metric: Metric, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Starts (C + 1, B, m, d) for pairs the first starts did not solve: every first start and a fresh graph path,
    each relaxed by a loose discrete-energy minimisation.

    The graph path comes from a graph of fresh random points around each pair
    alone (denser than the shared graph of the whole batch). Relaxing matters
    on steep metrics (learned scores at small noise): Newton's method on the
    collocation equations can stall at a non-zero minimum of its residual from
    a raw start, while energy descent always moves a curve towards a local
    geodesic (measured on a learned two-moons score metric: 1 of 6 raw starts
    converged, 4 of 6 relaxed ones).
    """
    graph = torch.cat([graph_paths(metric, a[i : i + 1], b[i : i + 1], _COARSE_POINTS, seed=1) for i in range(len(a))])
    starts = torch.cat([_first_starts(metric, a, b), graph.unsqueeze(0)])
    relaxed = minimize_energy(metric, starts.flatten(0, 1), gtol=1e-4, max_iter=400).points
    return relaxed.reshape(starts.shape)


def _energy_then_shooting(metric, a, b, n_points, max_iter, progress) -> Path:
    """Energy minimisation from the straight line, then Newton shooting from its initial velocity."""
    with tqdm(total=2, desc="geodesic (shooting)", disable=not progress, leave=False) as bar:
        curve = _smoothed_line(metric, a, b)
        bar.update(1)
        return _shooting_path(metric, a, b, [_initial_velocity(curve)], n_points, max_iter, bar)


def _smoothed_line(metric: Metric, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The straight line (B, m, d) relaxed by a loose discrete-energy minimisation: a start, not a solution."""
    return minimize_energy(metric, _straight_lines(a, b, _COARSE_POINTS), gtol=1e-4, max_iter=400).points


def _select(result: CollocationResult, index: torch.Tensor) -> CollocationResult:
    return CollocationResult(
        grid=result.grid,
        values=result.values[index],
        length=result.length[index],
        converged=result.converged[index],
        residual=result.residual[index],
    )


def _collocation_path(metric: Metric, result: CollocationResult, n_points: int) -> Path:
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
        method="collocation",
        local_lengths=length.unsqueeze(-1).clone(),
        n_local=torch.ones_like(length, dtype=torch.long),
    )


def _distinct_local(velocities, lengths, converged) -> tuple[torch.Tensor, torch.Tensor]:
    """Lengths (B, C) of the distinct converged geodesics (NaN padded, shortest first) and their count (B,).

    Two solutions are the same geodesic when their initial velocities agree to
    1e-4 relative (geodesics are determined by their initial velocity).
    """
    C, B, _ = velocities.shape
    out = torch.full((B, C), float("nan"), dtype=lengths.dtype, device=lengths.device)
    count = torch.zeros(B, dtype=torch.long, device=lengths.device)
    for pair in range(B):
        kept: list[int] = []
        for c in lengths[:, pair].argsort().tolist():
            if not bool(converged[c, pair]):
                continue
            v = velocities[c, pair]
            scale = 1e-4 * (v.norm() + 1e-12)
            if all(bool((v - velocities[k, pair]).norm() > scale) for k in kept):
                kept.append(c)
        out[pair, : len(kept)] = lengths[kept, pair]
        count[pair] = len(kept)
    return out, count


def _straight_lines(a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
    t = torch.linspace(0, 1, n, dtype=a.dtype, device=a.device)[:, None]
    return a[:, None] + t * (b - a)[:, None]


def _bowed_lines(a: torch.Tensor, b: torch.Tensor, n: int, bend: float) -> torch.Tensor:
    """Parabolic arcs (B, n, d) from a to b bulging sideways by ``bend`` · |b − a| at the middle.

    The side is the chord turned by 90° in the plane of the first two
    coordinates; a bowed start on either side of a mode reaches the geodesic
    that passes on that side.
    """
    chord = b - a
    side = torch.zeros_like(chord)
    side[:, 0], side[:, 1] = -chord[:, 1], chord[:, 0]
    t = torch.linspace(0, 1, n, dtype=a.dtype, device=a.device)[:, None]
    return _straight_lines(a, b, n) + (4 * bend * t * (1 - t)) * side[:, None]


def _initial_velocity(points: torch.Tensor) -> torch.Tensor:
    """ẋ(0) of curves (B, n, d) sampled uniformly on [0, 1], second-order one-sided difference when n >= 3."""
    h = 1.0 / (points.shape[1] - 1)
    if points.shape[1] < 3:
        return (points[:, 1] - points[:, 0]) / h
    return (-3 * points[:, 0] + 4 * points[:, 1] - points[:, 2]) / (2 * h)


def _warn_unconverged(path: Path) -> None:
    if not bool(path.converged.all()):
        bad = int((~path.converged).sum())
        warnings.warn(
            f"geodesic ({path.method}): {bad} of {path.converged.numel()} paths did not converge "
            f"(largest residual {float(path.residual.max()):.3g}); see Path.converged and Path.residual",
            RuntimeWarning,
            stacklevel=3,
        )
