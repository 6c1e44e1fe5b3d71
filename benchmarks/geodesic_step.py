"""Cost of one geodesic step of the score metric g = αI + λ s sᵀ.

Compares, for an MLP score network s: R^d → R^d and a batch of points:

* **closed**: ``ScoreMetric._acceleration`` (src/scoregeo/metrics/score.py), the
  closed form ẍ = −G⁻¹ λ[(vᵀJv) s + (s·v)(J − Jᵀ)v] from one VJP of s and one
  VJP of that VJP. This is what the solvers call in their inner loops.
* **forward**: one plain forward pass of the score network (``torch.no_grad``).
* **dense Γ** (the "dense" reference of the targets): the same metric written as
  a ``MatrixMetric(metric._matrix, d)``, full Christoffel symbols Γ^k_ij by
  autodiff (d JVPs of G, a (B, d, d, d) tensor), contracted as −Γ(v, v).
* **generic G**: the base-class ``Metric._acceleration`` on that MatrixMetric,
  one JVP and one VJP of the d×d matrix G(x) and a Cholesky solve (no d³
  tensor, but O(d²) memory and an O(d³) solve per point).

Alternative implementations of the closed form (benchmark-only, for comparison,
all sharing the same Sherman–Morrison tail):

* ``jvp+vjp``         torch.func.jvp for Jv and a separate torch.func.vjp for Jᵀv
                      (two primal passes);
* ``vjp(jvp)``        torch.func.vjp of a jvp with has_aux: one dual forward
                      pass gives s and Jv, the backward of the primal gives Jᵀv;
* ``fwAD+grad``       the same idea with torch.autograd.forward_ad dual tensors
                      and torch.autograd.grad (no torch.func);
* ``grad²``           the double-backward trick with torch.autograd.grad (the
                      current method without torch.func);
* ``3-pass floor``    a hand-written sweep through this very MLP with no autodiff
                      at all: primal and tangent stacked in one pass, then the
                      adjoint pass. It is the cheapest way to get s, Jv and Jᵀv:
                      every Linear is applied three times (s, Jv, Jᵀv), so the
                      matrix products alone cost three forwards. It only works
                      for a Sequential of Linear and SiLU layers, so it is a
                      measured lower bound, not a usable method.

Targets: closed form ≤ 3× one score forward at every d; ≥ 50× faster than the
dense Γ reference at d = 64. A float64 check at small d verifies that the closed
form, dense Γ, generic G and every alternative agree.

    .venv/bin/python benchmarks/geodesic_step.py [--dims 2 16 64 256 3072] [--batch 64]
        [--dtype float32|float64] [--width 256] [--depth 3] [--min-time 0.5] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.func import jvp, vjp

import scoregeo as sg

THREADS = 2
TARGET_FORWARD_RATIO = 3.0
TARGET_DENSE_SPEEDUP = 50.0
TARGET_DENSE_DIM = 64
FLOOR = "3-pass floor"


# ----------------------------------------------------------------------------- score network
def make_mlp(d: int, width: int, depth: int, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """MLP score network d → width (SiLU) ×depth → d; not a gradient field, so J is not symmetric."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    fan_in = d
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), nn.SiLU()]
        fan_in = width
    layers.append(nn.Linear(fan_in, d))
    net = nn.Sequential(*layers).to(dtype)
    for p in net.parameters():
        p.requires_grad_(False)  # we differentiate with respect to x only
    return net


# ----------------------------------------------------------------------------- closed-form variants
def _tail(s, Jv, Jtv, v, lam, alpha):
    """−G⁻¹ Γ♭(v, v) from s, Jv, Jᵀv (Sherman–Morrison), same as ScoreMetric."""
    vJv = (v * Jv).sum(-1, keepdim=True)
    s_dot_v = (s * v).sum(-1, keepdim=True)
    lowered = lam * (vJv * s + s_dot_v * (Jv - Jtv))
    s_dot_b = (s * lowered).sum(-1, keepdim=True)
    denom = alpha + lam * (s * s).sum(-1, keepdim=True)
    return -(lowered - lam * s * s_dot_b / denom) / alpha


def accel_jvp_vjp(score, x, v, lam, alpha):
    s, Jv = jvp(score, (x,), (v,))
    _, pullback = vjp(score, x)
    (Jtv,) = pullback(v)
    return _tail(s, Jv, Jtv, v, lam, alpha)


def accel_vjp_of_jvp(score, x, v, lam, alpha):
    def primal_and_tangent(y):
        s, Jv = jvp(score, (y,), (v,))
        return s, Jv

    s, pullback, Jv = vjp(primal_and_tangent, x, has_aux=True)
    (Jtv,) = pullback(v)
    return _tail(s, Jv, Jtv, v, lam, alpha)


def accel_forward_ad(score, x, v, lam, alpha):
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        with fwAD.dual_level():
            out = score(fwAD.make_dual(xg, v))
            s, Jv = fwAD.unpack_dual(out)
        (Jtv,) = torch.autograd.grad(s, xg, v)
    return _tail(s.detach(), Jv, Jtv, v, lam, alpha)


def accel_double_grad(score, x, v, lam, alpha):
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        vg = v.detach().requires_grad_(True)
        s = score(xg)
        (Jtv,) = torch.autograd.grad(s, xg, vg, create_graph=True)
        (Jv,) = torch.autograd.grad(Jtv, vg, v)
    return _tail(s.detach(), Jv, Jtv.detach(), v, lam, alpha)


def accel_three_pass_floor(net: nn.Sequential, x, v, lam, alpha):
    """s, Jv, Jᵀv of a Sequential of Linear/SiLU by hand: [x; v] forward, then v backward."""
    batch = x.shape[0]
    stacked, slopes = torch.cat([x, v]), []
    for layer in net:
        if isinstance(layer, nn.Linear):
            stacked = stacked @ layer.weight.T
            stacked[:batch] += layer.bias
        else:
            pre = stacked[:batch]
            slope = torch.ops.aten.silu_backward(torch.ones_like(pre), pre)  # SiLU'(pre)
            stacked = torch.cat([nn.functional.silu(pre), stacked[batch:] * slope])
            slopes.append(slope)
    adjoint = v
    for layer in reversed(net):
        adjoint = adjoint @ layer.weight if isinstance(layer, nn.Linear) else adjoint * slopes.pop()
    return _tail(stacked[:batch], stacked[batch:], adjoint, v, lam, alpha)


ALTERNATIVES = {
    "jvp+vjp": accel_jvp_vjp,
    "vjp(jvp)": accel_vjp_of_jvp,
    "fwAD+grad": accel_forward_ad,
    "grad²": accel_double_grad,
    FLOOR: accel_three_pass_floor,
}


# ----------------------------------------------------------------------------- dense references
def dense_gamma_accel(dense: sg.MatrixMetric, x, v):
    gamma = dense._christoffel(x)  # (B, d, d, d), Γ[b, k, i, j]
    return -torch.einsum("bkij,bi,bj->bk", gamma, v, v)


def generic_accel(dense: sg.MatrixMetric, x, v):
    return dense._acceleration(x, v)


def dense_gamma_bytes(B, d, itemsize):
    # Γ, ∂G (B, d, d, d) and ~4 temporaries of that size (permutes, lowered, einsum)
    return 6 * B * d**3 * itemsize


def generic_bytes(B, d, itemsize):
    # G, its tangent, the cotangent v vᵀ, its pullback through s sᵀ, Cholesky factor, ...
    return 8 * B * d**2 * itemsize


def generic_flops(B, d):
    return B * d**3 / 3  # Cholesky per point


# ----------------------------------------------------------------------------- timing
def measure(cands: dict, min_time: float, rounds: int) -> dict:
    """Median seconds per call of each candidate, measured round-robin.

    The machine may be shared, so candidates are timed in interleaved rounds
    (each round times every candidate once, in a block of calls lasting about
    ``min_time / rounds`` seconds) after a warm-up; the result per candidate is
    the median over rounds, and ratios are taken per round (see ``ratio``), so a
    burst of outside load hits every candidate of a round alike. Calls slower
    than 1 s get 3 rounds of 1 call.
    """
    per_call = {}
    for name, fn in cands.items():
        fn()  # warm-up
        t0 = time.perf_counter()
        fn()
        per_call[name] = time.perf_counter() - t0
    block = max(min_time / rounds, 1e-3)
    n_calls = {k: max(1, int(block / max(t, 1e-7))) for k, t in per_call.items()}
    samples: dict[str, list[float]] = {k: [] for k in cands}
    for r in range(rounds):
        for name, fn in cands.items():
            if per_call[name] > 1.0 and r >= 3:
                continue
            n = n_calls[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n)
    return samples


def med(samples: list[float] | None) -> float | None:
    return statistics.median(samples) if samples else None


def ratio(num: list[float] | None, den: list[float] | None) -> float | None:
    """Median over rounds of num/den (rounds paired while both have samples)."""
    if not num or not den:
        return None
    return statistics.median(a / b for a, b in zip(num, den))


def fmt_time(t: float | None) -> str:
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return "—"
    if t < 1e-3:
        return f"{t * 1e6:.0f} µs"
    if t < 1.0:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.2f} s"


def fmt_ratio(r: float | None) -> str:
    return "—" if r is None else (f"{r:.2f}" if r < 100 else f"{r:.0f}")


# ----------------------------------------------------------------------------- correctness
def rel_err(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def check_agreement(width: int, depth: int, batch: int, dims=(2, 5, 16)) -> bool:
    """Float64: closed form == dense Γ == generic G == every alternative (small d)."""
    print("Agreement check (float64, MLP score, not a gradient field):")
    ok = True
    for d in dims:
        net = make_mlp(d, width, depth, torch.float64, seed=1)
        metric = sg.ScoreMetric(net, d, lam=10.0, alpha=0.5)
        dense = sg.MatrixMetric(metric._matrix, d)
        gen = torch.Generator().manual_seed(d)
        x = torch.randn(batch, d, generator=gen, dtype=torch.float64)
        v = torch.randn(batch, d, generator=gen, dtype=torch.float64)
        ref = metric.acceleration(x, v)  # public API, validated path
        errs = {
            "dense Γ": rel_err(dense_gamma_accel(dense, x, v), ref),
            "generic G": rel_err(generic_accel(dense, x, v), ref),
            "christoffel()": rel_err(-torch.einsum("bkij,bi,bj->bk", dense.christoffel(x), v, v), ref),
        }
        for name, fn in ALTERNATIVES.items():
            errs[name] = rel_err(fn(net, x, v, metric.lam, metric.alpha), ref)
        worst = max(errs.values())
        passed = worst < 1e-10
        ok &= passed
        detail = ", ".join(f"{k} {e:.1e}" for k, e in errs.items())
        print(f"  d={d:<3d} max rel. error {worst:.1e} {'ok' if passed else 'FAIL'}  ({detail})")
    return ok


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=[2, 16, 64, 256, 3072])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=3, help="number of hidden layers")
    p.add_argument("--lam", type=float, default=10.0)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--min-time", type=float, default=0.5, help="seconds of measurement per candidate and d")
    p.add_argument("--rounds", type=int, default=7, help="interleaved measurement rounds")
    p.add_argument("--mem-budget-gb", type=float, default=4.0, help="skip dense references above this estimate")
    p.add_argument("--threads", type=int, default=THREADS, help="torch threads (the targets are stated for 2)")
    p.add_argument("--no-alternatives", action="store_true", help="time only the current closed form")
    p.add_argument("--quick", action="store_true", help="short measurements")
    args = p.parse_args(argv)
    if args.quick:
        args.min_time, args.rounds = 0.1, 3

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    itemsize = torch.tensor([], dtype=dtype).element_size()
    budget = args.mem_budget_gb * 2**30

    print(
        f"scoregeo geodesic step benchmark: torch {torch.__version__}, {args.threads} threads, "
        f"{platform.processor() or platform.machine()}, python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"score = MLP d→{args.width}→…({args.depth} hidden, SiLU)→d; batch {args.batch} points; {args.dtype}; "
        f"λ={args.lam}, α={args.alpha}; median of repeats after warm-up\n"
    )

    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) - args.threads + 0.5:
        print(f"WARNING: load average {load:.1f} leaves fewer than {args.threads} idle CPUs: a {args.threads}-thread "
              "pool stalls on every parallel op while other processes hold its CPUs, so times are inflated and "
              "noisy (interleaved rounds keep the ratios comparable, not the absolute times)\n")
    agree = check_agreement(args.width, args.depth, batch=8)
    print()

    rows = []
    for d in args.dims:
        net = make_mlp(d, args.width, args.depth, dtype)
        metric = sg.ScoreMetric(net, d, lam=args.lam, alpha=args.alpha)
        dense = sg.MatrixMetric(metric._matrix, d)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(args.batch, d, generator=gen, dtype=dtype)
        v = torch.randn(args.batch, d, generator=gen, dtype=dtype)
        ref = metric._acceleration(x, v).detach()
        tol = 1e-4 if dtype == torch.float32 else 1e-10

        def forward():
            with torch.no_grad():
                return net(x)

        cands = {"forward": forward, "closed": lambda: metric._acceleration(x, v)}
        notes = []
        need = dense_gamma_bytes(args.batch, d, itemsize)
        if need > budget:
            notes.append(f"dense Γ skipped: ~{need / 2**30:.0f} GB for (B,d,d,d) tensors > {args.mem_budget_gb:g} GB budget")
        else:
            cands["dense Γ"] = lambda: dense_gamma_accel(dense, x, v)
            if d <= 64:  # cross-check in the benchmark dtype too
                err = rel_err(dense_gamma_accel(dense, x, v), ref)
                if err > 100 * tol:
                    notes.append(f"dense Γ differs from closed form by {err:.1e}")
        need = generic_bytes(args.batch, d, itemsize)
        if need > budget:
            notes.append(f"generic G skipped: ~{need / 2**30:.1f} GB for (B,d,d) matrices > {args.mem_budget_gb:g} GB budget")
        elif generic_flops(args.batch, d) > 2e11:
            notes.append(f"generic G skipped: {generic_flops(args.batch, d):.0e} flops of Cholesky")
        else:
            cands["generic G"] = lambda: generic_accel(dense, x, v)
        if not args.no_alternatives:
            for name, fn in ALTERNATIVES.items():
                err = rel_err(fn(net, x, v, metric.lam, metric.alpha), ref)
                if err > tol:
                    notes.append(f"alternative {name} differs from the closed form by {err:.1e}")
                cands[name] = lambda fn=fn: fn(net, x, v, metric.lam, metric.alpha)

        samples = measure(cands, args.min_time * len(cands), args.rounds)
        rows.append(dict(d=d, samples=samples, notes=notes))
        print(f"  d={d:<5d} " + ", ".join(f"{k} {fmt_time(med(t))}" for k, t in samples.items()), flush=True)

    # ---------------------------------------------------------------- table
    print("\nPer-step time (one acceleration for the whole batch; ratios are medians of per-round ratios)")
    header = (f"{'d':>5} | {'closed':>9} | {'forward':>9} | {'closed/fwd':>10} | {'dense Γ':>9} | "
              f"{'dense/closed':>12} | {'generic G':>9} | {'generic/closed':>14}")
    print(header)
    print("-" * len(header))
    for r in rows:
        S = r["samples"]
        r["r_fwd"] = ratio(S["closed"], S["forward"])
        r["r_gamma"] = ratio(S.get("dense Γ"), S["closed"])
        r["r_gen"] = ratio(S.get("generic G"), S["closed"])
        print(
            f"{r['d']:>5} | {fmt_time(med(S['closed'])):>9} | {fmt_time(med(S['forward'])):>9} | "
            f"{fmt_ratio(r['r_fwd']):>10} | {fmt_time(med(S.get('dense Γ'))):>9} | {fmt_ratio(r['r_gamma']):>12} | "
            f"{fmt_time(med(S.get('generic G'))):>9} | {fmt_ratio(r['r_gen']):>14}"
        )
    for r in rows:
        for n in r["notes"]:
            print(f"  d={r['d']}: {n}")

    if not args.no_alternatives:
        names = ["closed", *ALTERNATIVES]
        print("\nClosed-form implementations (per step; in parentheses: ratio to one score forward)")
        print("  closed = current double-vjp of ScoreMetric._acceleration")
        header = f"{'d':>5} | " + " | ".join(f"{n:>20}" for n in names)
        print(header)
        print("-" * len(header))
        best = {}
        for r in rows:
            S = r["samples"]
            cells = [f"{fmt_time(med(S[n]))} ({ratio(S[n], S['forward']):.2f}×)" for n in names]
            print(f"{r['d']:>5} | " + " | ".join(f"{c:>20}" for c in cells))
            b = min((n for n in names if n != FLOOR), key=lambda n: med(S[n]))
            best[r["d"]] = (b, ratio(S["closed"], S[b]))
        print("  fastest usable method per d: " + ", ".join(f"d={d}: {b} ({s:.2f}× faster than current)" if b != "closed"
                                              else f"d={d}: current" for d, (b, s) in best.items()))

    # ---------------------------------------------------------------- targets
    print("\nTargets")
    worst = max(rows, key=lambda r: r["r_fwd"])
    failing = [r["d"] for r in rows if r["r_fwd"] > TARGET_FORWARD_RATIO]
    print(
        f"  closed form ≤ {TARGET_FORWARD_RATIO:g}× one score forward at every d: {'MET' if not failing else 'NOT MET'} "
        f"(worst {worst['r_fwd']:.2f}× at d={worst['d']}" + (f"; above target at d={failing}" if failing else "") + ")"
    )
    if not args.no_alternatives:
        floors = {r["d"]: ratio(r["samples"][FLOOR], r["samples"]["forward"]) for r in rows}
        print(f"  lower bound ({FLOOR}, hand-written, no autodiff): "
              + ", ".join(f"{f:.2f}× at d={d}" for d, f in floors.items())
              + (f"; the {TARGET_FORWARD_RATIO:g}× target is below it at d={[d for d, f in floors.items() if f > TARGET_FORWARD_RATIO]}"
                 if any(f > TARGET_FORWARD_RATIO for f in floors.values()) else ""))
    at = [r for r in rows if r["d"] == TARGET_DENSE_DIM]
    if at and at[0]["r_gamma"]:
        s = at[0]["r_gamma"]
        extra = f"; generic G is {at[0]['r_gen']:.1f}× the closed form" if at[0]["r_gen"] else ""
        print(f"  ≥ {TARGET_DENSE_SPEEDUP:g}× faster than dense Γ at d={TARGET_DENSE_DIM}: "
              f"{'MET' if s >= TARGET_DENSE_SPEEDUP else 'NOT MET'} ({s:.0f}×{extra})")
    else:
        print(f"  ≥ {TARGET_DENSE_SPEEDUP:g}× faster than dense at d={TARGET_DENSE_DIM}: not measured")
    print(f"  float64 agreement of closed form, dense Γ, generic G and alternatives: {'ok' if agree else 'FAILED'}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
