"""Sample quality against cost: annealed Langevin, predictor–corrector and probability flow on the 8-Gaussian mixture.

Every sampler uses the *exact* noise-conditional score of the target
(``GaussianMixture.noisy_score``: the score of m·X + σ·Z), so the table measures
the samplers' own error, not a network's. Quality: sliced Wasserstein-2
(``sg.evaluation.sliced_wasserstein``, 512 fixed directions) between 4000
samples and 4000 exact draws of the mixture; cost: score evaluations (one
batched call counts once) and seconds.

Baseline in the same run: the "floor", the sliced W2 between two independent
exact sample sets of the same size (no sampler can do better on average); the
ratio column is SW2 / floor. With 8 modes, most of the floor is the random
number of samples per mode, so every entry (floor included) is the mean over
``--repeats`` independent runs, with its standard deviation.

* annealed Langevin (NCSN): 10 geometric levels from σ_max (largest pairwise
  distance of the data, NCSNv2) to 0.01, ε_i = 0.05 σ_i², T steps per level, final
  Tweedie denoising step: 10 T + 1 evaluations;
* PC (reverse-diffusion predictor + one Langevin corrector, snr 0.16), VE SDE
  (σ from 0.01 to σ_max) and VP SDE (β from 0.1 to 20): 2 N + 1 evaluations;
* probability-flow ODE (dopri5) on the VP SDE at decreasing tolerances.

    .venv/bin/python benchmarks/samplers.py [--n 4000] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import torch

import scoregeo as sg
from scoregeo import datasets, sampling
from scoregeo.scores.objectives import geometric_sigmas, sigma_max_from_data
from scoregeo.scores.sde import VESDE, VPSDE

F64 = torch.float64


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    target = datasets.toy_mixture("8gaussians", dtype=F64)
    truth = target.sample(args.n, torch.Generator().manual_seed(args.seed + 100))
    sigma_max = sigma_max_from_data(target.sample(5000, torch.Generator().manual_seed(args.seed + 200)))

    def sw(x):
        if not bool(torch.isfinite(x).all()):
            return float("nan")
        return float(sg.evaluation.sliced_wasserstein(x, truth, 512, torch.Generator().manual_seed(7)))

    floors = torch.tensor([sw(target.sample(args.n, torch.Generator().manual_seed(args.seed + 300 + k)))
                           for k in range(max(args.repeats, 5))])
    floor = float(floors.mean())

    def ve_score(x, sigma):
        return target.noisy_score(x, sigma)

    def vp_score(x, sigma):
        return target.noisy_score(x, sigma, torch.sqrt(1 - sigma**2))

    print(f"scoregeo sampler benchmark: torch {torch.__version__}, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"target: 8-Gaussian mixture (radius 2, σ = 0.25), exact noisy scores, float64, {args.n} samples; "
          f"σ_max = {sigma_max:.2f}")
    print(f"floor (SW2 of two exact sample sets, mean of {len(floors)}): {floor:.4f} ± {float(floors.std()):.4f}\n")

    rows = []

    def record(name, budget, fn):
        values, seconds, bad = [], 0.0, 0
        for k in range(args.repeats):
            gen = torch.Generator().manual_seed(args.seed + k)
            start = time.perf_counter()
            x, info = fn(gen)
            seconds += time.perf_counter() - start
            values.append(sw(x))
            bad += info.n_nonfinite
        value, spread = float(torch.tensor(values).mean()), float(torch.tensor(values).std())
        rows.append((name, budget, info.score_evals, seconds / args.repeats, value, spread, bad))
        print(f"  {name:<22} {budget:<10} evals {info.score_evals:6d}  {seconds / args.repeats:6.2f} s  "
              f"SW2 {value:.4f} ± {spread:.4f} ({value / floor:.2f}× floor)", flush=True)

    sigmas = geometric_sigmas(0.01, sigma_max, 10, dtype=F64)
    steps_per_level = [1, 3, 10, 30] if args.quick else [2, 5, 10, 20, 50, 100]
    for T in steps_per_level:
        def annealed(gen, T=T):
            x0 = sigma_max * torch.randn(args.n, 2, generator=gen, dtype=F64)
            return sampling.annealed_langevin(ve_score, x0, sigmas, step=0.05 * 0.01**2, n_steps_each=T,
                                              generator=gen)
        record("annealed Langevin", f"T={T}", annealed)

    pc_steps = [10, 30, 100] if args.quick else [10, 20, 50, 100, 200, 500]
    ve, vp = VESDE(0.01, sigma_max), VPSDE()
    for name, sde, score in (("PC, VE SDE", ve, ve_score), ("PC, VP SDE", vp, vp_score)):
        for N in pc_steps:
            record(name, f"N={N}", lambda gen, N=N, sde=sde, score=score: sampling.pc_sampler(
                score, sde, (args.n, 2), n_steps=N, generator=gen, dtype=F64))
    for tol in ([1e-3, 1e-5] if args.quick else [1e-2, 1e-3, 1e-5]):
        record("prob. flow, VP SDE", f"tol={tol:g}", lambda gen, tol=tol: sampling.probability_flow(
            vp_score, vp, (args.n, 2), rtol=tol, atol=tol, generator=gen, dtype=F64))

    print("\nSliced W2 to the truth against score evaluations")
    header = (f"{'sampler':<22} | {'setting':<10} | {'evals':>6} | {'seconds':>7} | {'SW2 (mean ± sd)':>17} | "
              f"{'SW2/floor':>9} | NaN")
    print(header)
    print("-" * len(header))
    for name, budget, evals, seconds, value, spread, bad in rows:
        print(f"{name:<22} | {budget:<10} | {evals:6d} | {seconds:7.2f} | {value:8.4f} ± {spread:6.4f} | "
              f"{value / floor:9.2f} | {bad}")
    print("\nCheapest setting within 1.5× the floor:")
    for name in dict.fromkeys(r[0] for r in rows):
        good = [r for r in rows if r[0] == name and math.isfinite(r[4]) and r[4] <= 1.5 * floor]
        best = min(good, key=lambda r: r[2]) if good else None
        print(f"  {name:<22} " + (f"{best[1]} ({best[2]} evaluations, {best[3]:.2f} s)" if best else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
