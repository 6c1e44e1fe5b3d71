"""Overhead of the score-source adapters over calling the network directly.

For a randomly initialised diffusers ``UNet2DModel`` (3×32×32, block channels
(32, 64), attention in the lower block: a small CIFAR-size model) and a batch
of points, times in interleaved rounds (medians of per-round ratios, so load
bursts hit every candidate of a round alike):

* ``direct``: ``unet(x, t).sample`` then the ε → score conversion written by hand
  (−ε/√(1 − ᾱ_t)), what a user would write without scoregeo;
* ``DiffusersScore``: ``source(x)`` on the same image-shaped points;
* the same on flat points (..., d) (one reshape more).

Each with the same attention kernel on both sides: PyTorch's default fused
kernel (``attention="default"``) and the math kernel (scoregeo's default, needed
for second derivatives), and forward only (``torch.no_grad``) as well as with a
vector-Jacobian product (what the geometry engine mostly does).
Target (issue 12 §1): the adapter adds at most 5 %.

    .venv/bin/python benchmarks/score_sources.py [--batch 8] [--size 32] [--rounds 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import sys
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import scoregeo as sg

TARGET = 1.05


def make_unet(size: int):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=size, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    return unet.eval().requires_grad_(False)


def measure(candidates: dict, rounds: int, min_time: float) -> dict[str, list[float]]:
    per_call = {}
    for name, fn in candidates.items():
        fn()
        t0 = time.perf_counter()
        fn()
        per_call[name] = time.perf_counter() - t0
    calls = {name: max(1, int(min_time / rounds / max(t, 1e-6))) for name, t in per_call.items()}
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            samples[name].append((time.perf_counter() - t0) / calls[name])
    return samples


def ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(num, den))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--timestep", type=int, default=300)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--min-time", type=float, default=3.0, help="seconds of measurement per candidate")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from diffusers import DDPMScheduler

    print(f"score-source overhead: torch {torch.__version__}, {args.threads} thread(s), "
          f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    unet, scheduler = make_unet(args.size), DDPMScheduler(num_train_timesteps=1000)
    t = args.timestep
    scale = math.sqrt(1 - float(scheduler.alphas_cumprod[t]))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    flat = x.reshape(args.batch, -1)
    steps = torch.full((args.batch,), t, dtype=torch.long)
    cotangent = torch.randn_like(x)
    print(f"UNet2DModel 3×{args.size}×{args.size}, {sum(p.numel() for p in unet.parameters()):,} parameters; "
          f"batch {args.batch}; float32; DDPM, t = {t}\n")
    rows, ok = [], True
    for attention in ("default", "math"):
        source = sg.DiffusersScore(unet, scheduler, t, attention=attention)
        backend = (lambda: sdpa_kernel([SDPBackend.MATH])) if attention == "math" else contextlib.nullcontext

        def direct(points=x):
            with backend():
                return -unet(points, steps).sample / scale

        assert torch.allclose(direct(), source(x), rtol=1e-5, atol=1e-6)
        for mode in ("forward", "vjp"):
            if mode == "forward":
                def run(fn, points):
                    with torch.no_grad():
                        return fn(points)
            else:
                def run(fn, points):
                    leaf = points.detach().requires_grad_()
                    return torch.autograd.grad(fn(leaf), leaf, cotangent.reshape(points.shape))[0]
            samples = measure({
                "direct": lambda: run(direct, x),
                "source (images)": lambda: run(source, x),
                "source (flat)": lambda: run(source, flat),
            }, args.rounds, args.min_time * 3)
            base = samples["direct"]
            for name in ("source (images)", "source (flat)"):
                r = ratio(samples[name], base)
                ok &= r <= TARGET
                rows.append((attention, mode, name, statistics.median(base), statistics.median(samples[name]), r))
    print("| attention | pass | adapter | direct | adapter time | ratio |")
    print("|---|---|---|---:|---:|---:|")
    for attention, mode, name, base, mine, r in rows:
        print(f"| {attention} | {mode} | {name} | {base * 1e3:.2f} ms | {mine * 1e3:.2f} ms | {r:.3f} |")
    print(f"\nTarget: adapter ≤ {TARGET:.2f}× the direct call: {'MET' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
