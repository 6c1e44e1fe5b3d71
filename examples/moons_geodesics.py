"""Geodesics of a learned score metric on two moons, beside the straight line.

1. Train a noise-conditional score network on the "moons" toy by denoising score
   matching (``sg.train_score``).
2. Take its score at noise level σ as a plain field s(x) = s_θ(x, σ) and build the
   metric g(x) = αI + λ s(x)s(x)ᵀ (``sg.ScoreMetric``).
3. Solve boundary-value geodesics (``sg.geodesic``) between points on the moons and
   compare them with the straight line: Riemannian length, and log-density along
   each path, both from the learned score (line integral of s·dx) and from an
   independent estimate, the Gaussian kernel density of the training data with
   bandwidth σ, which is exactly the law p_σ = p_data * N(0, σ²I) that DSM
   learns at level σ.

Under g, changing log p is expensive, so the geodesic keeps to a level set of
log p_σ where the straight line dips through the low-density gap between the
moons.

    .venv/bin/python examples/moons_geodesics.py [--out moons-geodesics.png] [--steps 6000]
"""

from __future__ import annotations

import argparse
import math

import torch
from matplotlib.figure import Figure

import scoregeo as sg
from scoregeo import datasets, plotting
from scoregeo.scores.potential import line_integral

F64 = torch.float64
PAIRS = [((-2.6, 0.6), (0.9, 0.0)), ((-1.6, 1.4), (1.6, -1.4)), ((2.7, -0.4), (0.0, -1.3))]


def kde_log_density(data: torch.Tensor, bandwidth: float):
    """log of the Gaussian kernel density of ``data`` (N, 2) with the given bandwidth, a callable (..., 2) → (...)."""
    norm = -math.log(data.shape[0]) - math.log(2 * math.pi * bandwidth**2)

    def log_p(x: torch.Tensor) -> torch.Tensor:
        sq = ((x.unsqueeze(-2) - data) ** 2).sum(-1)
        return torch.logsumexp(-0.5 * sq / bandwidth**2, dim=-1) + norm

    return log_p


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="moons-geodesics.png")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--sigma", type=float, default=0.3, help="noise level of the learned score")
    parser.add_argument("--lam", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = datasets.make("moons", 10_000, torch.Generator().manual_seed(0))
    model = sg.train_score(data, "dsm", steps=args.steps, lr=2e-3, sigma_min=0.05, seed=0)
    model.to(F64)
    score = model.score_fn(args.sigma)
    metric = sg.ScoreMetric(score, 2, lam=args.lam)
    kde = kde_log_density(data.double(), args.sigma)

    x0 = torch.tensor([p[0] for p in PAIRS], dtype=F64)
    x1 = torch.tensor([p[1] for p in PAIRS], dtype=F64)
    paths = sg.geodesic(metric, x0, x1, n_points=96, progress=True)
    t = torch.linspace(0, 1, 96, dtype=F64)[:, None]
    lines = torch.stack([a + t * (b - a) for a, b in zip(x0, x1)])

    print(f"\nlearned score s_θ(x, σ={args.sigma}), metric I + {args.lam:g} s sᵀ")
    print(f"{'pair':>4} {'curve':>9} {'length':>8} {'min Δlog p (learned)':>21} {'min Δlog p (KDE)':>17} converged")
    for i in range(len(PAIRS)):
        for name, pts in (("geodesic", paths.points[i]), ("line", lines[i])):
            learned = line_integral(score, pts)
            kde_change = kde(pts) - kde(pts[:1])
            converged = bool(paths.converged[i]) if name == "geodesic" else ""
            print(f"{i:>4} {name:>9} {float(sg.curve_length(metric, pts)):8.3f} {float(learned.min()):21.3f} "
                  f"{float(kde_change.min()):17.3f} {converged}")

    fig = Figure(figsize=(12, 5), layout="constrained")
    left, right = fig.subplots(1, 2)
    xlim, ylim = (-3.6, 3.6), (-2.4, 2.4)
    plotting.samples(left, data[:3000], color="0.5", label="training data")
    left.set_title("two moons")
    contours = plotting.learned_log_density(right, score, xlim, ylim, depth=8.0)
    fig.colorbar(contours, ax=right, label="learned log p_σ (least-squares potential of s_θ)")
    plotting.score_field(right, score, xlim, ylim, n=20, color="0.35", alpha=0.5)
    for ax in (left, right):
        plotting.geodesics(ax, lines, color="0.1", linestyle="--", label="straight lines")
        plotting.geodesics(ax, paths, color="C3", linewidth=2, label="geodesics of I + λ s sᵀ")
        ax.plot(*torch.cat([x0, x1]).T.numpy(), "ko", markersize=4)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
        ax.legend(loc="lower left", fontsize=8)
    right.set_title(f"learned score metric, σ = {args.sigma}, λ = {args.lam:g}")
    fig.savefig(args.out, dpi=110)
    print(f"\nwrote {args.out}")
    return 0 if bool(paths.converged.all()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
