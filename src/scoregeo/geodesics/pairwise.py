"""Matrices of geodesic distances between point sets, on one process or over torch.distributed ranks."""

from __future__ import annotations

import dataclasses
import warnings

import torch
from tqdm.auto import tqdm

from .._checks import check_positive_int
from ..metrics import Metric
from .. import _distributed
from .blocks import Blocks, BlockStore, fingerprint, solve_blocks
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
    out_dir: str | None = None,
    distributed: bool = False,
    key: str = "",
) -> torch.Tensor:
    """Geodesic distances between the rows of X (N, d) and of Y (M, d), or among the rows of X.

    Args:
        metric: any :class:`~scoregeo.Metric`.
        X, Y: points (N, d) and (M, d), or shaped (N, *metric.event_shape).
            Without Y the result is the symmetric (N, N) matrix with a zero
            diagonal, and only the N(N − 1)/2 pairs i < j are solved.
        solver: as for :func:`~scoregeo.geodesic`.
        batch_size: pairs per call of the solver, and per block (a pair's
            distance does not depend on the batch it is solved in).
        shared_graph: with a multi-start solver (``"auto"``), use the given
            points themselves as the nodes of the graph start of every pair
            (``StartCurves.anchors``): data points are where paths between data
            points should pass.
        progress: a tqdm progress bar over the blocks (on rank 0 only).
        out_dir: a directory where every finished block of ``batch_size``
            pairs is written atomically (``block-000017.pt``); a rerun with the
            same arguments loads them instead of solving them again (resume
            after a crash), and a block written for other inputs or settings is
            refused with a ``ValueError`` (:mod:`scoregeo.geodesics.blocks`).
        distributed: share the blocks out over the processes of torch.distributed
            (launch with ``torchrun``; the process group is initialised from
            the environment if it is not yet: gloo on CPU, NCCL on GPU). Block k
            goes to rank k mod world size; needs ``out_dir`` (on a file system
            every rank sees), through which the ranks exchange their blocks.
            Every rank returns the whole matrix.
        key: text stored in every block's fingerprint for what the points and
            the metric's settings do not identify, such as the score model's
            weights (the CLI passes their hash): a rerun with another key
            refuses the old blocks.

    Returns:
        (N, M) or (N, N) distances, the same whether computed in one process,
        over several ranks, or resumed. Pairs whose solve did not converge are
        reported by a ``RuntimeWarning`` (their entry is the length of the best
        attempt, an upper bound of the distance).
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    if distributed and out_dir is None:
        raise ValueError("distributed=True needs out_dir, a directory every rank can read and write")
    if not isinstance(key, str):
        raise ValueError(f"key must be a string, got {type(key).__name__}")
    X = _points(metric, X, "X")
    symmetric = Y is None
    Y = X if symmetric else _points(metric, Y, "Y")
    if X.dtype != Y.dtype:
        raise ValueError(f"X and Y must have the same dtype, got {X.dtype} and {Y.dtype}")
    bvp = get_solver(solver, metric.dim)
    settings = f"{metric!r}|{bvp!r}|batch {batch_size}|shared graph {shared_graph}|key {key}"
    if shared_graph and isinstance(bvp, Shortest) and bvp.starts.graph:
        nodes = X if symmetric else torch.cat([X, Y])
        bvp = dataclasses.replace(bvp, starts=dataclasses.replace(bvp.starts, anchors=nodes))
    N, M = X.shape[0], Y.shape[0]
    if symmetric:
        rows, cols = torch.triu_indices(N, N, offset=1, device=X.device)
    else:
        rows, cols = (index.reshape(-1) for index in torch.meshgrid(torch.arange(N), torch.arange(M), indexing="ij"))
    blocks = Blocks(rows.cpu(), cols.cpu(), batch_size)
    store = None
    if out_dir is not None:
        store = BlockStore(out_dir, fingerprint(X, Y if not symmetric else "symmetric", settings))
    rank, world = _distributed.rank_and_world(distributed, X.device)

    def solve(i: torch.Tensor, j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, j = i.to(X.device), j.to(X.device)
        with warnings.catch_warnings():  # reported once for the whole matrix below
            warnings.filterwarnings("ignore", message=r"geodesic \(.*did not converge", category=RuntimeWarning)
            path = geodesic(metric, X[i], Y[j], n_points=2, solver=bvp)
        return path.length.detach(), path.converged.detach()

    mine = range(rank, len(blocks), world)
    with tqdm(total=len(mine), desc="pairwise distances", unit="block", disable=not progress or rank != 0) as bar:
        results = solve_blocks(blocks, mine, solve, store, progress=bar)
    if world > 1:
        _distributed.barrier()
        results.update({k: store.load(k, *blocks.pairs(k)) for k in range(len(blocks)) if k not in results})
    distances = X.new_zeros(N, M)
    converged = torch.ones(N, M, dtype=torch.bool, device=X.device)
    for k, (length, ok) in results.items():
        i, j = blocks.pairs(k)
        distances[i.to(X.device), j.to(X.device)] = length.to(distances)
        converged[i.to(X.device), j.to(X.device)] = ok.to(X.device)
    if not bool(converged.all()):
        warnings.warn(f"{int((~converged).sum())} of {len(blocks.rows)} geodesics did not converge; their entries are "
                      "the lengths of the best curves found (upper bounds of the distances)", RuntimeWarning,
                      stacklevel=2)
    if symmetric:
        distances = distances + distances.T
    return distances


def _points(metric: Metric, points, name: str) -> torch.Tensor:
    flat, _ = metric.flatten_points(points, name)
    if not isinstance(flat, torch.Tensor) or flat.ndim != 2 or flat.shape[-1] != metric.dim:
        shape = getattr(points, "shape", type(points).__name__)
        raise ValueError(f"{name} must have shape (n, {metric.dim}) or (n, *{metric.event_shape}), got {shape}")
    return flat
