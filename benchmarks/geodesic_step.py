"""Cost of one geodesic step of the score metric g = αI + λ s sᵀ, as a ratio to one score forward.

For an MLP score network s: R^d → R^d (not a gradient field, so J = ∂s/∂x is not
symmetric) and a batch of points, every candidate is timed in the same run as
one plain forward pass of the network (``torch.no_grad``), and the table reports
their ratio (the median of per-round ratios, rounds interleaved):

* **closed**: ``ScoreMetric._acceleration`` (src/scoregeo/metrics/score.py), what
  the solvers call: ẍ = −G⁻¹ λ[(vᵀJv) s + (s·v)(J − Jᵀ)v] with s, Jᵀv, Jv from
  one forward pass, its backward pass with a graph (Jᵀu as a function of u) and
  the backward pass of that graph at v (= J v), then the Sherman–Morrison solve
  folded into four dot products per point.
* **symmetric**: the same metric with ``symmetric_jacobian=True`` (for exact
  scores ∇log p): ẍ = −λ(vᵀJv)/(α + λ|s|²) s from one forward and one backward
  pass. Timed on the same network for its cost only: on this non-gradient field
  its value is not the acceleration (the agreement check verifies it on a
  gradient field).
* **dense Γ**: the metric written as ``MatrixMetric(metric._matrix, d)``, full
  Christoffel symbols by autodiff (a (B, d, d, d) tensor) contracted as −Γ(v, v).
* **generic G**: that MatrixMetric's dense ``_acceleration`` (one JVP and one VJP
  of the d×d matrix G(x), one Cholesky solve per point).

Alternative implementations of s, Jv, Jᵀv (benchmark-only, for comparison, all
sharing the closed form's tail):

* ``func vjp∘vjp``    torch.func.vjp of the score, then vjp of its pullback (the
                      method of ScoreMetric before this benchmark's round, still
                      its path under torch.func transforms);
* ``jvp+vjp``         torch.func.jvp for Jv and a separate torch.func.vjp for Jᵀv;
* ``vjp(jvp)``        torch.func.vjp of a jvp with has_aux;
* ``fwAD+grad``       torch.autograd.forward_ad dual tensors for (s, Jv), then
                      torch.autograd.grad for Jᵀv;
* ``3-pass floor``    a hand-written sweep through this very MLP with no autodiff
                      at all: primal and tangent stacked in one pass, then the
                      adjoint pass (every Linear applied three times: s, Jv,
                      Jᵀv). Works only for a Sequential of Linear and SiLU: a
                      measured lower bound, not a usable method.

Clocks: wall time always; with one thread also the process CPU time, which
other processes on a shared machine barely disturb (the wall time of a
two-thread pool stalls whenever another process holds one of its CPUs).

Target (issue 11 §6): closed ≤ 4× one score forward at d = 64 and 3072 (batch
256, float32, MLP d→256→256→d). A float64 check at small d verifies that the
closed form, dense Γ, generic G and every alternative agree, and that the
symmetric shortcut equals the closed form on a gradient field.

    .venv/bin/python benchmarks/geodesic_step.py [--dims 64 3072] [--batch 256] [--threads 1 2]
        [--dtype float32|float64] [--width 256] [--depth 2] [--min-time 0.5] [--rounds 9] [--quick]
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

TARGET_FORWARD_RATIO = 4.0
TARGET_DIMS = (64, 3072)
TARGET_DENSE_SPEEDUP = 50.0
TARGET_DENSE_DIM = 64
FLOOR = "3-pass floor"


# ----------------------------------------------------------------------------- score networks
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


def make_gradient_field(d: int, width: int, depth: int, dtype: torch.dtype, seed: int = 2):
    """s = ∇ log p for log p(x) = −|x|²/2 + MLP(x) (scalar output): an exact score, J symmetric."""
    potential = make_mlp(d, width, depth, dtype, seed)
    potential[-1] = nn.Linear(width, 1).to(dtype).requires_grad_(False)
    return sg.score_of(lambda x: -0.5 * (x * x).sum(-1) + potential(x).squeeze(-1))


# ----------------------------------------------------------------------------- closed-form variants
def _tail(s, Jv, Jtv, v, lam, alpha):
    """−G⁻¹ Γ♭(v, v) from s, Jv, Jᵀv written term by term (Sherman–Morrison), for the alternatives."""
    vJv = (v * Jv).sum(-1, keepdim=True)
    s_dot_v = (s * v).sum(-1, keepdim=True)
    lowered = lam * (vJv * s + s_dot_v * (Jv - Jtv))
    s_dot_b = (s * lowered).sum(-1, keepdim=True)
    denom = alpha + lam * (s * s).sum(-1, keepdim=True)
    return -(lowered - lam * s * s_dot_b / denom) / alpha


def accel_func_vjp_vjp(score, x, v, lam, alpha):
    s, pullback = vjp(score, x)
    Jtv, transpose_of_pullback = vjp(lambda u: pullback(u)[0], v)
    (Jv,) = transpose_of_pullback(v)
    return _tail(s, Jv, Jtv, v, lam, alpha)


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
    "func vjp∘vjp": accel_func_vjp_vjp,
    "jvp+vjp": accel_jvp_vjp,
    "vjp(jvp)": accel_vjp_of_jvp,
    "fwAD+grad": accel_forward_ad,
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
    """Seconds per call of each candidate, per round: {name: {"wall": [...], "cpu": [...]}}.

    The machine may be shared, so candidates are timed in interleaved rounds
    (each round times every candidate once, in a block of calls lasting about
    ``min_time / rounds`` seconds) after a warm-up; ratios are taken per round
    (see ``ratio``), so a burst of outside load hits every candidate of a round
    alike. "cpu" is the process CPU time (meaningful with one thread). Calls
    slower than 1 s get 3 rounds of 1 call.
    """
    per_call = {}
    for name, fn in cands.items():
        fn()  # warm-up
        t0 = time.perf_counter()
        fn()
        per_call[name] = time.perf_counter() - t0
    block = max(min_time / rounds, 1e-3)
    n_calls = {k: max(1, int(block / max(t, 1e-7))) for k, t in per_call.items()}
    samples: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in cands}
    for r in range(rounds):
        for name, fn in cands.items():
            if per_call[name] > 1.0 and r >= 3:
                continue
            n = n_calls[name]
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                fn()
            samples[name]["wall"].append((time.perf_counter() - w0) / n)
            samples[name]["cpu"].append((time.process_time() - c0) / n)
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
    """Float64: closed form == dense Γ == generic G == every alternative (small d); symmetric shortcut on ∇log p."""
    print("Agreement check (float64; MLP score, not a gradient field; and an exact score ∇log p for 'symmetric'):")
    ok = True
    for d in dims:
        net = make_mlp(d, width, depth, torch.float64, seed=1)
        metric = sg.ScoreMetric(net, d, lam=10.0, alpha=0.5)
        dense = sg.MatrixMetric(metric._matrix, d)
        gen = torch.Generator().manual_seed(d)
        x = torch.randn(batch, d, generator=gen, dtype=torch.float64)
        v = torch.randn(batch, d, generator=gen, dtype=torch.float64)
        ref = dense_gamma_accel(dense, x, v)  # the oracle: full Christoffel symbols by autodiff
        errs = {
            "closed": rel_err(metric.acceleration(x, v), ref),
            "generic G": rel_err(generic_accel(dense, x, v), ref),
            "christoffel()": rel_err(-torch.einsum("bkij,bi,bj->bk", dense.christoffel(x), v, v), ref),
        }
        for name, fn in ALTERNATIVES.items():
            errs[name] = rel_err(fn(net, x, v, metric.lam, metric.alpha), ref)
        exact = make_gradient_field(d, width, depth, torch.float64)
        sym = sg.ScoreMetric(exact, d, lam=10.0, alpha=0.5, symmetric_jacobian=True)
        sym_dense = sg.MatrixMetric(sym._matrix, d)
        errs["symmetric"] = rel_err(sym.acceleration(x, v), dense_gamma_accel(sym_dense, x, v))
        worst = max(errs.values())
        passed = worst < 1e-10
        ok &= passed
        detail = ", ".join(f"{k} {e:.1e}" for k, e in errs.items())
        print(f"  d={d:<3d} max rel. error {worst:.1e} {'ok' if passed else 'FAIL'}  ({detail})")
    return ok


# ----------------------------------------------------------------------------- one configuration
def run_dim(d: int, args, dtype, budget: float, with_dense: bool) -> dict:
    net = make_mlp(d, args.width, args.depth, dtype)
    metric = sg.ScoreMetric(net, d, lam=args.lam, alpha=args.alpha)
    symmetric = sg.ScoreMetric(net, d, lam=args.lam, alpha=args.alpha, symmetric_jacobian=True)
    dense = sg.MatrixMetric(metric._matrix, d)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, d, generator=gen, dtype=dtype)
    v = torch.randn(args.batch, d, generator=gen, dtype=dtype)
    ref = accel_func_vjp_vjp(net, x, v, args.lam, args.alpha).detach()  # independent autodiff route
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    itemsize = torch.tensor([], dtype=dtype).element_size()

    def forward():
        with torch.no_grad():
            return net(x)

    notes = []
    err = rel_err(metric._acceleration(x, v), ref)
    if err > tol:
        notes.append(f"closed form differs from torch.func vjp∘vjp by {err:.1e}")
    cands = {"forward": forward, "closed": lambda: metric._acceleration(x, v),
             "symmetric": lambda: symmetric._acceleration(x, v)}
    if with_dense:
        need = dense_gamma_bytes(args.batch, d, itemsize)
        if need > budget:
            notes.append(f"dense Γ skipped: ~{need / 2**30:.0f} GB for (B,d,d,d) tensors > {args.mem_budget_gb:g} GB")
        else:
            cands["dense Γ"] = lambda: dense_gamma_accel(dense, x, v)
        need = generic_bytes(args.batch, d, itemsize)
        if need > budget:
            notes.append(f"generic G skipped: ~{need / 2**30:.1f} GB for (B,d,d) matrices > {args.mem_budget_gb:g} GB")
        elif generic_flops(args.batch, d) > 2e11:
            notes.append(f"generic G skipped: {generic_flops(args.batch, d):.0e} flops of Cholesky")
        else:
            cands["generic G"] = lambda: generic_accel(dense, x, v)
    if not args.no_alternatives:
        for name, fn in ALTERNATIVES.items():
            err = rel_err(fn(net, x, v, metric.lam, metric.alpha), ref)
            if err > tol:
                notes.append(f"alternative {name} differs from torch.func vjp∘vjp by {err:.1e}")
            cands[name] = lambda fn=fn: fn(net, x, v, metric.lam, metric.alpha)
    samples = measure(cands, args.min_time * len(cands), args.rounds)
    print(f"  d={d:<5d} " + ", ".join(f"{k} {fmt_time(med(t['wall']))}" for k, t in samples.items()), flush=True)
    return dict(d=d, samples=samples, notes=notes)


def show(rows: list[dict], threads: int, alternatives: bool) -> dict:
    """Print the tables of one thread count; return {d: closed/forward ratio} on the clock used for the target."""
    clocks = ["wall", "cpu"] if threads == 1 else ["wall"]
    target_clock = clocks[-1]
    print(f"\n{threads} thread(s): per-step time (one acceleration for the whole batch) and ratio to one score forward "
          "in the same run (median of per-round ratios)" + ("; cpu = process CPU time" if threads == 1 else ""))
    names = ["closed", "symmetric", *(ALTERNATIVES if alternatives else [])]
    header = f"{'d':>5} | {'forward':>9} | " + " | ".join(f"{n:>20}" for n in names)
    for clock in clocks:
        print(f"[{clock}]")
        print(header)
        print("-" * len(header))
        for r in rows:
            S = r["samples"]
            cells = [f"{fmt_time(med(S[n][clock]))} ({fmt_ratio(ratio(S[n][clock], S['forward'][clock]))}×)" for n in names]
            print(f"{r['d']:>5} | {fmt_time(med(S['forward'][clock])):>9} | " + " | ".join(f"{c:>20}" for c in cells))
    dense_rows = [r for r in rows if "dense Γ" in r["samples"] or "generic G" in r["samples"]]
    for r in dense_rows:
        S = r["samples"]
        parts = [f"{n} {fmt_time(med(S[n]['wall']))} ({fmt_ratio(ratio(S[n]['wall'], S['closed']['wall']))}× closed)"
                 for n in ("dense Γ", "generic G") if n in S]
        print(f"  d={r['d']}: " + ", ".join(parts))
    for r in rows:
        for n in r["notes"]:
            print(f"  d={r['d']}: {n}")
    return {r["d"]: ratio(r["samples"]["closed"][target_clock], r["samples"]["forward"][target_clock]) for r in rows}


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=list(TARGET_DIMS))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=2, help="number of hidden layers")
    p.add_argument("--lam", type=float, default=10.0)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--min-time", type=float, default=0.5, help="seconds of measurement per candidate and d")
    p.add_argument("--rounds", type=int, default=9, help="interleaved measurement rounds")
    p.add_argument("--mem-budget-gb", type=float, default=2.0, help="skip dense references above this estimate")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts, one table each")
    p.add_argument("--no-alternatives", action="store_true", help="time only forward, closed and symmetric")
    p.add_argument("--quick", action="store_true", help="short measurements")
    args = p.parse_args(argv)
    if args.quick:
        args.min_time, args.rounds = 0.1, 3

    dtype = getattr(torch, args.dtype)
    print(
        f"scoregeo geodesic step benchmark: torch {torch.__version__}, threads {args.threads}, "
        f"{platform.processor() or platform.machine()}, python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"score = MLP d→{args.width}→…({args.depth} hidden, SiLU)→d; batch {args.batch} points; {args.dtype}; "
        f"λ={args.lam}, α={args.alpha}; medians over {args.rounds} interleaved rounds after warm-up\n"
    )
    torch.set_num_threads(1)
    agree = check_agreement(args.width, args.depth, batch=8)

    verdicts = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        load = os.getloadavg()[0]
        print(f"\n== {threads} thread(s); load average {load:.1f} on {os.cpu_count()} CPUs ==")
        if load > (os.cpu_count() or 1) - threads + 0.5:
            print(f"WARNING: the load leaves fewer than {threads} idle CPUs: wall times are inflated and noisy"
                  + (" (a thread pool stalls whenever another process holds one of its CPUs)" if threads > 1 else ""))
        rows = [run_dim(d, args, dtype, args.mem_budget_gb * 2**30, with_dense=threads == args.threads[0])
                for d in args.dims]
        verdicts[threads] = show(rows, threads, not args.no_alternatives)
        if not args.no_alternatives:
            floors = {r["d"]: ratio(r["samples"][FLOOR]["cpu" if threads == 1 else "wall"],
                                    r["samples"]["forward"]["cpu" if threads == 1 else "wall"]) for r in rows}
            print(f"  lower bound ({FLOOR}, hand-written, no autodiff): "
                  + ", ".join(f"{f:.2f}× at d={d}" for d, f in floors.items()))
        at = [r for r in rows if r["d"] == TARGET_DENSE_DIM and "dense Γ" in r["samples"]]
        if at:
            s = ratio(at[0]["samples"]["dense Γ"]["wall"], at[0]["samples"]["closed"]["wall"])
            print(f"  ≥ {TARGET_DENSE_SPEEDUP:g}× faster than dense Γ at d={TARGET_DENSE_DIM}: "
                  f"{'MET' if s >= TARGET_DENSE_SPEEDUP else 'NOT MET'} ({s:.0f}×)")

    print("\nTarget: closed ≤ "
          f"{TARGET_FORWARD_RATIO:g}× one score forward at d = {', '.join(map(str, TARGET_DIMS))} (batch 256, float32)")
    for threads, ratios in verdicts.items():
        clock = "process CPU time" if threads == 1 else "wall time"
        cells = ", ".join(f"{r:.2f}× at d={d}" + ("" if r <= TARGET_FORWARD_RATIO else " (above)")
                          for d, r in ratios.items())
        met = all(r <= TARGET_FORWARD_RATIO for d, r in ratios.items() if d in TARGET_DIMS)
        print(f"  {threads} thread(s), {clock}: {'MET' if met else 'NOT MET'} ({cells})")
    print(f"  float64 agreement of closed form, dense Γ, generic G, alternatives and symmetric: "
          f"{'ok' if agree else 'FAILED'}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
