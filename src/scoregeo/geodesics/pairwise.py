"""Matrices of geodesic distances between point sets."""

from __future__ import annotations

import dataclasses

import torch
from tqdm.auto import tqdm

from .._checks import check_positive_int
from ..metrics import Metric
from .bvp import geodesic
from .shortest import Shortest
from .solver import BVPSolver, get_solver


def pairwise_distances(
    metric: Metric,
    X: torch.Tensor,
    Y: torch.Tensor | None = None,
    solver: str | BVPSolver = "auto",
    batch_size: int = 64,
    shared_graph: bool = True,
    progress: bool = True,
) -> torch.Tensor:
    """Geodesic distances between the rows of X (N, d) and of Y (M, d), or among the rows of X.

    Args:
        metric: any :class:`~scoregeo.Metric`.
        X, Y: points (N, d) and (M, d), or shaped (N, *metric.event_shape).
            Without Y the result is the symmetric (N, N) matrix with a zero
            diagonal, and only the N(N − 1)/2 pairs i < j are solved.
        solver: as for :func:`~scoregeo.geodesic`.
        batch_size: pairs per call of the solver (a pair's distance does not
            depend on the batch it is solved in).
        shared_graph: with a multi-start solver (``"auto"``), use the given
            points themselves as the nodes of the graph start of every pair
            (``StartCurves.anchors``): data points are where paths between data
            points should pass.
        progress: a tqdm progress bar over the batches.

    Returns:
        (N, M) or (N, N) distances. Pairs whose solve did not converge are
        reported by the solver's ``RuntimeWarning`` (their entry is the best
        attempt).
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    X = _points(metric, X, "X")
    symmetric = Y is None
    Y = X if symmetric else _points(metric, Y, "Y")
    if X.dtype != Y.dtype:
        raise ValueError(f"X and Y must have the same dtype, got {X.dtype} and {Y.dtype}")
    bvp = get_solver(solver, metric.dim)
    if shared_graph and isinstance(bvp, Shortest) and bvp.starts.graph:
        nodes = X if symmetric else torch.cat([X, Y])
        bvp = dataclasses.replace(bvp, starts=dataclasses.replace(bvp.starts, anchors=nodes))
    N, M = X.shape[0], Y.shape[0]
    if symmetric:
        rows, cols = torch.triu_indices(N, N, offset=1, device=X.device)
    else:
        rows, cols = (index.reshape(-1) for index in torch.meshgrid(torch.arange(N), torch.arange(M), indexing="ij"))
    distances = X.new_zeros(N, M)
    chunks = list(zip(rows.split(batch_size), cols.split(batch_size)))
    for i, j in tqdm(chunks, desc="pairwise distances", unit="batch", disable=not progress):
        distances[i, j] = geodesic(metric, X[i], Y[j], n_points=2, solver=bvp).length
    if symmetric:
        distances = distances + distances.T
    return distances


def _points(metric: Metric, points, name: str) -> torch.Tensor:
    flat, _ = metric.flatten_points(points, name)
    if not isinstance(flat, torch.Tensor) or flat.ndim != 2 or flat.shape[-1] != metric.dim:
        shape = getattr(points, "shape", type(points).__name__)
        raise ValueError(f"{name} must have shape (n, {metric.dim}) or (n, *{metric.event_shape}), got {shape}")
    return flat
