"""Boundary-value geodesics, distances and logarithms: the public entry points.

The work is done by solver objects (:mod:`scoregeo.geodesics.solver`); this
module validates the input, handles coincident end points and empty batches,
guards the metric's domain and reports non-convergence.
"""

from __future__ import annotations

import warnings

import torch
from tqdm.auto import tqdm

from .._checks import check_positive_int
from ..metrics import Metric
from .collocation import CollocationSolver
from .domain import guard
from .energy import EnergySolver
from .ivp import shaped_like, validated_points
from .multilevel import MultilevelNewton
from .path import Path
from .shooting import ShootingSolver
from .shortest import default_solver, scatter_paths
from .solver import BVPSolver, get_solver, register

register("collocation", CollocationSolver)
register("energy", EnergySolver)
register("shooting", ShootingSolver)
register("newton", MultilevelNewton)


def geodesic(
    metric: Metric,
    x0: torch.Tensor,
    x1: torch.Tensor,
    n_points: int = 64,
    solver: str | BVPSolver = "auto",
    method: str | BVPSolver | None = None,
    progress: bool = False,
) -> Path:
    """Geodesic from x0 to x1 (boundary-value problem), batched over leading dimensions.

    Args:
        metric: any :class:`~scoregeo.Metric`.
        x0, x1: (..., d) end points (broadcast together), inside the metric's
            domain (a ``ValueError`` says which is not); or shaped
            (..., *metric.event_shape), for example images of a score source,
            and then the returned points and velocities have that shape too.
        n_points: samples along each returned path (>= 2), uniform in the
            geodesic's own time t ∈ [0, 1] (equal metric arc length).
        solver: a :class:`~scoregeo.geodesics.BVPSolver` object (configured with
            its own options) or a registered name:

            - ``"auto"`` (default): the shortest geodesic, not just a local one:
              several starts per pair (the straight line, a graph path, arcs
              bowed in several directions orthogonal to the chord), each
              refined by the local solver, the shortest converged wins;
              ``Path.n_local`` / ``Path.local_lengths`` report the distinct
              local geodesics found. Local solver: Chebyshev collocation in
              d <= 3, the multilevel Newton solver above.
            - ``"newton"``: :class:`~scoregeo.geodesics.MultilevelNewton` from
              the straight line: discrete geodesics on doubling grids, minimised
              by preconditioned L-BFGS and Newton–Krylov, until the length
              converges; matrix-free, memory O(n · d); for any d.
            - ``"collocation"``: Chebyshev collocation from the straight line
              (dense Newton matrices: small d).
            - ``"energy"``: discrete energy minimisation at ``n_points`` points
              (discretisation-limited, error O(1/n_points²)).
            - ``"shooting"``: Newton shooting from v = x1 − x0 (dense d×d Jacobian: small d).
        method: the former name of ``solver`` (same values).
        progress: show a tqdm progress bar.

    Returns:
        A :class:`Path`. ``length`` is the metric length of the returned curve
        and ``residual`` an estimate of its relative error; ``converged`` is
        False (and a ``RuntimeWarning`` is issued) for pairs where the solver did
        not meet its tolerance. An empty batch gives an empty Path.
    """
    given = x0
    x0, x1 = validated_points(metric, x0, x1, ("x0", "x1"))
    n_points = check_positive_int(n_points, "n_points", minimum=2)
    if method is not None:
        if solver != "auto":
            raise ValueError("give either solver= or method= (its former name), not both")
        solver = method
    bvp = get_solver(solver, metric.dim)
    batch = x0.shape[:-1]
    a, b = x0.reshape(-1, metric.dim).contiguous(), x1.reshape(-1, metric.dim).contiguous()
    if a.shape[0] > 0:
        metric.check_domain(a, "x0")
        metric.check_domain(b, "x1")
    same = (a == b).all(-1)  # coincident end points: the constant curve, distance exactly 0
    path = constant_paths(a, n_points, bvp.name)
    moving = (~same).nonzero().squeeze(-1)
    if moving.numel():
        with torch.no_grad(), tqdm(total=1, desc=f"geodesic ({bvp.name})", disable=not progress, leave=False) as bar:
            solved = bvp.solve(guard(metric), a[moving], b[moving], n_points)
            bar.update(1)
        path = scatter_paths(path, moving, solved)
        _warn_unconverged(path)
    return shaped_like(metric, given, path.reshape(batch))


def constant_paths(a: torch.Tensor, n_points: int, name: str) -> Path:
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
        method=name,
        local_lengths=zeros[:, None].clone(),
        n_local=torch.ones_like(zeros, dtype=torch.long),
        evaluations=torch.zeros_like(zeros, dtype=torch.long),
    )


def distance(metric: Metric, x0: torch.Tensor, x1: torch.Tensor, **kwargs) -> torch.Tensor:
    """Geodesic distance (...) between x0 and x1 (..., d); keyword arguments go to :func:`geodesic`."""
    return geodesic(metric, x0, x1, **kwargs).length


def log_map(metric: Metric, x0: torch.Tensor, x1: torch.Tensor, **kwargs) -> torch.Tensor:
    """Riemannian logarithm log_{x0}(x1), shape of x0: the initial velocity of the geodesic on [0, 1].

    Keyword arguments go to :func:`geodesic`. By default (``solver="auto"``) the
    solve is tighter than for a distance: the length is stationary at a geodesic,
    so a length right to rtol leaves the velocity right only to about √rtol
    (see :func:`~scoregeo.geodesics.shortest.default_solver`).
    """
    if kwargs.get("solver", "auto") == "auto" and kwargs.get("method") in (None, "auto") and isinstance(metric, Metric):
        kwargs.pop("method", None)
        kwargs["solver"] = default_solver(metric.dim, for_velocity=True)
    return geodesic(metric, x0, x1, **kwargs).initial_velocity


def _warn_unconverged(path: Path) -> None:
    if not bool(path.converged.all()):
        bad = int((~path.converged).sum())
        warnings.warn(
            f"geodesic ({path.method}): {bad} of {path.converged.numel()} paths did not converge "
            f"(largest residual {float(path.residual.max()):.3g}); see Path.converged and Path.residual",
            RuntimeWarning,
            stacklevel=3,
        )
