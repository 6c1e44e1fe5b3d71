"""Paths between digits under each metric of one learned score: image strips and a table.

Slow: 8 to 17 minutes per pair on one thread, most of it the conformal metric
(it evaluates the score at 16 points of its line integral for every point of
the curve, and its solves stop unconverged after 4 to 15 minutes).

1. Train (or load from ``--model``) a NoiseConditionalMLP on the bundled 8×8
   digits by denoising score matching (d = 64).
2. For a few pairs of digits of different classes, connect them by the straight
   line, SLERP, and the geodesics of the score metric, the inverse score metric,
   the conformal metric p^(−β) (log p from the score's line integral), the
   score-Jacobian metric αI + λ JᵀJ, and the likely curve (Euclidean energy plus λ_S · (−log p)), at noise level σ.
3. Write one image strip per pair (a row per path) and print a Markdown table
   (also written to ``--table``): each path's length under the score metric and
   its Euclidean length, solve time, convergence, and the learned log p_σ along
   it (probability-flow ODE, Hutchinson divergence) at nine points: mean and
   minimum.

    .venv/bin/python examples/digits_metrics.py [--model runs/digits-example] [--out docs/digits_metrics]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure

import scoregeo as sg
from scoregeo.scores.networks import NoiseConditionalMLP
from scoregeo.scores.potential import ray_log_density

F64 = torch.float64
PAIRS = "0-1"  # default class pairs: the first training image of each class


def model_at(directory: Path, steps: int) -> sg.ScoreModel:
    try:
        return sg.ScoreModel.load(directory, dtype=F64)
    except sg.CheckpointError:
        data = sg.datasets.digits()
        torch.manual_seed(0)
        net = NoiseConditionalMLP(64, hidden=256, n_blocks=3)
        sg.train_score(data, "dsm", steps=steps, batch_size=256, lr=1e-3, sigma_min=0.05, network=net, seed=0,
                       out=directory)
        return sg.ScoreModel.load(directory, dtype=F64)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/digits-example", help="model directory (trained if missing)")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--sigma", type=float, default=0.3)
    parser.add_argument("--lam", type=float, default=100.0)
    parser.add_argument("--lam-jacobian", type=float, default=1.0,
                        help="λ of the Jacobian metric (|J| ≈ 1/σ², so λ = 1 already dominates α = 1)")
    parser.add_argument("--out", default="digits_metrics", help="prefix of the strip files")
    parser.add_argument("--table", help="also write the table to this Markdown file")
    parser.add_argument("--pairs", default=PAIRS, help="class pairs, e.g. 0-1,3-8,7-4 (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = model_at(Path(args.model), args.steps)
    images, labels = sg.datasets.digits(dtype=F64, return_labels=True)
    first = {int(c): int((labels == c).nonzero()[0]) for c in range(10)}
    source = model.score_fn(args.sigma)
    reference = images.mean(0)
    metrics = {
        "score metric": sg.ScoreMetric(source, lam=args.lam),
        "inverse score metric": sg.InverseScoreMetric(source, lam=args.lam),
        "conformal p^-1": sg.ConformalMetric.from_score(source, 64, reference, form="power", beta=1.0, n_nodes=16),
        "Jacobian metric": sg.ScoreJacobianMetric(source, lam=args.lam_jacobian),
    }
    log_p_line = ray_log_density(source, reference, n_nodes=16)
    score_metric = metrics["score metric"]
    table = [
        f"model {args.model}; σ = {args.sigma}, λ = {args.lam:g} (Jacobian metric λ = {args.lam_jacobian:g}); "
        "33 points per path, log p_σ at 9 of them (probability-flow ODE, 16 Hutchinson probes)",
        "",
        "| pair | path | length (score metric) | Euclidean length | seconds | converged | mean log p | min log p |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    print("\n".join(table), flush=True)
    pairs = [tuple(int(c) for c in item.split("-")) for item in args.pairs.split(",")]
    for a, b in pairs:
        x0, x1 = images[first[a]], images[first[b]]
        paths, notes = {"straight line": sg.lerp(x0, x1, 33), "SLERP": sg.slerp(x0, x1, 33)}, {}
        for name, metric in metrics.items():
            start = time.perf_counter()
            path = sg.geodesic(metric, x0, x1, n_points=33, solver="newton")
            notes[name] = (time.perf_counter() - start, bool(path.converged))
            paths[name] = path.points
        start = time.perf_counter()
        likely = sg.geodesics.likely_curve(sg.Euclidean(64), log_p_line, x0, x1, lam_s=10.0, n_points=33)
        notes["likely (λ_S = 10)"] = (time.perf_counter() - start, bool(likely.converged))
        paths["likely (λ_S = 10)"] = likely.points
        picks = torch.linspace(0, 32, 9).round().long()
        stacked = torch.stack([p[picks] for p in paths.values()])  # (rows, 9, 64)
        flow = model.log_prob(stacked.reshape(-1, 64), args.sigma, divergence="hutchinson", n_probes=16,
                              generator=torch.Generator().manual_seed(0), rtol=1e-5, atol=1e-6)
        log_p = flow.log_prob.reshape(len(paths), 9)
        for row, (name, points) in enumerate(paths.items()):
            seconds, converged = notes.get(name, (None, None))
            length = float(sg.curve_length(score_metric, points))
            euclidean = float((points[1:] - points[:-1]).norm(dim=-1).sum())
            line = (f"| {a}→{b} | {name} | {length:.3f} | {euclidean:.3f} | "
                    f"{'–' if seconds is None else f'{seconds:.1f}'} | {'–' if converged is None else converged} | "
                    f"{float(log_p[row].mean()):.1f} | {float(log_p[row].min()):.1f} |")
            table.append(line)
            print(line, flush=True)
        fig = Figure(figsize=(9 * 0.9, len(paths) * 0.95 + 0.5), layout="constrained")
        axes = fig.subplots(len(paths), 9, squeeze=False)
        for row_axes, (name, points) in zip(axes, paths.items()):
            for ax, k in zip(row_axes, picks):
                ax.imshow(points[k].reshape(8, 8).numpy(), cmap="gray", vmin=-1, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
            row_axes[0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
        fig.suptitle(f"digit {a} → digit {b}: paths under each metric (σ = {args.sigma}, λ = {args.lam:g})",
                     fontsize=9)
        out = Path(f"{args.out}_{a}{b}.png")
        fig.savefig(out, dpi=100)
        print(f"wrote {out}", flush=True)
    if args.table:
        Path(args.table).write_text("\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
