"""High-dimensional boundary-value geodesics: scoregeo against the baselines users compare with (issue 11 §6).

Part 1, the symmetry oracle. A Gaussian mixture in R^d whose components have means Q mₖ in a
2-plane (Q a d×2 orthonormal frame) and covariances Q Aₖ Qᵀ + c²(I − QQᵀ); end points
Q a + b e with e a unit vector orthogonal to the plane (b ≠ 0: off the plane). The density
depends on the off-plane part only through its norm, so the distance of the score metric
g = αI + λ s sᵀ in R^d equals that of the 3-D mixture with means (mₖ, 0) and covariances
blockdiag(Aₖ, c²) between (a, b) points: an exact reference in any d. d ∈ {64, 784, 3072},
λ ∈ {10, 100}, α = 1, float64.

Part 2, a digits score model: a NoiseConditionalMLP trained by denoising score matching on the
bundled 8×8 digits (d = 64, values in [−1, 1]), score at σ ∈ {0.1, 0.3}, λ ∈ {10, 100, 1000},
16 pairs of digits of different classes. No closed form: lengths are compared with the L-BFGS
baseline's (negative = shorter than L-BFGS).

Solvers, all on the same pairs: scoregeo ``sg.geodesic`` (each solver of SCOREGEO_SOLVERS, all
pairs in one batched call), L-BFGS on the discrete energy with 64 interior points (strong
Wolfe, per pair, to its own gradient tolerance), Adam (lr 1e-2, 2000 iterations), geomstats 2.8
PathStraightening (d = 64 only). See ``baselines.py``.

Measures, the same for every solver: the length of a returned curve is the metric length of
its polyline (Gauss–Legendre on every segment, ``baselines.polyline_length``); a polyline is a
curve between the end points, so it is never shorter than the true distance. For an odd number
of returned points (scoregeo's 1025 samples of a smooth curve) the table uses the Richardson
extrapolation from all points and every other point, (4 L_n − L_(n+1)/2)/3, since the plain
polyline's own O(1/n²) error (up to 8e-6 at 1025 points) would hide the 1e-6 target; the plain
polyline errors are printed in the notes (see ``measured_length``). The relative
error is (length − reference) / reference; "wrong local" counts pairs above 1 % (another,
longer, local geodesic, or none). Score evaluations: points at which the score was evaluated
per pair (a counting wrapper around the score; a VJP/JVP counts its one forward evaluation;
batched calls: total / pairs). s/pair: wall time (batched calls: total / pairs).

    .venv/bin/python benchmarks/geodesic_highd.py                 # full run (~40 min on 2 cores)
    .venv/bin/python benchmarks/geodesic_highd.py --quick         # harness check (< 3 min)
    options: --dims 64 784 --lams 10 --pairs 8 --solvers auto newton energy --baselines lbfgs adam geomstats
             --threads 1 2 --parts oracle digits --digit-sigmas 0.1 --digit-lams 100 --digit-pairs 8 --digit-first 0
             --lbfgs-tol 1e-5 --lbfgs-max-iter 5000 --digits-lbfgs-max-iter 2000 --sg-timeout 1200
             --out FILE --no-write

Caches (nothing is downloaded): the digits model and the oracle references are kept in
$SCOREGEO_BENCH_CACHE (default /tmp/scoregeo-bench-cache); the references are keyed by a hash of
every source file of scoregeo (they depend on the collocation solver, the metrics and the shots
as much as on oracles.py: a cache keyed on oracles.py alone once served references computed by
an older solver, off by up to 1.6e-7), the model by its training settings.
"""

from __future__ import annotations

import os

os.environ.setdefault("GEOMSTATS_BACKEND", "pytorch")  # must precede any geomstats import

import argparse  # noqa: E402
import inspect  # noqa: E402
import math  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scoregeo as sg  # noqa: E402
from baselines import (  # noqa: E402
    CountingScore,
    adam_geodesic,
    geomstats_geodesic,
    lbfgs_geodesic,
    polyline_length,
    score_inner,
)
from timing import machine_header, torch_threads  # noqa: E402

# ============================================================================ configuration
# The scoregeo solvers: (label, keyword arguments of sg.geodesic). ``solver=`` is passed as
# ``method=`` while sg.geodesic does not take ``solver`` yet. n_points: samples of the returned
# curve, measured as a polyline like every other method (1025 points keep that measure's own
# discretisation well below 1e-6 for smooth curves; "energy" discretises with n_points itself,
# so it gets the baselines' 66).
SCOREGEO_SOLVERS = [
    ("auto", dict(solver="auto", n_points=1025)),
    ("newton", dict(solver="newton", n_points=1025)),
    ("collocation", dict(solver="collocation", n_points=1025)),
    ("shooting", dict(solver="shooting", n_points=1025)),
    ("energy", dict(solver="energy", n_points=66)),
]
DEFAULT_SOLVERS = ["auto", "newton"]
BASELINES = ["lbfgs", "adam", "geomstats"]
GEOMSTATS_MAX_DIM = 64

DTYPE = torch.float64
ALPHA = 1.0
WRONG_LOCAL = 0.01  # relative error above which a pair is in a wrong local geodesic
TARGET_ERR = 1e-6
N_INTERIOR = 64  # baselines' interior points
LBFGS_TOL = 1e-5  # scale-free gradient tolerance of the L-BFGS baseline (see baselines.lbfgs_geodesic); on an
# oracle pair going on to 1e-6 moved the length by 1e-7 relative and tripled the iterations (573 -> 1596)
LBFGS_MAX_ITER = 5000  # iteration cap of the L-BFGS baseline (a pair that reaches it counts as not converged)
DIGITS_LBFGS_MAX_ITER = 2000  # digits: L-BFGS did not reach its tolerance in 5000 iterations (45-167 s per pair on
# a loaded machine, lengths still moving), so the cap bounds the run; its length is then the reference to beat
SG_CALL_TIMEOUT = 1200  # seconds one batched scoregeo call may take before it counts as failed
GEOMSTATS_TIMEOUT = 120  # seconds per pair

FULL = dict(dims=[64, 784, 3072], lams=[10.0, 100.0], pairs=8, digit_sigmas=[0.1, 0.3],
            digit_lams=[10.0, 100.0, 1000.0], digit_pairs=16)
QUICK = dict(dims=[64], lams=[10.0], pairs=2, digit_sigmas=[0.3], digit_lams=[100.0], digit_pairs=2)

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(os.environ.get("SCOREGEO_BENCH_CACHE", "/tmp/scoregeo-bench-cache"))  # trained digits model
DIGITS_TRAIN = dict(steps=4000, batch_size=256, lr=1e-3, sigma_min=0.05, hidden=256, n_blocks=3, seed=0)


# ============================================================================ problems
@dataclass
class Problem:
    title: str
    d: int
    lam: float
    score: Callable[[torch.Tensor], torch.Tensor]  # plain score, (..., d) -> (..., d)
    x0: torch.Tensor  # (P, d)
    x1: torch.Tensor
    ref: torch.Tensor | None  # (P,) exact distances, or None
    notes: list = field(default_factory=list)


_REFERENCES: dict = {}  # (λ, pairs, seed) -> verified 3-D pairs and references (they do not depend on d)


def oracle_problem(d: int, lam: float, n_pairs: int, seed: int = 0) -> Problem:
    """The symmetry oracle of ``scoregeo.oracles``: the default problem lifted to R^d, verified references.

    Pairs: ``oracles.verified_pairs`` (samples of the 3-D mixture with z >= 0, so both end
    points are off the plane; candidates whose reference fails its checks are redrawn). The
    references are the shortest 3-D geodesics (``oracles.reference_distance``), the same for
    every d; only the random frame (Q, e) changes with d.
    """
    from scoregeo import oracles

    problem = oracles.default_problem(d, seed=seed, dtype=DTYPE)
    key = (lam, n_pairs, seed)
    if key not in _REFERENCES:
        _REFERENCES[key] = _cached_references(problem, lam, n_pairs, seed)
    a, b, distance, n_local, dropped, seconds = _REFERENCES[key]
    off = torch.stack([a[:, 2], b[:, 2]])
    note = (f"scoregeo.oracles.default_problem (means {oracles.DEFAULT_MEANS}, c = {oracles.DEFAULT_C}); pairs and "
            f"references by oracles.verified_pairs (computed once in {seconds:.0f} s and cached; {len(dropped)} candidates dropped as unverified); "
            f"off-plane parts of the end points {float(off.min()):.2f} … {float(off.max()):.2f}; distances "
            f"{float(distance.min()):.3f} … {float(distance.max()):.3f}; pairs with more than one local "
            f"geodesic (3-D): {int((n_local > 1).sum())}")
    return Problem(f"symmetry oracle, d = {d}, λ = {lam:g}, α = {ALPHA:g}", d, lam, problem.score,
                   problem.lift(a), problem.lift(b), distance.clone(), [note])


def _cached_references(problem, lam: float, n_pairs: int, seed: int):
    """oracles.verified_pairs, cached on disk in CACHE under a hash of scoregeo's sources (references take minutes)."""
    import hashlib

    import scoregeo
    from scoregeo import oracles

    sources = hashlib.sha1()
    for file in sorted(Path(scoregeo.__file__).parent.rglob("*.py")):
        sources.update(file.read_bytes())
    digest = sources.hexdigest()[:12]
    where = CACHE / f"oracle-refs-{digest}-lam{lam:g}-n{n_pairs}-seed{seed}.pt"
    if where.exists():
        try:
            c = torch.load(where)
            return c["a"], c["b"], c["distance"], c["n_local"], c["dropped"], c["seconds"]
        except Exception:  # noqa: BLE001 - unreadable cache: recompute
            pass
    t0 = time.perf_counter()
    a, b, ref, dropped = oracles.verified_pairs(problem, n_pairs, lam, ALPHA, seed=seed)
    c = dict(a=a, b=b, distance=ref.distance, n_local=ref.n_local, dropped=list(dropped),
             seconds=time.perf_counter() - t0)
    where.parent.mkdir(parents=True, exist_ok=True)
    torch.save(c, where)
    return c["a"], c["b"], c["distance"], c["n_local"], c["dropped"], c["seconds"]


def digits_problem(model, sigma: float, lam: float, n_pairs: int, seed: int = 1, first: int = 0) -> Problem:
    """Pairs first … first + n_pairs − 1 of one seeded sequence of digit pairs of different classes."""
    data, labels = sg.datasets.digits(dtype=DTYPE, return_labels=True)
    gen = torch.Generator().manual_seed(seed)
    i0, i1 = [], []
    while len(i0) < first + n_pairs:
        i, j = torch.randint(len(data), (2,), generator=gen).tolist()
        if labels[i] != labels[j]:
            i0.append(i)
            i1.append(j)
    i0, i1 = i0[first:], i1[first:]
    pairs = ", ".join(f"{int(labels[i])}→{int(labels[j])}" for i, j in zip(i0, i1))
    if first:
        pairs += f" (pairs {first + 1}–{first + n_pairs} of the sequence)"
    return Problem(f"digits score model, σ = {sigma:g}, λ = {lam:g}, α = {ALPHA:g}", 64, lam,
                   model.score_fn(sigma), data[i0], data[i1], None, [f"pairs (labels): {pairs}"])


def digits_model(quick: bool):
    """The digits score model, trained once and cached in CACHE (nothing is downloaded)."""
    cfg = DIGITS_TRAIN
    where = CACHE / f"digits-dsm-{cfg['steps']}-h{cfg['hidden']}-b{cfg['n_blocks']}-s{cfg['seed']}"
    try:
        model = sg.ScoreModel.load(where)
        note = f"digits model loaded from {where}"
    except Exception:  # noqa: BLE001 - not cached yet (or unreadable): train it
        from scoregeo.scores.networks import NoiseConditionalMLP

        data = sg.datasets.digits(dtype=torch.float32)
        torch.manual_seed(cfg["seed"])
        net = NoiseConditionalMLP(64, hidden=cfg["hidden"], n_blocks=cfg["n_blocks"])
        t0 = time.perf_counter()
        model = sg.train_score(data, "dsm", steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                               sigma_min=cfg["sigma_min"], network=net, seed=cfg["seed"], progress=False)
        model.save(where)
        note = f"digits model trained ({time.perf_counter() - t0:.0f} s) and cached in {where}"
    return model.to(dtype=DTYPE), (f"{note}: dsm, {cfg['steps']} steps, batch {cfg['batch_size']}, "
                                   f"NoiseConditionalMLP(64, hidden {cfg['hidden']}, {cfg['n_blocks']} blocks), "
                                   f"σ ∈ [{model.sigma_range[0]:.3g}, {model.sigma_range[1]:.3g}]")


# ============================================================================ running the solvers
@dataclass
class Row:
    solver: str
    seconds: torch.Tensor  # (P,) per pair
    evaluations: torch.Tensor  # (P,)
    length: torch.Tensor  # (P,) common polyline measure (NaN where none)
    converged: torch.Tensor  # (P,) bool
    notes: list = field(default_factory=list)
    plain_length: torch.Tensor | None = None  # (P,) plain polyline length (when ``length`` is extrapolated)


class CallTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise CallTimeout(f"more than {SG_CALL_TIMEOUT} s")


def scoregeo_kwargs(kw: dict) -> dict:
    """``solver=`` becomes ``method=`` while sg.geodesic does not accept ``solver`` yet."""
    kw = dict(kw)
    if "solver" in kw and "solver" not in inspect.signature(sg.geodesic).parameters:
        kw["method"] = kw.pop("solver")
    return kw


def measured_length(prob: Problem, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(length used in the table, plain polyline length, how): see the module docstring.

    The polyline length L_n of n samples of a smooth curve (uniform in its parameter) errs by
    O(1/n²): with 1025 samples of a converged geodesic that was up to 8e-6, above the 1e-6
    target. So when n is odd (every other point again ends at x1), the table uses the
    Richardson extrapolation (4 L_n − L_(n+1)/2) / 3 of the same Gauss–Legendre polyline
    measure, O(1/n⁴); with an even n (the baselines' 66 points, geomstats' 100 nodes) the plain
    polyline length (the baselines' curves are their polylines).
    """
    inner = score_inner(prob.score, prob.lam, ALPHA)
    points = points.detach().to(DTYPE)
    plain = polyline_length(inner, points)
    n = points.shape[-2]
    if n % 2 == 1 and n >= 5:
        half = polyline_length(inner, points[:, ::2])
        return (4 * plain - half) / 3, plain, f"Richardson-extrapolated polyline length of its {n} points"
    return plain, plain, f"polyline length of its {n} points"


def run_scoregeo(prob: Problem, label: str, kw: dict) -> Row:
    counter = CountingScore(prob.score)
    metric = sg.ScoreMetric(counter, prob.d, lam=prob.lam, alpha=ALPHA)
    kw = scoregeo_kwargs(kw)
    P = prob.x0.shape[0]
    notes = [f"sg.geodesic(metric, x0, x1, {', '.join(f'{k}={v!r}' for k, v in kw.items())}), all pairs in one call"]
    old = signal.signal(signal.SIGALRM, _on_alarm)
    t0 = time.perf_counter()
    try:
        signal.alarm(SG_CALL_TIMEOUT)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # non-convergence is counted, not printed
                path = sg.geodesic(metric, prob.x0, prob.x1, **kw)
        finally:
            signal.alarm(0)
    except Exception as exc:  # noqa: BLE001 - a failure of the solver under test
        seconds = time.perf_counter() - t0
        signal.signal(signal.SIGALRM, old)
        if not isinstance(exc, (CallTimeout, ValueError)):
            traceback.print_exc()
        msg = str(exc).splitlines()[0][:160] if str(exc) else ""
        nan = torch.full((P,), float("nan"), dtype=DTYPE)
        return Row(f"scoregeo {label}", torch.full((P,), seconds / P), nan, nan.clone(),
                   torch.zeros(P, dtype=torch.bool), notes + [f"exception: {type(exc).__name__}: {msg}"])
    seconds = time.perf_counter() - t0
    signal.signal(signal.SIGALRM, old)
    evals = counter.points / P
    length, plain, how = measured_length(prob, path.points)
    row = Row(f"scoregeo {label}", torch.full((P,), seconds / P), torch.full((P,), evals, dtype=DTYPE),
              length, path.converged.detach().clone(), notes + [f"length: {how}"], plain)
    own = path.length.detach().to(DTYPE)
    if prob.ref is not None:
        err = ((own - prob.ref) / prob.ref).abs()
        row.notes.append(f"its own Path.length: median error {err.median():.1e}, max {err.max():.1e}")
    else:
        diff = ((own - length) / length).abs()
        row.notes.append(f"its own Path.length vs the polyline measure: max rel. diff {diff.max():.1e}")
    for name in ("residual", "n_local", "evaluations"):
        value = getattr(path, name, None)
        if value is not None:
            v = value.detach().to(DTYPE)
            row.notes.append(f"Path.{name}: median {v.median():.2g}, max {v.max():.2g}")
    return row


def run_baseline(prob: Problem, name: str, max_iter: int | None = None) -> Row:
    counter = CountingScore(prob.score)
    inner = score_inner(counter, prob.lam, ALPHA)
    if name == "lbfgs":
        res = lbfgs_geodesic(inner, prob.x0, prob.x1, N_INTERIOR, tol=LBFGS_TOL, max_iter=max_iter or LBFGS_MAX_ITER,
                             counter=counter)
        label = "L-BFGS (64 interior, strong Wolfe)"
        extra = [f"iterations per pair: median {res.iterations.median():.0f}, max {res.iterations.max():.0f}"]
    elif name == "adam":
        res = adam_geodesic(inner, prob.x0, prob.x1, N_INTERIOR, lr=1e-2, steps=2000, tol=LBFGS_TOL, counter=counter)
        label = "Adam (lr 1e-2, 2000 it.)"
        extra = []
    elif name == "geomstats":
        res = geomstats_geodesic(counter, prob.lam, ALPHA, prob.x0, prob.x1, timeout=GEOMSTATS_TIMEOUT, counter=counter)
        label = "geomstats PathStraightening"
        extra = [f"L-BFGS-B iterations per pair: median {res.iterations.nanmedian():.0f}"]
    else:
        raise ValueError(name)
    length, plain, how = measured_length(prob, res.points)
    return Row(label, res.seconds, res.evaluations.to(DTYPE), length, res.converged,
               res.notes + extra + [f"length: {how}"], plain)


def solve_all(prob: Problem, solvers: list[str], baselines: list[str], lbfgs_max_iter: int | None = None) -> list[Row]:
    # untimed warm-up (first autograd and allocator calls of the process cost seconds)
    lbfgs_geodesic(score_inner(prob.score, prob.lam, ALPHA), prob.x0[:1], prob.x1[:1], N_INTERIOR, max_iter=5)
    rows = []
    for label, kw in SCOREGEO_SOLVERS:
        if label in solvers:
            rows.append(run_scoregeo(prob, label, kw))
            print(f"    {rows[-1].solver}: {rows[-1].seconds.mean():.3f} s/pair", flush=True)
    for name in baselines:
        if name == "geomstats" and prob.d > GEOMSTATS_MAX_DIM:
            continue
        try:
            rows.append(run_baseline(prob, name, lbfgs_max_iter))
        except Exception as exc:  # noqa: BLE001 - e.g. geomstats missing
            traceback.print_exc()
            P = prob.x0.shape[0]
            nan = torch.full((P,), float("nan"), dtype=DTYPE)
            rows.append(Row(name, nan, nan, nan, torch.zeros(P, dtype=torch.bool), [f"exception: {type(exc).__name__}: {exc}"]))
        print(f"    {rows[-1].solver}: {rows[-1].seconds.mean():.3f} s/pair", flush=True)
    return rows


# ============================================================================ tables
def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "n/a"


def _fmt(x: float, spec: str) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _table_start(prob: Problem, rows: list[Row], threads: int, header: str):
    """(pairs, the L-BFGS row or None, the table's first lines: title, notes, column header and rule)."""
    P = prob.x0.shape[0]
    lbfgs = next((r for r in rows if r.solver.startswith("L-BFGS")), None)
    out = [f"### {prob.title}, {P} pairs, {threads} thread(s), load average {_load()}", ""]
    out += [f"- {n}" for n in prob.notes]
    out += ["", header, "|---" + "|---:" * (header.count("|") - 2) + "|"]
    return P, lbfgs, out


def oracle_table(prob: Problem, rows: list[Row], threads: int) -> str:
    P, lbfgs, out = _table_start(prob, rows, threads, "| solver | s/pair | × L-BFGS time | score evals/pair | "
                                 "median rel. err | max rel. err | wrong local (>1 %) | converged |")
    t_lbfgs = float(lbfgs.seconds.mean()) if lbfgs else float("nan")
    notes = []
    for r in rows:
        err = (r.length - prob.ref) / prob.ref
        ok = torch.isfinite(err)
        aerr = err.abs()
        med = float(aerr[ok].median()) if ok.any() else float("nan")
        mx = float(aerr.max()) if ok.all() else float("inf") if ok.any() else float("nan")
        wrong = int((~ok | (err > WRONG_LOCAL)).sum())
        t = float(r.seconds.mean())
        out.append(f"| {r.solver} | {_fmt(t, '.3f')} | {_fmt(t / t_lbfgs, '.2f')} | "
                   f"{_fmt(float(r.evaluations.mean()), '.3g')} | {_fmt(med, '.1e')} | {_fmt(mx, '.1e')} | "
                   f"{wrong} | {int(r.converged.sum())}/{P} |")
        if bool((err < -1e-8).any()):
            notes.append(f"{r.solver}: {int((err < -1e-8).sum())} pairs SHORTER than the reference "
                         f"(min {float(err.min()):.1e}): check the reference")
        if not ok.all():
            notes.append(f"{r.solver}: {int((~ok).sum())} pairs without a curve (counted as wrong local)")
        if r.plain_length is not None and not torch.equal(r.plain_length, r.length) and ok.any():
            pe = ((r.plain_length - prob.ref) / prob.ref).abs()[ok]
            notes.append(f"{r.solver}: plain polyline length instead: median error {pe.median():.1e}, max {pe.max():.1e}")
        notes += [f"{r.solver}: {n}" for n in r.notes]
    return "\n".join(out + [""] + [f"- {n}" for n in notes] + [""])


def digits_table(prob: Problem, rows: list[Row], threads: int) -> str:
    P, lbfgs, out = _table_start(prob, rows, threads, "| solver | s/pair | × L-BFGS time | score evals/pair | "
                                 "converged | length vs L-BFGS: median | max | longer than L-BFGS (>1e-6) |")
    notes = []
    for r in rows:
        t = float(r.seconds.mean())
        if lbfgs is not None:
            rel = (r.length - lbfgs.length) / lbfgs.length
            ok = torch.isfinite(rel)
            med = float(rel[ok].median()) if ok.any() else float("nan")
            mx = float(rel[ok].max()) if ok.any() else float("nan")
            longer = int(((rel > 1e-6) | ~ok).sum())
            ratio = t / float(lbfgs.seconds.mean())
        else:
            med = mx = ratio = float("nan")
            longer = -1
        out.append(f"| {r.solver} | {_fmt(t, '.3f')} | {_fmt(ratio, '.2f')} | {_fmt(float(r.evaluations.mean()), '.3g')} | "
                   f"{int(r.converged.sum())}/{P} | {_fmt(med, '+.1e')} | {_fmt(mx, '+.1e')} | {longer} |")
        notes += [f"{r.solver}: {n}" for n in r.notes]
    return "\n".join(out + [""] + [f"- {n}" for n in notes] + [""])


HEADER = f"""## High-dimensional boundary-value geodesics (benchmarks/geodesic_highd.py)

Targets (issue 11 §6): max relative error ≤ {TARGET_ERR:g} on every pair, no pair in a wrong local geodesic
(relative error > {WRONG_LOCAL:.0%}), and time per pair ≤ the L-BFGS baseline's in the same run; digits: all
converged, no longer than L-BFGS, time per pair ≤ L-BFGS's.
Lengths: metric length of each returned polyline by Gauss–Legendre quadrature on every segment (the same
measure for every solver), Richardson-extrapolated from all and every other point when their number is odd
(scoregeo's 1025 samples; the plain polyline errs by O(1/n²), up to 8e-6 there; its errors are in the notes). Score evaluations: points at which the score was evaluated, per pair.
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="d = 64, λ = 10, 2 pairs; digits σ 0.3, λ 100, 2 pairs")
    p.add_argument("--dims", type=int, nargs="+")
    p.add_argument("--lams", type=float, nargs="+")
    p.add_argument("--pairs", type=int)
    p.add_argument("--digit-sigmas", type=float, nargs="+")
    p.add_argument("--digit-lams", type=float, nargs="+")
    p.add_argument("--digit-pairs", type=int)
    p.add_argument("--digit-first", type=int, default=0, help="skip this many pairs of the digit-pair sequence "
                   "(to split the table over runs)")
    p.add_argument("--solvers", nargs="*", default=DEFAULT_SOLVERS,
                   help=f"scoregeo solvers, of {[s for s, _ in SCOREGEO_SOLVERS]}")
    p.add_argument("--baselines", nargs="*", default=BASELINES, help=f"subset of {BASELINES}")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads, each a separate run (default 1: on a loaded 2-core machine 2 threads made one score call 140x slower)")
    p.add_argument("--parts", nargs="+", default=["oracle", "digits"], choices=["oracle", "digits"])
    p.add_argument("--lbfgs-tol", type=float, default=LBFGS_TOL, help="L-BFGS baseline gradient tolerance")
    p.add_argument("--lbfgs-max-iter", type=int, help=f"L-BFGS baseline iteration cap (default {LBFGS_MAX_ITER}, "
                                                        "--quick 1000)")
    p.add_argument("--digits-lbfgs-max-iter", type=int,
                   help=f"L-BFGS cap on the digits (default {DIGITS_LBFGS_MAX_ITER}; --quick: as --lbfgs-max-iter)")
    p.add_argument("--sg-timeout", type=int, help=f"seconds one batched scoregeo call may take (default "
                                                   f"{SG_CALL_TIMEOUT}, --quick 60); beyond, its row is failed")
    p.add_argument("--out", help="result file (default benchmarks/results/geodesic_highd[_quick].txt)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    globals()["SG_CALL_TIMEOUT"] = args.sg_timeout or (60 if args.quick else SG_CALL_TIMEOUT)
    globals()["LBFGS_TOL"] = args.lbfgs_tol
    globals()["LBFGS_MAX_ITER"] = args.lbfgs_max_iter or (1000 if args.quick else LBFGS_MAX_ITER)
    cfg = dict(QUICK if args.quick else FULL)
    for key in cfg:
        if getattr(args, key, None) is not None:
            cfg[key] = getattr(args, key)
    known = [s for s, _ in SCOREGEO_SOLVERS]
    bad = [s for s in args.solvers if s not in known] + [b for b in args.baselines if b not in BASELINES]
    if bad:
        p.error(f"unknown solvers/baselines {bad}")

    lines = [HEADER, f"{machine_header()}; scoregeo {sg.__version__}; float64; threads {args.threads}",
             f"command: {' '.join(['geodesic_highd.py'] + (argv if argv is not None else sys.argv[1:]))}", ""]
    if "geomstats" in args.baselines:
        try:
            import geomstats

            lines.append(f"geomstats {geomstats.__version__} (backend {os.environ['GEOMSTATS_BACKEND']})")
        except Exception as exc:  # noqa: BLE001
            lines.append(f"geomstats not importable ({type(exc).__name__}: {exc}); left out")
            args.baselines = [b for b in args.baselines if b != "geomstats"]
    print("\n".join(lines), flush=True)
    t_start = time.perf_counter()
    sections = []
    if "oracle" in args.parts:
        sections.append("## Symmetry oracle\n")
        for d in cfg["dims"]:
            for lam in cfg["lams"]:
                print(f"== oracle d = {d}, λ = {lam:g}", flush=True)
                prob = oracle_problem(d, lam, cfg["pairs"])
                for threads in args.threads:
                    with torch_threads(threads):
                        rows = solve_all(prob, args.solvers, args.baselines)
                    sections.append(oracle_table(prob, rows, threads))
                    print(sections[-1], flush=True)
    if "digits" in args.parts:
        sections.append("## Digits score model\n")
        with torch_threads(max(args.threads)):
            model, note = digits_model(args.quick)
        sections.append(f"- {note}\n")
        print(sections[-1], flush=True)
        for sigma in cfg["digit_sigmas"]:
            for lam in cfg["digit_lams"]:
                print(f"== digits σ = {sigma:g}, λ = {lam:g}", flush=True)
                prob = digits_problem(model, sigma, lam, cfg["digit_pairs"], first=args.digit_first)
                for threads in args.threads:
                    with torch_threads(threads):
                        rows = solve_all(prob, args.solvers, [b for b in args.baselines if b != "geomstats"],
                                         args.digits_lbfgs_max_iter or (LBFGS_MAX_ITER if args.quick else DIGITS_LBFGS_MAX_ITER))
                    sections.append(digits_table(prob, rows, threads))
                    print(sections[-1], flush=True)
    text = "\n".join(lines + [""] + sections + [f"total wall time {time.perf_counter() - t_start:.0f} s"])
    if not args.no_write:
        out = Path(args.out) if args.out else RESULTS / ("geodesic_highd_quick.txt" if args.quick else "geodesic_highd.txt")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
