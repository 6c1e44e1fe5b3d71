"""The metrics one density defines, side by side: geodesics between the same pairs, on three 2-D densities.

Rows: a three-component mixture (three pairs) and the two densities of
``scoregeo demo`` (its boundary-value pair). One panel per metric, each with
the density's log-density contours, the metric's
ellipses (unit balls) on a grid, and the shortest geodesics (``sg.geodesic``,
default multi-start solver) between three pairs of points, with the straight
lines dashed:

* the score metric αI + λ s sᵀ (follows the level sets of log p);
* the inverse score metric (αI + λ s sᵀ)⁻¹ (runs along the score);
* the conformal metric p^(−β) I (stays where the density is high);
* the energy-based conformal metric (α(−log p) + β) I;
* the score-Jacobian pullback αI + λ JᵀJ (avoids where the score changes fast).

Prints each geodesic's length, whether it converged, and the mean of log p along
it and along the straight line (per unit of Euclidean arc length).

    .venv/bin/python examples/metric_family.py [--out docs/metric_family.png]
"""

from __future__ import annotations

import argparse
import time

import torch
from matplotlib.figure import Figure

import scoregeo as sg
from scoregeo import plotting
from scoregeo.demo import scenes

F64 = torch.float64
PAIRS = [((-2.4, 0.4), (2.4, -0.2)), ((-1.0, -2.2), (0.8, 2.3)), ((-2.0, 1.8), (1.5, 1.6))]


def mean_log_p(p, points: torch.Tensor) -> float:
    """Mean of log p along a polyline (n, 2) per unit of Euclidean arc length (midpoint rule)."""
    steps = (points[1:] - points[:-1]).norm(dim=-1)
    return float((p.log_prob(0.5 * (points[1:] + points[:-1])) * steps).sum() / steps.sum())


def metrics(p) -> dict[str, sg.Metric]:
    return {
        "score αI + λ s sᵀ (λ = 4)": sg.ScoreMetric(p.score, 2, lam=4.0),
        "inverse (αI + λ s sᵀ)⁻¹ (λ = 4)": sg.InverseScoreMetric(p.score, 2, lam=4.0),
        "conformal p^(−β) I (β = 1)": sg.ConformalMetric(p.log_prob, 2, form="power", beta=1.0),
        "energy (−log p + 1) I": sg.ConformalMetric(p.log_prob, 2, form="energy", alpha=1.0, beta=1.0),
        "Jacobian αI + λ JᵀJ (λ = 1)": sg.ScoreJacobianMetric(p.score, 2, lam=1.0),
    }


def rows() -> list[tuple[str, sg.GaussianMixture | sg.Gaussian, list, tuple, tuple]]:
    """(title, density, pairs, xlim, ylim): a 3-component mixture and the two densities of ``scoregeo demo``."""
    p = sg.GaussianMixture(torch.tensor([[0.0, -1.3], [0.0, 1.3], [1.2, 0.0]], dtype=F64),
                           0.3 * torch.eye(2, dtype=F64).expand(3, 2, 2), torch.tensor([0.4, 0.4, 0.2], dtype=F64))
    out = [("three-component mixture", p, PAIRS, (-3.2, 3.2), (-3.2, 3.2))]
    for scene in scenes():
        out.append((f"demo: {scene.title}", scene.density, [scene.bvp_ends], scene.xlim, scene.ylim))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="metric_family.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table = rows()
    n_metrics = len(metrics(table[0][1]))
    fig = Figure(figsize=(4.2 * n_metrics, 4.4 * len(table)), layout="constrained")
    axes = fig.subplots(len(table), n_metrics, squeeze=False)
    print(f"{'density':34s} {'metric':34s} pair  length  converged  mean log p (geodesic / line)")
    for row, (title, p, pairs, xlim, ylim) in zip(axes, table):
        x0 = torch.tensor([a for a, _ in pairs], dtype=F64)
        x1 = torch.tensor([b for _, b in pairs], dtype=F64)
        lines = x0[:, None] + torch.linspace(0, 1, 65, dtype=F64)[:, None] * (x1 - x0)[:, None]
        for ax, (name, metric) in zip(row, metrics(p).items()):
            start = time.perf_counter()
            path = sg.geodesic(metric, x0, x1, n_points=65)
            seconds = time.perf_counter() - start
            plotting.density_contours(ax, p, xlim, ylim, filled=True)
            plotting.metric_ellipses(ax, metric, plotting.grid_points(xlim, ylim, 7, dtype=F64),
                                     facecolor="none", edgecolor="0.15")
            plotting.geodesics(ax, lines, color="0.3", linestyle="--", linewidth=1)
            plotting.geodesics(ax, path, color="crimson", linewidth=2)
            ax.set(title=f"{name}\n{title} ({seconds:.1f} s, {int(path.converged.sum())}/{len(pairs)} converged)",
                   xlabel="x₁", ylabel="x₂", xlim=xlim, ylim=ylim, aspect="equal")
            ax.title.set_fontsize(9)
            for i in range(len(pairs)):
                print(f"{title:34s} {name:34s} {i:4d} {float(path.length[i]):7.3f}  {str(bool(path.converged[i])):9s}  "
                      f"{mean_log_p(p, path.points[i]):6.2f} / {mean_log_p(p, lines[i]):6.2f}")
    fig.suptitle("Geodesics (red) and straight lines (dashed) of five metrics of one density per row; "
                 "ellipses: unit balls of each metric", fontsize=11)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
