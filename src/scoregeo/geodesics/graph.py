"""Global initial curves: shortest paths through a random graph with metric edge lengths.

A local solver started from the straight line finds *a* geodesic, not always
the shortest one (it can fall on the wrong side of a mode). A shortest path
through a dense enough graph lies near the global geodesic, so refining it
finds the global one.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from ..metrics import Metric

# 4-point Gauss–Legendre rule on [0, 1]: exact for polynomials of degree 7, and it
# never evaluates the metric at a segment's end or midpoint.
_GL_NODES = np.array([0.0694318442029737, 0.3300094782075719, 0.6699905217924281, 0.9305681557970263])
_GL_WEIGHTS = np.array([0.1739274225687269, 0.3260725774312731, 0.3260725774312731, 0.1739274225687269])


def graph_paths(
    metric: Metric,
    x0: torch.Tensor,
    x1: torch.Tensor,
    n_points: int,
    n_nodes: int = 1500,
    k: int = 16,
    seed: int = 0,
) -> torch.Tensor:
    """Initial curves (B, n_points, d) for pairs x0, x1 (B, d) from graph shortest paths.

    Nodes: ``n_nodes`` uniform random points (fixed ``seed``) in the bounding box
    of all end points, padded by half its largest side, plus the end points;
    nodes where G is not finite and positive-definite are dropped (this keeps
    the graph inside the metric's domain). Edges join each node to its ``k``
    Euclidean nearest neighbours, weighted by the Riemannian length of the
    segment (4-point Gauss–Legendre quadrature). Each curve is resampled at
    equal Riemannian arc length. A pair with no connecting path in the graph
    gets the straight line.
    """
    B, d = x0.shape
    lo = torch.minimum(x0.min(0).values, x1.min(0).values)
    hi = torch.maximum(x0.max(0).values, x1.max(0).values)
    pad = 0.5 * float((hi - lo).max().clamp_min(1e-12))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    random = torch.rand(n_nodes, d, generator=gen, dtype=x0.dtype).to(x0.device)
    nodes = torch.cat([x0, x1, (lo - pad) + random * (hi - lo + 2 * pad)])
    with torch.no_grad():
        valid = _valid_nodes(metric, nodes)
    valid[: 2 * B] = True  # end points are always kept
    index = valid.nonzero().squeeze(-1)
    nodes = nodes[index]
    n = nodes.shape[0]
    k = min(k, n - 1)

    with torch.no_grad():
        dists = torch.cdist(nodes, nodes)
        neighbours = dists.topk(k + 1, largest=False).indices[:, 1:]
        src = torch.arange(n, device=nodes.device).repeat_interleave(k)
        dst = neighbours.reshape(-1)
        lengths = _segment_lengths(metric, nodes[src], nodes[dst])
    ok = torch.isfinite(lengths) & (lengths > 0)
    graph = coo_matrix(
        (lengths[ok].cpu().numpy(), (src[ok].cpu().numpy(), dst[ok].cpu().numpy())), shape=(n, n)
    ).tocsr()
    distances, predecessors = dijkstra(graph, directed=False, indices=np.arange(B), return_predecessors=True)

    curves = []
    nodes_np = nodes.cpu().numpy()
    for b in range(B):
        target = B + b
        if not np.isfinite(distances[b, target]):
            chain = [b, target]
        else:
            chain = [target]
            while chain[-1] != b:
                chain.append(predecessors[b, chain[-1]])
            chain.reverse()
        polyline = torch.as_tensor(nodes_np[chain], dtype=x0.dtype, device=x0.device)
        polyline[0], polyline[-1] = x0[b], x1[b]
        curves.append(_resample(metric, polyline, n_points))
    return torch.stack(curves)


def _valid_nodes(metric: Metric, nodes: torch.Tensor) -> torch.Tensor:
    G = metric._matrix(nodes)
    finite = torch.isfinite(G).all(-1).all(-1)
    _, info = torch.linalg.cholesky_ex(torch.where(finite[:, None, None], G, torch.eye(G.shape[-1], dtype=G.dtype)))
    return finite & (info == 0)


def _segment_lengths(metric: Metric, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Riemannian lengths of straight segments a → b (E, d) → (E,) by Gauss–Legendre quadrature."""
    t = torch.as_tensor(_GL_NODES, dtype=a.dtype, device=a.device)
    w = torch.as_tensor(_GL_WEIGHTS, dtype=a.dtype, device=a.device)
    step = b - a
    points = a.unsqueeze(1) + t[:, None] * step.unsqueeze(1)  # (E, 4, d)
    speed = metric._inner(points, step.unsqueeze(1), step.unsqueeze(1)).clamp_min(0).sqrt()
    return (speed * w).sum(-1)


def _resample(metric: Metric, polyline: torch.Tensor, n_points: int) -> torch.Tensor:
    """n_points on a polyline (m, d) at equal Riemannian arc length."""
    if polyline.shape[0] < 2:
        return polyline.expand(n_points, -1).clone()
    with torch.no_grad():
        seg = _segment_lengths(metric, polyline[:-1], polyline[1:])
    cumulative = torch.cat([seg.new_zeros(1), seg.cumsum(0)])
    total = cumulative[-1]
    if not bool(total > 0):
        return torch.linspace(0, 1, n_points, dtype=polyline.dtype, device=polyline.device)[:, None] * (
            polyline[-1] - polyline[0]
        ) + polyline[0]
    targets = torch.linspace(0, 1, n_points, dtype=polyline.dtype, device=polyline.device) * total
    i = torch.searchsorted(cumulative, targets, right=True).clamp(1, polyline.shape[0] - 1)
    frac = ((targets - cumulative[i - 1]) / seg[i - 1].clamp_min(torch.finfo(seg.dtype).tiny)).clamp(0, 1)
    out = polyline[i - 1] + frac[:, None] * (polyline[i] - polyline[i - 1])
    out[0], out[-1] = polyline[0], polyline[-1]
    return out
