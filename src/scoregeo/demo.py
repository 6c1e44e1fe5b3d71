"""The ``scoregeo demo``: geodesics of the score metric on two 2-D densities.

On a Gaussian and on a two-component Gaussian mixture, with the score metric
g(x) = α I + λ s(x) s(x)ᵀ (α = 1):

(a) shot geodesics (``shoot``) from a row of start points, all with the same
    velocity: they bend towards the modes and focus, like light around a mass;
(b) boundary-value geodesics (``geodesic``) between two fixed points for
    λ ∈ {0, 1, 10, 100}; λ = 0 is the Euclidean metric, so its geodesic is the
    straight line; larger λ makes changes of log p more expensive, so the
    geodesic follows the contours of log p;
(c) the metric's unit balls over the density contours.

Writes ``demo.png`` (2 rows × 3 panels) and ``demo.json`` (for every path: its
Euclidean and Riemannian length, convergence, number of local geodesics found,
speed drift) atomically into the output directory, and returns the report.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__, plotting
from ._io import atomic_write
from .densities import Gaussian, GaussianMixture
from .geodesics import geodesic, shoot
from .metrics import ScoreMetric

ALPHA = 1.0
BVP_LAMS = (0.0, 1.0, 10.0, 100.0)
SHOT_LAM = 1.0
ELLIPSE_LAM = 10.0
N_POINTS = 96  # samples along every path
DTYPE = torch.float64


@dataclass
class Scene:
    """One density of the demo and where its geodesics start and end."""

    key: str
    title: str
    density: Any
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    bvp_ends: tuple[tuple[float, float], tuple[float, float]]
    shot_x: float  # the row of start points is at x = shot_x ...
    shot_ys: tuple[float, float, int]  # ... for y in linspace(*shot_ys)
    shot_time: float  # shots have velocity (1, 0) over [0, shot_time]
    legend_loc: str = "upper right"  # of panel (b), where its geodesics leave room


def scenes() -> list[Scene]:
    """The two densities of the demo.

    Their scale (standard deviations of 2–3) sets how strongly λ acts: for a
    density scaled by c the metric scales as λ/c², so on unit-variance data
    λ ≥ 1 already saturates and the λ ∈ {1, 10, 100} geodesics look alike.
    """
    t = lambda v: torch.tensor(v, dtype=DTYPE)  # noqa: E731
    gaussian = Gaussian(t([0.0, 0.0]), t([[9.0, 3.0], [3.0, 6.0]]))
    mixture = GaussianMixture(t([[0.0, -4.0], [0.0, 4.0]]), 4.5 * torch.eye(2, dtype=DTYPE), t([0.5, 0.5]))
    common = dict(xlim=(-13.0, 13.0), ylim=(-10.0, 10.0), shot_x=-12.6, shot_ys=(-8.5, 8.5, 11), shot_time=26.0)
    return [
        Scene(key="gaussian", title="Gaussian", density=gaussian, bvp_ends=((-7.5, 2.4), (6.0, -4.5)), **common),
        Scene(
            key="mixture",
            title="Gaussian mixture (2 components)",
            density=mixture,
            bvp_ends=((-3.0, -7.5), (3.6, 7.8)),
            legend_loc="upper left",
            **common,
        ),
    ]


# --------------------------------------------------------------------------- solve
def _euclidean_length(points: torch.Tensor) -> torch.Tensor:
    return (points[..., 1:, :] - points[..., :-1, :]).norm(dim=-1).sum(-1)


def _num(x: torch.Tensor | float | None) -> float | None:
    """A JSON-safe float (None for NaN/Inf)."""
    if x is None:
        return None
    value = float(x)
    return value if math.isfinite(value) else None


def _solve_scene(scene: Scene, step: Callable[[str], None]) -> dict[str, Any]:
    """Shots and boundary-value geodesics of one scene; returns paths and their records."""
    density = scene.density
    ys = torch.linspace(*scene.shot_ys[:2], scene.shot_ys[2], dtype=DTYPE)
    starts = torch.stack([torch.full_like(ys, scene.shot_x), ys], dim=-1)
    velocity = torch.tensor([1.0, 0.0], dtype=DTYPE).expand_as(starts)

    t0 = time.perf_counter()
    shots = shoot(ScoreMetric(density.score, 2, lam=SHOT_LAM, alpha=ALPHA), starts, velocity, t=scene.shot_time, n_points=4 * N_POINTS)
    shot_seconds = time.perf_counter() - t0
    step(f"{scene.key}: shots")
    shot_records = [
        {
            "start": starts[i].tolist(),
            "initial_velocity": velocity[i].tolist(),
            "t": scene.shot_time,
            "euclidean_length": _num(_euclidean_length(shots.points[i])),
            "riemannian_length": _num(shots.length[i]),
            "converged": bool(shots.converged[i]),
            "speed_drift": _num(shots.speed_drift[i]),
        }
        for i in range(starts.shape[0])
    ]

    x0 = torch.tensor(scene.bvp_ends[0], dtype=DTYPE)[None]
    x1 = torch.tensor(scene.bvp_ends[1], dtype=DTYPE)[None]
    bvps, bvp_records = {}, []
    for lam in BVP_LAMS:
        t0 = time.perf_counter()
        path = geodesic(ScoreMetric(density.score, 2, lam=lam, alpha=ALPHA), x0, x1, n_points=N_POINTS)
        seconds = time.perf_counter() - t0
        step(f"{scene.key}: geodesic λ={lam:g}")
        bvps[lam] = path
        bvp_records.append(
            {
                "lam": lam,
                "x0": x0[0].tolist(),
                "x1": x1[0].tolist(),
                "euclidean_length": _num(_euclidean_length(path.points[0])),
                "riemannian_length": _num(path.length[0]),
                "converged": bool(path.converged[0]),
                "n_local": None if path.n_local is None else int(path.n_local[0]),
                "local_lengths": None
                if path.local_lengths is None
                else [v for v in (_num(x) for x in path.local_lengths[0]) if v is not None],
                "residual": _num(path.residual[0]),
                "speed_drift": _num(path.speed_drift[0]),
                "method": path.method,
                "seconds": round(seconds, 3),
            }
        )
    return {
        "shots": shots,
        "bvps": bvps,
        "record": {
            "title": scene.title,
            "alpha": ALPHA,
            "shots": {"lam": SHOT_LAM, "seconds": round(shot_seconds, 3), "paths": shot_records},
            "geodesics": bvp_records,
        },
    }


# ---------------------------------------------------------------------------- plot
def _clip_to_box(points: np.ndarray, xlim, ylim, margin: float = 0.05) -> np.ndarray:
    """The part of a curve (n, 2) up to its first exit from the (slightly enlarged) box."""
    (x0, x1), (y0, y1) = xlim, ylim
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    inside = (points[:, 0] >= x0 - mx) & (points[:, 0] <= x1 + mx) & (points[:, 1] >= y0 - my) & (points[:, 1] <= y1 + my)
    outside = np.flatnonzero(~inside)
    if outside.size == 0:
        return points
    first = outside[outside > 0][0] if (outside > 0).any() else 1
    return points[: first + 1]


def _figure(scene_list: list[Scene], solved: list[dict[str, Any]]):
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(16.5, 10.2), layout="constrained")
    axes = fig.subplots(len(scene_list), 3)
    lam_colors = {0.0: "0.25", 1.0: "#1b9e77", 10.0: "#d95f02", 100.0: "#7570b3"}
    fig.suptitle(
        "Geodesics of the score metric  g(x) = αI + λ s(x)s(x)ᵀ,  s = ∇ₓ log p,  α = 1",
        fontsize=16,
    )
    for row, (scene, result) in enumerate(zip(scene_list, solved)):
        density = scene.density
        ax_shot, ax_bvp, ax_ell = axes[row]

        # (a) shot geodesics from parallel straight starts
        plotting.density_contours(ax_shot, density.log_prob, scene.xlim, scene.ylim, cmap="Blues", alpha=0.75)
        shots = result["shots"]
        pts = shots.points.detach().numpy()
        clipped = [_clip_to_box(p, scene.xlim, scene.ylim) for p in pts]
        for p in pts:
            ax_shot.plot([p[0, 0], scene.xlim[1]], [p[0, 1], p[0, 1]], color="0.45", lw=0.7, ls=":", zorder=2)
        plotting.geodesics(ax_shot, clipped, color="#b2182b", lw=1.4, zorder=3)
        ax_shot.plot(pts[:, 0, 0], pts[:, 0, 1], "o", color="#b2182b", ms=3.5, zorder=4)
        ax_shot.set_title(f"(a) shot geodesics, λ = {SHOT_LAM:g}\nsame start velocity (1, 0) for every ray")
        ax_shot.legend(
            handles=[
                Line2D([], [], color="#b2182b", lw=1.4, label="geodesic (sg.shoot)"),
                Line2D([], [], color="0.45", lw=0.7, ls=":", label="straight line (λ = 0)"),
            ],
            loc="lower right",
            fontsize=9,
            framealpha=0.9,
        )

        # (b) boundary-value geodesics for several λ
        plotting.density_contours(ax_bvp, density.log_prob, scene.xlim, scene.ylim, cmap="Blues", alpha=0.35)
        plotting.density_contours(ax_bvp, density.log_prob, scene.xlim, scene.ylim, filled=False, levels=12, alpha=0.6)
        for lam, path in result["bvps"].items():
            rec = next(r for r in result["record"]["geodesics"] if r["lam"] == lam)
            length = rec["riemannian_length"]
            flag = "" if rec["converged"] else "  (not converged)"
            name = "λ = 0 (straight line)" if lam == 0 else f"λ = {lam:g}"
            plotting.geodesics(
                ax_bvp,
                path,
                color=lam_colors.get(lam, None),
                lw=2.0 if lam else 1.4,
                ls="--" if lam == 0 else "-",
                label=f"{name}:  L_g = {length:.2f}{flag}" if length is not None else name + flag,
                zorder=3,
            )
        x0, x1 = scene.bvp_ends
        ax_bvp.plot([x0[0], x1[0]], [x0[1], x1[1]], "o", color="k", ms=6, zorder=5)
        ax_bvp.annotate("x₀", x0, xytext=(-14, 6), textcoords="offset points", fontsize=12)
        ax_bvp.annotate("x₁", x1, xytext=(6, 6), textcoords="offset points", fontsize=12)
        ax_bvp.set_title("(b) boundary-value geodesics x₀ → x₁\nλ ∈ {" + ", ".join(f"{v:g}" for v in BVP_LAMS) + "}")
        ax_bvp.legend(loc=scene.legend_loc, fontsize=8.5, framealpha=0.9, title="Riemannian length L_g", title_fontsize=8.5)

        # (c) metric balls over density contours
        plotting.density_contours(ax_ell, density.log_prob, scene.xlim, scene.ylim, cmap="Blues", alpha=0.75)
        grid = plotting.grid_points(scene.xlim, scene.ylim, (13, 10), dtype=DTYPE)
        plotting.metric_ellipses(ax_ell, ScoreMetric(density.score, 2, lam=ELLIPSE_LAM, alpha=ALPHA), grid, facecolor="#fdae61", edgecolor="0.15", alpha=0.9)
        ax_ell.set_title(f"(c) metric balls {{v : vᵀG(x)v = r²}}, λ = {ELLIPSE_LAM:g}\nthin across contours: changing log p is costly")

        for ax in (ax_shot, ax_bvp, ax_ell):
            ax.set_xlim(*scene.xlim)
            ax.set_ylim(*scene.ylim)
            ax.set_aspect("equal")
            ax.set_xlabel("x")
            ax.set_ylabel("y")
        ax_shot.set_ylabel(f"{scene.title}\n\ny", fontsize=12)
    return fig


# ----------------------------------------------------------------------------- run
def run(out_dir: str | os.PathLike = "demo-out", progress: bool = True, threads: int | None = 1) -> dict[str, Any]:
    """Run the demo; write ``demo.png`` and ``demo.json`` into ``out_dir``; return the JSON report.

    ``report["all_converged"]`` says whether every path met its solver's
    tolerance; paths that did not are still drawn (marked in the legend) and
    recorded with ``"converged": false``.
    """
    start = time.perf_counter()
    if threads is not None:
        torch.set_num_threads(threads)
    out = FsPath(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scene_list = scenes()
    total = len(scene_list) * (1 + len(BVP_LAMS)) + 1
    solved = []
    with tqdm(total=total, desc="scoregeo demo", disable=not progress, unit="step") as bar:

        def step(what: str) -> None:
            bar.set_postfix_str(what, refresh=False)
            bar.update(1)

        for scene in scene_list:
            solved.append(_solve_scene(scene, step))
        fig = _figure(scene_list, solved)
        png = out / "demo.png"
        atomic_write(png, lambda fh: fig.savefig(fh, format="png", dpi=110), binary=True)
        step("figure")

    records = {scene.key: result["record"] for scene, result in zip(scene_list, solved)}
    failures = [
        f"{key}: shot from {p['start']}" for key, r in records.items() for p in r["shots"]["paths"] if not p["converged"]
    ] + [f"{key}: geodesic λ={g['lam']:g}" for key, r in records.items() for g in r["geodesics"] if not g["converged"]]
    report = {
        "scoregeo_version": __version__,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "dtype": str(DTYPE).replace("torch.", ""),
        "metric": "g(x) = alpha*I + lam*s(x)s(x)^T",
        "alpha": ALPHA,
        "bvp_lams": list(BVP_LAMS),
        "shot_lam": SHOT_LAM,
        "ellipse_lam": ELLIPSE_LAM,
        "n_points": N_POINTS,
        "densities": records,
        "all_converged": not failures,
        "not_converged": failures,
        "seconds": round(time.perf_counter() - start, 2),
        "files": {"figure": str(png.name), "report": "demo.json"},
    }
    atomic_write(out / "demo.json", lambda fh: json.dump(report, fh, indent=2, ensure_ascii=False), binary=False)
    return report


def format_table(report: dict[str, Any]) -> str:
    """A short plain-text table: one line per boundary-value geodesic, one per batch of shots (mean lengths)."""
    head = f"{'density':<10} {'path':<14} {'λ':>5} {'L_euclid':>9} {'L_g':>9} {'n_local':>7} {'drift':>9}  converged"
    lines = [head, "-" * len(head)]
    for key, rec in report["densities"].items():
        for g in rec["geodesics"]:
            n_local = "-" if g["n_local"] is None else str(g["n_local"])
            lines.append(
                f"{key:<10} {'x0 → x1':<14} {g['lam']:>5g} {_fmt(g['euclidean_length'])} {_fmt(g['riemannian_length'])} "
                f"{n_local:>7} {_fmt(g['speed_drift'], '.1e')}  {'yes' if g['converged'] else 'NO'}"
            )
        shots = rec["shots"]["paths"]
        n_ok = sum(p["converged"] for p in shots)
        drift = max((p["speed_drift"] or 0.0) for p in shots)
        lines.append(
            f"{key:<10} {f'{len(shots)} shots':<14} {rec['shots']['lam']:>5g} {_fmt(_mean(shots, 'euclidean_length'))} "
            f"{_fmt(_mean(shots, 'riemannian_length'))} {'-':>7} {_fmt(drift, '.1e')}  {n_ok}/{len(shots)}"
        )
    return "\n".join(lines)


def _mean(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if r[key] is not None]
    return float(np.mean(values)) if values else None


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return f"{'nan':>9}" if value is None else f"{value:>9{spec}}"
