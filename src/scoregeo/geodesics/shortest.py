"""The shortest geodesic: several start curves per pair, one local solver, the shortest converged solution wins.

:class:`Shortest` composes the shared pieces: :class:`~scoregeo.geodesics.starts.StartCurves`
builds C start curves per pair, any :class:`~scoregeo.geodesics.solver.BVPSolver`
refines them all in one flat batch (grouped by pair), and :func:`select_shortest`
keeps, per pair, the shortest converged geodesic and counts the distinct local
geodesics found (``Path.n_local``, ``Path.local_lengths``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..metrics import Metric
from .energy import minimize_energy
from .path import Path
from .solver import BVPSolver
from .starts import StartCurves


@dataclass
class Shortest(BVPSolver):
    """Multi-start boundary-value solver.

    Args:
        local: the local solver that refines each start.
        starts: which start curves to build.
        relax_failed: pairs none of whose starts converged are tried again from
            every start relaxed by a loose discrete-energy minimisation (Newton
            on collocation equations can stall at a non-zero minimum of its
            residual from a raw start on steep metrics; energy descent moves a
            curve towards a local geodesic).
    """

    local: BVPSolver
    starts: StartCurves = field(default_factory=StartCurves)
    relax_failed: bool = False
    name: str = "shortest"

    def refine(self, metric: Metric, starts: torch.Tensor, groups: torch.Tensor, n_points: int) -> Path:
        return self.local.refine(metric, starts, groups, n_points)

    def solve(self, metric: Metric, x0: torch.Tensor, x1: torch.Tensor, n_points: int) -> Path:
        curves = self.starts.build(metric, x0, x1)  # (C, B, m, d)
        path = self._best(metric, curves, n_points)
        failed = (~path.converged).nonzero().squeeze(-1)
        if self.relax_failed and failed.numel():
            relaxed = _relax(metric, curves[:, failed])
            retry = self._best(metric, relaxed, n_points)
            retry.evaluations = retry.evaluations + path.evaluations[failed] if retry.evaluations is not None else None
            path = scatter_paths(path, failed, retry)
        return path

    def _best(self, metric: Metric, curves: torch.Tensor, n_points: int) -> Path:
        C, B = curves.shape[:2]
        groups = torch.arange(B, device=curves.device).repeat(C)
        solved = self.local.refine(metric, curves.flatten(0, 1), groups, n_points)
        path = select_shortest(solved, C, B)
        path.method = f"{self.name}/{self.local.name}"
        return path


def _relax(metric: Metric, curves: torch.Tensor) -> torch.Tensor:
    """Start curves (C, B, m, d) each moved towards a local geodesic by a loose energy minimisation."""
    relaxed = minimize_energy(metric, curves.flatten(0, 1), gtol=1e-4, max_iter=400).points
    return relaxed.reshape(curves.shape)


def select_shortest(solved: Path, C: int, B: int) -> Path:
    """Per pair, the shortest converged of C solutions (the smallest residual if none converged).

    ``solved`` is a flat Path of C·B entries ordered start-major (entry c·B + b
    is start c of pair b). Two converged solutions are the same local geodesic
    when their initial velocities agree to 1e-4 relative (a geodesic is
    determined by its initial velocity); ``local_lengths`` lists the distinct
    ones, shortest first, and ``n_local`` counts them.
    """
    lengths, converged = solved.length.reshape(C, B), solved.converged.reshape(C, B)
    residual = solved.residual.reshape(C, B)
    score = torch.where(converged, lengths, torch.inf)
    best = torch.where(converged.any(0), score.argmin(0), torch.nan_to_num(residual, nan=torch.inf).argmin(0))
    pick = best * B + torch.arange(B, device=lengths.device)
    velocities = solved.initial_velocity.reshape(C, B, -1)
    local, count = distinct_local(velocities, lengths, converged)
    evaluations = None if solved.evaluations is None else solved.evaluations.reshape(C, B).sum(0)
    return Path(
        points=solved.points[pick],
        times=solved.times,
        length=solved.length[pick],
        energy=solved.energy[pick],
        converged=solved.converged[pick],
        initial_velocity=solved.initial_velocity[pick],
        residual=solved.residual[pick],
        speed_drift=solved.speed_drift[pick],
        method=solved.method,
        local_lengths=local,
        n_local=count,
        evaluations=evaluations,
    )


def distinct_local(velocities, lengths, converged) -> tuple[torch.Tensor, torch.Tensor]:
    """Lengths (B, C) of the distinct converged geodesics (NaN padded, shortest first) and their count (B,)."""
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


def scatter_paths(path: Path, index: torch.Tensor, solved: Path) -> Path:
    """``path`` (flat) with the entries at ``index`` replaced by ``solved`` (NaN-padding ``local_lengths``)."""
    width = max(path.local_lengths.shape[-1], solved.local_lengths.shape[-1])
    local = torch.full((path.length.shape[0], width), float("nan"), dtype=path.length.dtype, device=path.length.device)
    local[:, : path.local_lengths.shape[-1]] = path.local_lengths
    local[index] = float("nan")
    local[index, : solved.local_lengths.shape[-1]] = solved.local_lengths
    fields = ("points", "length", "energy", "converged", "initial_velocity", "residual", "speed_drift", "n_local")
    for name in fields:
        getattr(path, name)[index] = getattr(solved, name)
    if path.evaluations is not None and solved.evaluations is not None:
        path.evaluations[index] = solved.evaluations
    else:
        path.evaluations = None  # not counted by the solver
    path.local_lengths, path.method = local, solved.method
    return path


_COLLOCATION_MAX_DIM = 3  # the dense Newton matrices of collocation grow as (degree · d)²


def default_solver(dim: int, for_velocity: bool = False) -> BVPSolver:
    """The solver of ``solver="auto"``: multi-start collocation in d <= 3, multi-start multilevel Newton above.

    ``for_velocity``: the configuration of ``log_map``. The length is stationary
    at a geodesic, so a curve whose length is right to rtol has an initial
    velocity right only to about √rtol; above d = 3 the multilevel solver then
    runs to rtol = 1e-10 (float64) instead of 1e-6 (collocation is spectrally
    accurate in both).
    """
    from .collocation import CollocationSolver
    from .multilevel import MultilevelNewton

    if dim <= _COLLOCATION_MAX_DIM:
        return Shortest(local=CollocationSolver(), relax_failed=True, name="auto")
    local = MultilevelNewton(rtol=1e-10) if for_velocity else MultilevelNewton()
    return Shortest(local=local, starts=StartCurves(bends=(0.5,), n_directions=2), name="auto")
