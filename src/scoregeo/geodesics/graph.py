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
    n_nodes: int | None = None,
    k: int | None = None,
    seed: int = 0,
    anchors: torch.Tensor | None = None,
) -> torch.Tensor:
    """Initial curves (B, n_points, d) for pairs x0, x1 (B, d) from graph shortest paths, one graph per pair.

    Nodes: the pair's end points plus ``anchors`` (M, d) when given (for
    example training samples: in high dimension, points of the data are where
    short paths go), otherwise ``n_nodes`` random points (fixed ``seed``, the
    same draw for every pair) placed around the pair: in d <= 3 uniformly in
    the pair's bounding box padded by 1.5 times its largest side on each side
    (default 500 nodes, k = 16; a tighter box missed geodesics that go round a
    mode), above in a tube around the chord (default 100 nodes, k = 8: there
    the edges' score evaluations cost as much as refining several starts).
    Pairs are processed in chunks, their metric evaluations batched. Nodes where
    the metric is not finite and positive take no edges (this keeps the graph
    inside the metric's domain). Edges join each node to its ``k`` Euclidean
    nearest neighbours, weighted by the metric length of the segment (4-point
    Gauss–Legendre quadrature). Each curve is resampled at equal metric arc
    length. A pair with no connecting path gets the straight line. A pair's
    curve depends on that pair alone, not on the rest of the batch.
    """
    B, d = x0.shape
    if n_nodes is None:
        n_nodes = 500 if d <= 3 else 100
    if k is None:
        k = 16 if d <= 3 else 8
    if anchors is not None:
        anchors = anchors.to(dtype=x0.dtype, device=x0.device).reshape(-1, d)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    unit = torch.rand(n_nodes, d, generator=gen, dtype=torch.float64).to(dtype=x0.dtype, device=x0.device)
    normal = torch.randn(n_nodes, d, generator=gen, dtype=torch.float64).to(dtype=x0.dtype, device=x0.device)
    n = 2 + (anchors.shape[0] if anchors is not None else n_nodes)
    chunk = max(1, _CHUNK_ENTRIES // (n * n))
    curves = []
    for first in range(0, B, chunk):
        a, b = x0[first : first + chunk], x1[first : first + chunk]
        others = anchors.expand(a.shape[0], -1, -1) if anchors is not None else _random_nodes(a, b, unit, normal)
        nodes = torch.cat([a[:, None], b[:, None], others], 1)  # (P, n, d): the pair's own graph
        for pair_nodes, chain in zip(nodes, _shortest_chains(metric, nodes, k)):
            polyline = pair_nodes[chain].clone()
            polyline[0], polyline[-1] = pair_nodes[0], pair_nodes[1]
            curves.append(_resample(metric, polyline, n_points))
    return torch.stack(curves)


_CHUNK_ENTRIES = 2**22  # node-distance entries (pairs × n²) handled at once


def _random_nodes(a: torch.Tensor, b: torch.Tensor, unit: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """Random graph nodes (P, n, d) around each pair a, b (P, d) from fixed draws ``unit`` and ``normal`` (n, d)."""
    d = a.shape[-1]
    a, b = a[:, None], b[:, None]
    if d <= 3:
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        pad = 1.5 * (hi - lo).amax(-1, keepdim=True).clamp_min(1e-12)
        return (lo - pad) + unit * (hi - lo + 2 * pad)
    chord = b - a
    along = -0.25 + 1.5 * unit[:, :1]  # positions along the chord, a little beyond both ends
    return a + along * chord + 0.3 * chord.norm(dim=-1, keepdim=True) * normal / d**0.5


def _shortest_chains(metric: Metric, nodes: torch.Tensor, k: int) -> list[list[int]]:
    """Per graph (nodes (P, n, d), start node 0, end node 1): the node indices of its shortest path.

    Nodes where the metric is not defined take no edges; a graph whose end
    points are not connected gets the chain [0, 1] (the straight line).
    """
    P, n, _ = nodes.shape
    k = min(k, n - 1)
    with torch.no_grad():
        valid = _valid_nodes(metric, nodes)
        valid[:, :2] = True  # end points are always kept
        dists = torch.cdist(nodes, nodes)
        dists = dists.masked_fill(~(valid[:, :, None] & valid[:, None, :]), float("inf"))
        dists.diagonal(dim1=1, dim2=2).fill_(float("inf"))
        gaps, neighbours = dists.topk(k, largest=False)  # (P, n, k)
        src = torch.arange(n, device=nodes.device).repeat_interleave(k).expand(P, -1)
        dst = neighbours.reshape(P, -1)
        usable = torch.isfinite(gaps).reshape(P, -1)
        src, dst = torch.where(usable, src, 0), torch.where(usable, dst, 0)  # unusable edges: node 0 to itself
        take = torch.arange(P, device=nodes.device)[:, None]
        lengths = segment_lengths(metric, nodes[take, src].flatten(0, 1), nodes[take, dst].flatten(0, 1))
        lengths = lengths.reshape(P, -1)
    ok = (usable & torch.isfinite(lengths) & (lengths > 0)).cpu().numpy()
    lengths, src, dst = lengths.cpu().numpy(), src.cpu().numpy(), dst.cpu().numpy()
    chains = []
    for p in range(P):
        graph = coo_matrix((lengths[p][ok[p]], (src[p][ok[p]], dst[p][ok[p]])), shape=(n, n)).tocsr()
        distances, predecessors = dijkstra(graph, directed=False, indices=[0], return_predecessors=True)
        if not np.isfinite(distances[0, 1]):
            chains.append([0, 1])
            continue
        chain = [1]
        while chain[-1] != 0:
            chain.append(int(predecessors[0, chain[-1]]))
        chains.append(chain[::-1])
    return chains


def _valid_nodes(metric: Metric, nodes: torch.Tensor) -> torch.Tensor:
    """(n,) nodes where the metric is defined: ⟨e, e⟩ finite and positive for a fixed direction e."""
    direction = torch.ones_like(nodes) / nodes.shape[-1] ** 0.5
    squared = metric._inner(nodes, direction, direction)
    return torch.isfinite(squared) & (squared > 0)


def segment_lengths(metric: Metric, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
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
        seg = segment_lengths(metric, polyline[:-1], polyline[1:])
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
