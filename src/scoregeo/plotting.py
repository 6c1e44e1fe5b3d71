"""Plots of 2-D densities, score fields, metrics and geodesics on matplotlib Axes.

Every function takes an ``ax`` (a :class:`matplotlib.axes.Axes`) first, draws on
it and returns what it drew; none creates a figure or calls ``plt.show``, and
this module never imports ``pyplot``, so it works with any backend (Agg
included) and inside any figure layout::

    from matplotlib.figure import Figure
    import scoregeo as sg
    from scoregeo import plotting

    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    plotting.density_contours(ax, p.log_prob, (-3, 3), (-3, 3))
    plotting.metric_ellipses(ax, sg.ScoreMetric(p.score, 2, lam=10.0), grid_points)
    plotting.geodesics(ax, sg.shoot(metric, x, v), color="k")
    fig.savefig("figure.png")

All plots are of 2-D spaces; anything else raises a ``ValueError``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.collections import PatchCollection
from matplotlib.contour import QuadContourSet
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse

from ._checks import check_interval

__all__ = [
    "density_contours",
    "learned_log_density",
    "score_field",
    "metric_ellipses",
    "geodesics",
    "samples",
    "loss_curve",
    "grid_points",
]

Limits = Sequence[float]


# ----------------------------------------------------------------------------- grids
def grid_points(xlim: Limits, ylim: Limits, n: int | tuple[int, int] = 10, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A regular grid over the box xlim × ylim as points of shape (ny, nx, 2).

    ``n`` is the number of points per axis (or a pair (nx, ny)). The grid
    includes the box corners; flatten it with ``.reshape(-1, 2)``.
    """
    (x0, x1), (y0, y1) = check_interval(xlim, "xlim"), check_interval(ylim, "ylim")
    nx, ny = _grid_size(n)
    dtype = dtype or torch.get_default_dtype()
    xs = torch.linspace(x0, x1, nx, dtype=dtype)
    ys = torch.linspace(y0, y1, ny, dtype=dtype)
    Y, X = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([X, Y], dim=-1)


def _grid_size(n: int | tuple[int, int]) -> tuple[int, int]:
    pair = (n, n) if isinstance(n, int) else tuple(n)
    if len(pair) != 2 or any(not isinstance(k, int) or isinstance(k, bool) or k < 2 for k in pair):
        raise ValueError(f"n must be an integer >= 2 or a pair of them (points per axis), got {n!r}")
    return pair  # type: ignore[return-value]


def _evaluate_on_grid(fn: Callable[[torch.Tensor], torch.Tensor], pts: torch.Tensor, what: str, out_shape: tuple) -> np.ndarray:
    """Evaluate a field on the grid (ny, nx, 2), with a 2-D-only error instead of a shape error deep inside."""
    try:
        with torch.no_grad():
            values = fn(pts)
    except ValueError as err:  # e.g. a density of another dimension rejecting (..., 2) points
        raise ValueError(f"{what} must accept 2-D points (..., 2); plotting is 2-D only ({err})") from err
    values = torch.as_tensor(values)
    expected = pts.shape[:-1] + out_shape
    if tuple(values.shape) != tuple(expected):
        raise ValueError(
            f"{what} mapped grid points of shape {tuple(pts.shape)} to shape {tuple(values.shape)}, "
            f"expected {tuple(expected)}; plotting is 2-D only"
        )
    return values.detach().cpu().double().numpy()


def _callable_of(obj: Any, attr: str, what: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Accept a callable or an object with the method ``attr`` (a density passed as is)."""
    dim = getattr(obj, "dim", None)
    if isinstance(dim, int) and dim != 2:
        raise ValueError(f"plotting is 2-D only, got {type(obj).__name__} with dim={dim}")
    if hasattr(obj, attr) and callable(getattr(obj, attr)):
        return getattr(obj, attr)
    if callable(obj):
        owner_dim = getattr(getattr(obj, "__self__", None), "dim", None)
        if isinstance(owner_dim, int) and owner_dim != 2:
            raise ValueError(f"plotting is 2-D only, got the {what} of a {owner_dim}-D {type(obj.__self__).__name__}")
        return obj
    raise ValueError(f"{what} must be callable (or an object with a .{attr} method), got {type(obj).__name__}")


# -------------------------------------------------------------------------- plots
def density_contours(
    ax: Axes,
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    xlim: Limits,
    ylim: Limits,
    n: int | tuple[int, int] = 200,
    levels: int | Sequence[float] = 12,
    filled: bool = True,
    depth: float | None = 12.0,
    **style: Any,
) -> QuadContourSet:
    """Contours of log p over the box xlim × ylim; returns the ``QuadContourSet``.

    Args:
        ax: the Axes to draw on.
        log_prob: log-density callable (..., 2) → (...) (or a density object with
            ``.log_prob``); an unnormalised log-density is fine.
        xlim, ylim: (low, high) of the box.
        n: grid points per axis (or (nx, ny)).
        levels: number of contour levels, or the log p values themselves.
        filled: filled contours (``contourf``) or lines (``contour``).
        depth: when ``levels`` is a number, the levels span [max − depth, max] of
            log p on the grid, so the far tails do not use up all levels; None
            spans the full range.
        **style: passed on to ``contourf``/``contour`` (cmap, alpha, colors, ...).

    Contours of log p rather than p: the score metric sees log p, and its
    geodesics follow these level sets.
    """
    fn = _callable_of(log_prob, "log_prob", "log_prob")
    pts = grid_points(xlim, ylim, n)
    Z = _evaluate_on_grid(fn, pts, "log_prob", ())
    X, Y = pts[..., 0].double().numpy(), pts[..., 1].double().numpy()
    return _log_density_contours(ax, X, Y, Z, levels, filled, depth, style)


def learned_log_density(
    ax: Axes,
    score: Callable[[torch.Tensor], torch.Tensor],
    xlim: Limits,
    ylim: Limits,
    n: int | tuple[int, int] = 121,
    levels: int | Sequence[float] = 12,
    filled: bool = True,
    depth: float | None = 12.0,
    **style: Any,
) -> QuadContourSet:
    """Contours of the log-density implied by a score field (learned or exact), as in ``density_contours``.

    log p is the least-squares potential of the score on the grid
    (``scores.potential.grid_log_density``): the gradient part of a learned,
    possibly non-conservative field, normalised over the box.
    """
    from .scores.potential import grid_log_density

    fn = _callable_of(score, "score", "score")
    nx, ny = _grid_size(n)
    X, Y, Z = grid_log_density(fn, check_interval(xlim, "xlim"), check_interval(ylim, "ylim"), (nx, ny))
    return _log_density_contours(ax, X, Y, Z, levels, filled, depth, style)


def _log_density_contours(ax, X, Y, Z, levels, filled, depth, style) -> QuadContourSet:
    if isinstance(levels, int) and not isinstance(levels, bool):
        if levels < 1:
            raise ValueError(f"levels must be a positive integer or a sequence of values, got {levels!r}")
        finite = Z[np.isfinite(Z)]
        if finite.size == 0:
            raise ValueError("log_prob is not finite anywhere on the grid")
        top = float(finite.max())
        bottom = float(finite.min()) if depth is None else max(float(finite.min()), top - float(depth))
        if bottom >= top:
            bottom = top - 1.0
        level_values = np.linspace(bottom, top, levels + 1) if filled else np.linspace(bottom, top, levels + 2)[1:-1]
        if filled:
            Z = np.clip(Z, bottom, None)  # everything below the lowest level joins the lowest band
    else:
        level_values = np.asarray(levels, dtype=float)
    if filled:
        style.setdefault("cmap", "Blues")
        return ax.contourf(X, Y, Z, levels=level_values, **style)
    style.setdefault("colors", "0.4")
    style.setdefault("linewidths", 0.6)
    style.setdefault("linestyles", "solid")  # matplotlib dashes negative levels otherwise, and log p is mostly negative
    return ax.contour(X, Y, Z, levels=level_values, **style)


def score_field(
    ax: Axes,
    score: Callable[[torch.Tensor], torch.Tensor],
    xlim: Limits,
    ylim: Limits,
    n: int | tuple[int, int] = 20,
    kind: str = "quiver",
    normalize: bool = True,
    **style: Any,
):
    """The score field s(x) on an n × n grid, as arrows or stream lines.

    Args:
        score: score callable (..., 2) → (..., 2), or a density object with ``.score``.
        kind: ``"quiver"`` (one arrow per grid point; returns the ``Quiver``) or
            ``"stream"`` (returns the ``StreamplotSet``).
        normalize: for ``"quiver"``, draw unit arrows coloured by |s| (scores
            grow without bound in the tails, so raw arrows are unreadable);
            otherwise raw vectors. For ``"stream"``, colours by |s| either way.
        **style: passed on to ``quiver``/``streamplot``.
    """
    fn = _callable_of(score, "score", "score")
    pts = grid_points(xlim, ylim, n)
    S = _evaluate_on_grid(fn, pts, "score", (2,))
    X, Y = pts[..., 0].double().numpy(), pts[..., 1].double().numpy()
    U, V = S[..., 0], S[..., 1]
    magnitude = np.hypot(U, V)
    if kind == "quiver":
        if normalize:
            safe = np.where(magnitude > 0, magnitude, 1.0)
            U, V = U / safe, V / safe
            style.setdefault("cmap", "viridis")
            style.setdefault("pivot", "mid")
            step = min(np.diff(X[0]).min(), np.diff(Y[:, 0]).min())
            style.setdefault("angles", "xy")
            style.setdefault("scale_units", "xy")
            style.setdefault("scale", 1.0 / (0.7 * step))  # unit arrows 0.7 grid steps long
            style.setdefault("width", 0.004)
            if "color" not in style:
                return ax.quiver(X, Y, U, V, magnitude, **style)
        return ax.quiver(X, Y, U, V, **style)
    if kind == "stream":
        if "color" not in style:
            style["color"] = magnitude
            style.setdefault("cmap", "viridis")
        style.setdefault("density", 1.0)
        style.setdefault("linewidth", 0.8)
        return ax.streamplot(X, Y, U, V, **style)
    raise ValueError(f"kind must be 'quiver' or 'stream', got {kind!r}")


def metric_ellipses(
    ax: Axes,
    metric,
    points: torch.Tensor,
    scale: float | None = None,
    **style: Any,
) -> PatchCollection:
    """Balls {v : vᵀ G(x) v = r²} of the metric at the given points, as ellipses centred at them.

    The ellipse at x has semi-axes r / √μ_i along the eigenvectors q_i of G(x)
    (eigen-decomposition of ``metric.matrix(x)``): short where the metric is
    large (moving there is expensive), long where it is small.

    Args:
        metric: a :class:`scoregeo.Metric` of dimension 2.
        points: centres, shape (..., 2) (for example ``grid_points(...)``).
        scale: the radius r. None picks r so that the largest ellipse's long
            semi-axis is 0.45 of the typical spacing between the points, so
            neighbours do not overlap; the same r is used at every point, so
            sizes are comparable across the plot.
        **style: passed on to the ``PatchCollection`` (facecolor, edgecolor, alpha, ...).

    Returns the ``PatchCollection`` (one ellipse per point, in the order of
    ``points.reshape(-1, 2)``).
    """
    dim = getattr(metric, "dim", None)
    if not callable(getattr(metric, "matrix", None)) or dim is None:
        raise ValueError(f"metric must be a scoregeo Metric (with .dim and .matrix), got {type(metric).__name__}")
    if dim != 2:
        raise ValueError(f"plotting is 2-D only, got a metric of dimension {dim}")
    points = _as_tensor(points, "points")
    if points.ndim == 0 or points.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2) (plotting is 2-D only), got {tuple(points.shape)}")
    flat = points.reshape(-1, 2)
    if flat.shape[0] == 0:
        raise ValueError("points is empty")
    if not flat.is_floating_point():
        flat = flat.to(torch.get_default_dtype())
    with torch.no_grad():
        G = metric.matrix(flat)
    G = 0.5 * (G + G.transpose(-1, -2))
    eigvals, eigvecs = torch.linalg.eigh(G.double())  # ascending: column 0 is the long axis
    if bool((eigvals <= 0).any()):
        raise ValueError("the metric matrix is not positive-definite at some points; its balls are unbounded")
    eigvals, eigvecs = eigvals.cpu().numpy(), eigvecs.cpu().numpy()
    long_unit = 1.0 / np.sqrt(eigvals[:, 0])  # semi-axis length per unit radius
    if scale is None:
        r = 0.45 * _typical_spacing(flat.detach().cpu().double().numpy()) / float(long_unit.max())
    else:
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        r = float(scale)
    centres = flat.detach().cpu().double().numpy()
    angles = np.degrees(np.arctan2(eigvecs[:, 1, 0], eigvecs[:, 0, 0]))
    widths = 2 * r / np.sqrt(eigvals[:, 0])
    heights = 2 * r / np.sqrt(eigvals[:, 1])
    patches = [Ellipse((cx, cy), w, h, angle=a) for (cx, cy), w, h, a in zip(centres, widths, heights, angles)]
    style.setdefault("facecolor", "tab:orange")
    style.setdefault("edgecolor", "0.2")
    style.setdefault("linewidth", 0.5)
    style.setdefault("alpha", 0.7)
    collection = PatchCollection(patches, **style)
    ax.add_collection(collection, autolim=True)
    ax.autoscale_view()
    return collection


def _typical_spacing(pts: np.ndarray) -> float:
    """Median nearest-neighbour distance (the grid step for a grid)."""
    if pts.shape[0] < 2:
        return 1.0
    sample = pts[:: max(1, pts.shape[0] // 500)]
    dists = np.linalg.norm(sample[:, None, :] - pts[None, :, :], axis=-1)
    dists[dists == 0] = np.inf
    nearest = dists.min(axis=1)
    nearest = nearest[np.isfinite(nearest)]
    return float(np.median(nearest)) if nearest.size else 1.0


def geodesics(ax: Axes, paths_or_points, **style: Any) -> list[Line2D]:
    """Draw every curve of a batch: a ``Path`` (its ``.points``), a tensor or array (..., n, 2), or a list of those.

    All curves share one style: unless ``color`` is given they take one colour
    from the Axes' cycle, and a ``label`` goes on the first curve only, so the
    batch shows up once in a legend. Other keyword arguments go to ``ax.plot``.
    Returns the ``Line2D`` artists, one per curve.
    """
    curves = _curves(paths_or_points)
    lines: list[Line2D] = []
    label = style.pop("label", None)
    for i, curve in enumerate(curves):
        kwargs = dict(style)
        kwargs["label"] = label if (i == 0 and label is not None) else "_nolegend_"
        (line,) = ax.plot(curve[:, 0], curve[:, 1], **kwargs)
        if i == 0 and "color" not in style and "c" not in style:
            style["color"] = line.get_color()
        lines.append(line)
    return lines


def _curves(obj) -> list[np.ndarray]:
    if isinstance(obj, (list, tuple)):
        if len(obj) == 0:
            return []
        return [c for item in obj for c in _curves(item)]
    if hasattr(obj, "points") and not isinstance(obj, (torch.Tensor, np.ndarray)):
        obj = obj.points
    arr = _as_tensor(obj, "paths_or_points").detach().cpu().double().numpy()
    if arr.ndim < 2 or arr.shape[-1] != 2:
        raise ValueError(
            f"geodesics takes a Path or curves of shape (..., n, 2) (plotting is 2-D only), got shape {tuple(arr.shape)}"
        )
    return list(arr.reshape(-1, arr.shape[-2], 2))


def _as_tensor(obj, name: str) -> torch.Tensor:
    if isinstance(obj, torch.Tensor):
        return obj
    try:
        return torch.as_tensor(np.asarray(obj, dtype=float))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a tensor or array, got {type(obj).__name__}") from None


def samples(ax: Axes, points, **style: Any):
    """Scatter plot of 2-D samples (N, 2) (a tensor or array); returns the ``PathCollection``."""
    pts = _as_tensor(points, "points").detach().double().cpu().numpy()
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
    style.setdefault("s", 3)
    style.setdefault("alpha", 0.5)
    style.setdefault("linewidths", 0)
    return ax.scatter(pts[:, 0], pts[:, 1], **style)


def loss_curve(ax: Axes, losses: Sequence[float], window: int | None = None, **style: Any) -> list[Line2D]:
    """Training loss per step (light) and its running mean over ``window`` steps (default: 1% of the run).

    Returns the two lines. The y axis is linear: score-matching losses can be negative.
    """
    values = np.asarray(losses, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"losses must be a non-empty sequence of numbers, got shape {values.shape}")
    window = window or max(1, values.size // 100)
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    steps = np.arange(1, values.size + 1)
    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
    raw = ax.plot(steps, values, color=style.pop("raw_color", "0.75"), linewidth=0.5, label="loss")
    mean = ax.plot(steps[window - 1:], smooth, **{"color": "C0", "label": f"mean over {window} steps", **style})
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    return raw + mean
