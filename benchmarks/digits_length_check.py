"""Is ``Path.length`` the length of the returned curve on the stiff digits metrics? An independent check.

``geodesic_highd.py`` measures every method's curve as a polyline through its returned points.
On the digits score model at σ = 0.1, λ = 1000 (λ|s|² up to 1e6) that measure, at scoregeo's 1025
points, exceeded ``Path.length`` by up to 5 %. Which is right? Here the same pairs are solved
with 1025, 4097 and 16385 returned samples of the same curve (the Hermite interpolant of the final
grid), and each polyline is measured by 5-point Gauss–Legendre per segment
(``baselines.polyline_length``). If ``Path.length`` is the curve's length, the polyline lengths
converge to it as O(h²): the differences shrink 16-fold per 4-fold refinement.

    .venv/bin/python benchmarks/digits_length_check.py [--sigma 0.1] [--lam 1000] [--pairs 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scoregeo as sg  # noqa: E402
from baselines import polyline_length, score_inner  # noqa: E402
from geodesic_highd import digits_model, digits_problem  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sigma", type=float, default=0.1)
    p.add_argument("--lam", type=float, default=1000.0)
    p.add_argument("--pairs", type=int, default=8)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, note = digits_model(False)
    problem = digits_problem(model, args.sigma, args.lam, args.pairs)
    metric = sg.ScoreMetric(problem.score, 64, lam=args.lam, alpha=1.0)
    inner = score_inner(problem.score, args.lam, 1.0)
    print(f"digits score model, σ = {args.sigma:g}, λ = {args.lam:g}, {args.pairs} pairs; {note}")
    print("relative excess of the polyline length over Path.length, per pair")
    lengths = None
    for n in (1025, 4097, 16385):
        path = sg.geodesic(metric, problem.x0, problem.x1, solver="newton", n_points=n)
        if lengths is None:
            lengths = path.length
        torch.testing.assert_close(path.length, lengths, rtol=0, atol=0)  # the same curve, sampled finer
        excess = (polyline_length(inner, path.points) - path.length) / path.length
        print(f"  {n:5d} points: " + " ".join(f"{e:8.1e}" for e in excess.tolist()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
