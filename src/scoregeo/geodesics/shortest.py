"""The shortest geodesic: several start curves per pair, one local solver, the shortest converged solution wins.

:class:`Shortest` composes the shared pieces: :class:`~scoregeo.geodesics.starts.StartCurves`
builds C start curves per pair, and any :class:`~scoregeo.geodesics.solver.BVPSolver`
refines them all in one flat batch (grouped by pair) and keeps, per pair, the
shortest converged geodesic (``BVPSolver.shortest``, by default
:func:`~scoregeo.geodesics.selection.select_shortest`), counting the distinct
local geodesics found (``Path.n_local``, ``Path.local_lengths``).
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
        path = self.local.shortest(metric, curves, n_points)
        path.method = f"{self.name}/{self.local.name}"
        return path


def _relax(metric: Metric, curves: torch.Tensor) -> torch.Tensor:
    """Start curves (C, B, m, d) each moved towards a local geodesic by a loose energy minimisation."""
    relaxed = minimize_energy(metric, curves.flatten(0, 1), gtol=1e-4, max_iter=400).points
    return relaxed.reshape(curves.shape)


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
