"""Boundary-value geodesics: scoregeo against geomstats 2.8.0 and stochman 0.3.0.

Two metrics on R², float64, 2 threads, the same random pairs for every solver:

(a) **Fisher–Rao metric of the univariate normal** in (μ, σ): G = diag(1/σ², 2/σ²).
    Reference: the closed form d = √2·arccosh(1 + ((μ₁−μ₂)²/2 + (σ₁−σ₂)²)/(2σ₁σ₂)).
    Pairs: μ ~ U(−2, 2), log σ ~ U(log 0.25, log 2), independently for both ends.
(b) **Score metric of a 2-D Gaussian mixture**, g = αI + λ s sᵀ with λ = 10, α = 1,
    mixture ``MIXTURE`` below (3 components). Pairs: both ends ~ U([−4, 4] × [−3, 4]).
    Reference: ``scoregeo_reference`` (scoregeo collocation at rtol 1e-11 from 14
    starts per pair, shortest converged), cross-checked against an independent
    in-script reference (multi-start minimisation of the discrete energy of fine
    polylines, ``polyline_reference``); where the polyline is shorter by more than
    1 %, or the scoregeo reference did not converge, the polyline is used.

Every solver sees the metric only through its matrix G(x) (scoregeo: the same
metric objects, ``MatrixMetric`` for (a) and ``ScoreMetric`` for (b); geomstats: a
``RiemannianMetric`` subclass whose ``metric_matrix`` returns G; stochman: a
``Manifold`` subclass whose ``metric`` returns G); none uses a closed form of the
geometry. Derivatives are each library's own autodiff.

Distances: scoregeo ``Path.length``; geomstats log-based solvers (LogShootingSolver,
LogODESolver) ``metric.dist`` (the norm of the log map); geomstats path-based
solvers and stochman the length Σ √(Δxᵀ G(midpoint) Δx) of the returned curve
(geomstats: its nodes; stochman: 2001 points of its spline), the most accurate
length that their output gives. The peers' own conventions (metric at the left
node; for geomstats also ``metric.dist``, n_nodes−1 times the first segment) are
printed as notes.

Failures: exceptions, non-finite distances, or non-convergence as reported by the
solver (scoregeo ``Path.converged``; geomstats optimiser / ``solve_bvp``
``success``; stochman's own criterion max|∂E/∂params| < 1e-4, evaluated per pair;
shooting end-point residual > 1e-6·|x₁ − x₀| for geomstats LogShootingSolver,
whose flattened optimisation reports a single flag for the batch). Errors are over
the pairs that did not fail. "wrong local" counts pairs with error > 1 % (the
solver found another, longer, local geodesic, or none).

    .venv/bin/python benchmarks/bvp_vs_peers.py [--pairs 64] [--peers scoregeo geomstats stochman]
        [--metrics fisher mixture] [--quick]
"""

from __future__ import annotations

import os

os.environ.setdefault("GEOMSTATS_BACKEND", "pytorch")  # must precede any geomstats import

import argparse  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402

import scoregeo as sg  # noqa: E402

THREADS = 2
DTYPE = torch.float64
LAM, ALPHA = 10.0, 1.0
WRONG_LOCAL_TOL = 0.01
PAIR_TIMEOUT = 60  # seconds a peer may spend on one pair before it counts as failed (SIGALRM)
SHOOT_MISS_TOL = 1e-3  # geomstats shooting: end-point miss, relative to |x1 - x0|, counted as failure

# (b): three isotropic components; documented here, printed by the script.
MIXTURE = dict(
    means=[[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]],
    stds=[0.8, 0.8, 0.6],
    weights=[0.4, 0.4, 0.2],
)
MIX_BOX = ((-4.0, 4.0), (-3.0, 4.0))
FR_MU, FR_LOGSIGMA = (-2.0, 2.0), (math.log(0.25), math.log(2.0))


# ============================================================================ problems
@dataclass
class Problem:
    name: str
    title: str
    G: Callable[[torch.Tensor], torch.Tensor]  # x (..., 2) -> (..., 2, 2), differentiable torch
    sg_metric: sg.Metric
    x0: torch.Tensor
    x1: torch.Tensor
    ref: torch.Tensor | None = None
    ref_note: str = ""
    wrong_local: bool = False  # report the "wrong local geodesic" count
    notes: list = field(default_factory=list)


def fisher_rao_G(x: torch.Tensor) -> torch.Tensor:
    sigma2 = x[..., 1] ** 2
    zero = torch.zeros_like(sigma2)
    return torch.stack([torch.stack([1 / sigma2, zero], -1), torch.stack([zero, 2 / sigma2], -1)], -2)


def fisher_rao_distance(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    (m0, s0), (m1, s1) = x0.unbind(-1), x1.unbind(-1)
    arg = 1 + ((m0 - m1) ** 2 / 2 + (s0 - s1) ** 2) / (2 * s0 * s1)
    return math.sqrt(2) * torch.acosh(arg)


def make_mixture() -> sg.GaussianMixture:
    means = torch.tensor(MIXTURE["means"], dtype=DTYPE)
    stds = torch.tensor(MIXTURE["stds"], dtype=DTYPE)
    covs = stds[:, None, None] ** 2 * torch.eye(2, dtype=DTYPE)
    return sg.GaussianMixture(means, covs, torch.tensor(MIXTURE["weights"], dtype=DTYPE))


def fisher_problem(n: int, seed: int) -> Problem:
    gen = torch.Generator().manual_seed(seed)

    def draw():
        mu = torch.empty(n, dtype=DTYPE).uniform_(*FR_MU, generator=gen)
        sigma = torch.empty(n, dtype=DTYPE).uniform_(*FR_LOGSIGMA, generator=gen).exp()
        return torch.stack([mu, sigma], -1)

    x0, x1 = draw(), draw()
    return Problem(
        name="fisher",
        title="(a) Fisher–Rao metric of N(μ, σ), G = diag(1/σ², 2/σ²)",
        G=fisher_rao_G,
        sg_metric=sg.MatrixMetric(fisher_rao_G, 2),
        x0=x0,
        x1=x1,
        ref=fisher_rao_distance(x0, x1),
        ref_note="closed form √2·arccosh(1 + ((μ₁−μ₂)²/2 + (σ₁−σ₂)²)/(2σ₁σ₂))",
    )


def mixture_score_plain(x: torch.Tensor) -> torch.Tensor:
    """The score of MIXTURE in a few plain torch operations (isotropic components).

    Mathematically identical to ``make_mixture().score``; the peers' G(x) and the
    in-script reference use it so that they do not pay for scoregeo's input checks.
    """
    means = torch.tensor(MIXTURE["means"], dtype=x.dtype)
    var = torch.tensor(MIXTURE["stds"], dtype=x.dtype) ** 2
    logw = torch.tensor(MIXTURE["weights"], dtype=x.dtype).log()
    diff = means - x.unsqueeze(-2)  # (..., K, 2)
    logits = logw - (diff**2).sum(-1) / (2 * var) - torch.log(var)  # log w_k N(x; μ_k, σ_k² I) + const
    e = (logits - logits.amax(-1, keepdim=True).detach()).exp()  # softmax by hand: torch.softmax under
    resp = e / e.sum(-1, keepdim=True)  # torch.func.jvp takes a slow decomposition path here
    return (resp.unsqueeze(-1) * diff / var.unsqueeze(-1)).sum(-2)


def mixture_problem(n: int, seed: int) -> Problem:
    mixture = make_mixture()
    metric = sg.ScoreMetric(mixture.score, 2, lam=LAM, alpha=ALPHA)
    probe = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0), dtype=DTYPE) * 3
    assert torch.allclose(mixture_score_plain(probe), mixture.score(probe), rtol=1e-12, atol=1e-12)
    eye = torch.eye(2, dtype=DTYPE)

    def G(x):
        s = mixture_score_plain(x)
        return ALPHA * eye.to(x) + LAM * s.unsqueeze(-1) * s.unsqueeze(-2)

    gen = torch.Generator().manual_seed(seed + 1)
    lo = torch.tensor([MIX_BOX[0][0], MIX_BOX[1][0]], dtype=DTYPE)
    hi = torch.tensor([MIX_BOX[0][1], MIX_BOX[1][1]], dtype=DTYPE)
    x0 = lo + (hi - lo) * torch.rand(n, 2, generator=gen, dtype=DTYPE)
    x1 = lo + (hi - lo) * torch.rand(n, 2, generator=gen, dtype=DTYPE)
    return Problem(
        name="mixture",
        title=f"(b) score metric αI + λ s sᵀ of a 3-component 2-D Gaussian mixture, λ = {LAM:g}, α = {ALPHA:g}",
        G=G,
        sg_metric=metric,
        x0=x0,
        x1=x1,
        wrong_local=True,
    )


# ============================================================================ references
def polyline_length(G, pts: torch.Tensor) -> torch.Tensor:
    """Σ √(Δᵀ G(midpoint) Δ) of polylines (..., n, d) (midpoint rule, second order)."""
    delta = pts[..., 1:, :] - pts[..., :-1, :]
    mid = 0.5 * (pts[..., 1:, :] + pts[..., :-1, :])
    q = (delta.unsqueeze(-2) @ G(mid) @ delta.unsqueeze(-1)).squeeze(-1).squeeze(-1)
    return q.clamp_min(0).sqrt().sum(-1)


def _newton_polylines(G, x0, x1, inner, max_iter=300, tol=1e-11):
    """Minimise the discrete energies of P polylines at once, each by its own damped Newton method.

    x0, x1 (P, d) fixed ends, inner (P, m, d) interior nodes. The energy
    E = (n−1) Σ_s Δ_sᵀ G(midpoint_s) Δ_s is a sum over segments, each depending on
    two adjacent nodes, so its Hessian is block-tridiagonal: it is assembled exactly
    from 3·d Hessian-vector products with "coloured" probes (nodes j ≡ c mod 3),
    since no two nodes of one colour share a neighbour. Steps (H + μI)⁻¹g with a
    per-polyline Levenberg–Marquardt μ, accepted only if E decreases.
    """
    from torch.func import grad, jvp

    P, m, d = inner.shape
    n = m + 2

    def energy(X, idx=slice(None)):
        pts = torch.cat([x0[idx, None], X, x1[idx, None]], 1)
        delta = pts[:, 1:] - pts[:, :-1]
        mid = 0.5 * (pts[:, 1:] + pts[:, :-1])
        return (n - 1) * (delta.unsqueeze(-2) @ G(mid) @ delta.unsqueeze(-1)).squeeze(-1).squeeze(-1).sum(-1)

    colours = torch.arange(m) % 3
    probes = torch.zeros(3, d, m, d, dtype=inner.dtype)
    for c in range(3):
        for k in range(d):
            probes[c, k, colours == c, k] = 1.0
    j = torch.arange(m)
    X = inner.clone()
    E = energy(X)
    mu = 1e-3 * E.clamp_min(1e-12)
    eye = torch.eye(m * d, dtype=X.dtype)
    done = torch.zeros(P, dtype=torch.bool)
    for _ in range(max_iter):
        act = (~done).nonzero().squeeze(-1)  # only the polylines still iterating
        if act.numel() == 0:
            break
        Xa, Ea, mua = X[act], E[act], mu[act]
        pa = act.numel()
        grad_fn = grad(lambda Y: energy(Y, act).sum())
        hv = []
        for c in range(3):
            for k in range(d):
                g, out = jvp(grad_fn, (Xa,), (probes[c, k].expand(pa, m, d),))
                hv.append(out)
        hv = torch.stack(hv).reshape(3, d, pa, m, d)  # hv[c, k, p, j, r] = Σ_{l≡c} H[(j,r),(l,k)]
        g = g.reshape(pa, m * d)
        converged = g.abs().amax(-1) <= tol * Ea.clamp_min(1e-300)
        H = torch.zeros(pa, m, d, m, d, dtype=X.dtype)
        # advanced indices j, j on dims 1, 3 index H as (m, p, r, k); hv[...] gives (m, k, p, r)
        H[:, j, :, j, :] = hv[colours, :, :, j, :].permute(0, 2, 3, 1)
        if m > 1:
            u = j[:-1]
            upper = hv[colours[u + 1], :, :, u, :].permute(0, 2, 3, 1)  # H[(u, r), (u+1, k)]
            H[:, u, :, u + 1, :] = upper
            H[:, u + 1, :, u, :] = upper.transpose(-1, -2)
        L, info = torch.linalg.cholesky_ex(H.reshape(pa, m * d, m * d) + mua[:, None, None] * eye)
        pd = info == 0
        step = torch.zeros_like(g)
        if bool(pd.any()):
            step[pd] = -torch.cholesky_solve(g[pd].unsqueeze(-1), L[pd]).squeeze(-1)
        X_new = Xa + step.reshape(pa, m, d)
        E_new = energy(X_new, act)
        accept = pd & torch.isfinite(E_new) & (E_new <= Ea) & ~converged
        tiny = accept & (step.abs().amax(-1) <= 1e-14 * (1 + Xa.abs().amax(dim=(1, 2))))
        X[act] = torch.where(accept[:, None, None], X_new, Xa)
        E[act] = torch.where(accept, E_new, Ea)
        mu[act] = torch.where(accept, mua / 3, mua * 4)
        done[act] = converged | tiny
    return X, done


def polyline_reference(G, x0, x1, n_points=(65, 257), offsets=(0.0, 0.25, -0.25, 0.6, -0.6, 1.0, -1.0, 1.6, -1.6)):
    """Independent reference distances: multi-start discrete energy minimisation.

    Polylines start from the chord bent by a·sin(πt)·|x₁ − x₀| along its normal, for
    every offset a, with n_points[0] nodes; each is minimised by damped Newton. The
    shortest per pair is refined at n_points[1] nodes. Length with the midpoint
    rule (second order). Returns (lengths (n,), estimated discretisation error (n,),
    all start lengths (n, k), converged (n,)).
    """
    n, d = x0.shape
    k = len(offsets)
    coarse, fine = n_points
    t = torch.linspace(0, 1, coarse, dtype=x0.dtype)
    chord = x1 - x0
    normal = torch.stack([-chord[:, 1], chord[:, 0]], -1)
    a = torch.tensor(offsets, dtype=x0.dtype)
    bump = torch.sin(math.pi * t)
    init = (x0[:, None, None] + t[None, None, :, None] * chord[:, None, None]
            + a[None, :, None, None] * bump[None, None, :, None] * normal[:, None, None])  # (n, k, T, d)
    X0, X1 = x0.repeat_interleave(k, 0), x1.repeat_interleave(k, 0)
    inner, _ = _newton_polylines(G, X0, X1, init[:, :, 1:-1].reshape(n * k, coarse - 2, d), tol=1e-8, max_iter=150)
    pts = torch.cat([X0[:, None], inner, X1[:, None]], 1).reshape(n, k, coarse, d)
    starts = polyline_length(G, pts)  # (n, k)
    best = pts[torch.arange(n), starts.argmin(-1)]  # (n, coarse, d)
    # refine the shortest at the fine resolution (linear interpolation of the nodes)
    tf = torch.linspace(0, 1, fine, dtype=x0.dtype) * (coarse - 1)
    i0 = tf.floor().long().clamp(max=coarse - 2)
    w = (tf - i0)[None, :, None]
    init_fine = (1 - w) * best[:, i0] + w * best[:, i0 + 1]
    inner_f, conv = _newton_polylines(G, x0, x1, init_fine[:, 1:-1])
    pts_f = torch.cat([x0[:, None], inner_f, x1[:, None]], 1)
    length = polyline_length(G, pts_f)
    length_half = polyline_length(G, pts_f[:, ::2]) if (fine - 1) % 2 == 0 else length
    err = (length - length_half).abs() / 3  # Richardson estimate for a second-order rule
    return length, err, starts, conv


def scoregeo_reference(prob: Problem):
    """A tighter scoregeo solve for the mixture: collocation from 14 starts per pair at rtol 1e-11.

    The default ``sg.geodesic`` stops when two successive polynomial degrees
    agree to 1e-7 and uses six starts; the reference asks for 1e-11, allows
    degree 2048, and starts from the straight line, arcs bowed to either side
    by 0.2, 0.4, 0.8, 1.2 and 1.6 chord lengths, and three graph paths from
    different random graphs.
    """
    from scoregeo.geodesics.collocation import collocation_geodesic
    from scoregeo.geodesics.graph import graph_paths
    from scoregeo.geodesics.solver import straight_lines
    from scoregeo.geodesics.starts import bowed_lines

    metric, x0, x1 = prob.sg_metric, prob.x0, prob.x1
    chord = x1 - x0
    normal = torch.stack([-chord[:, 1], chord[:, 0]], -1) / chord.norm(dim=-1, keepdim=True)  # the plane's only one
    bows = [bowed_lines(x0, x1, 24, side * bend, normal) for bend in (0.2, 0.4, 0.8, 1.2, 1.6) for side in (1, -1)]
    starts = [straight_lines(x0, x1, 24), *bows] + [graph_paths(metric, x0, x1, 24, seed=s) for s in (0, 1, 2)]
    groups = torch.arange(len(x0)).repeat(len(starts))  # lets starts that cannot be the shortest stop early
    solved = collocation_geodesic(metric, torch.cat(starts), rtol=1e-11, max_order=2048, groups=groups)
    lengths = torch.where(solved.converged, solved.length, torch.inf).reshape(len(starts), -1)
    best = lengths.min(0).values
    ok = torch.isfinite(best)
    return torch.where(ok, best, torch.nan), (
        f"scoregeo collocation at rtol 1e-11 (degree <= 2048) from {len(starts)} starts per pair, shortest "
        f"converged; a converged start for {int(ok.sum())}/{len(x0)} pairs"
    )


def attach_reference(prob: Problem, quick: bool) -> None:
    if prob.ref is not None:
        return
    # The reference is not timed: one thread avoids the stalls of a 2-thread pool on a busy machine.
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    poly, poly_err, _, poly_conv = polyline_reference(prob.G, prob.x0, prob.x1, n_points=(65, 129 if quick else 257))
    t_poly = time.perf_counter() - t0
    torch.set_num_threads(THREADS)
    poly_note = (f"polyline reference {t_poly:.0f} s, Newton converged {int(poly_conv.sum())}/{len(poly)}, "
                 f"estimated discretisation error median {(poly_err / poly).median():.0e}, max {(poly_err / poly).max():.0e}")
    try:
        ref_sg, how = scoregeo_reference(prob)
    except Exception as exc:  # noqa: BLE001 - reported, the in-script reference is used instead
        ref_sg, how = None, f"sg.geodesic failed: {type(exc).__name__}: {exc}"
    if ref_sg is None:
        prob.ref = poly
        prob.ref_note = f"in-script multi-start polyline reference ({how}); {poly_note}"
        return
    # scoregeo's solve is the reference; where the independent polyline is shorter by
    # more than 1 % (scoregeo kept a longer local geodesic), the polyline is used.
    rel = (ref_sg - poly) / poly
    longer = (rel > WRONG_LOCAL_TOL) | ~torch.isfinite(ref_sg)
    prob.ref = torch.where(longer, poly, ref_sg)
    prob.ref_note = (
        f"{how}; independent check: {poly_note}; scoregeo vs polyline |rel. diff| median "
        f"{rel.abs().median():.1e}, max {rel.abs().max():.1e}; scoregeo reference longer by > 1 % on "
        f"{int(longer.sum())} pairs, or without a converged solve (polyline used there)"
    )


# ============================================================================ solver results
@dataclass
class Result:
    solver: str
    dist: torch.Tensor  # (n,), NaN where failed
    failed: torch.Tensor  # (n,) bool
    seconds: float  # wall time for all pairs
    notes: list = field(default_factory=list)


class PairTimeout(Exception):
    """A peer solver spent more than PAIR_TIMEOUT seconds on one pair."""


def _on_alarm(signum, frame):
    raise PairTimeout(f"more than {PAIR_TIMEOUT} s on one pair")


def run_per_pair(name, prob, solve_one) -> Result:
    """Call solve_one(x0, x1) -> (dist, ok) per pair; exceptions and timeouts count as failures."""
    n = len(prob.x0)
    dist = torch.full((n,), float("nan"), dtype=DTYPE)
    failed = torch.zeros(n, dtype=torch.bool)
    notes = []
    signal.signal(signal.SIGALRM, _on_alarm)
    t0 = time.perf_counter()
    for i in range(n):
        try:
            signal.alarm(PAIR_TIMEOUT)
            try:
                d, ok = solve_one(prob.x0[i], prob.x1[i])
            finally:
                signal.alarm(0)
            dist[i] = float(d)
            failed[i] = not ok
        except Exception as exc:  # noqa: BLE001 - a failure of the solver under test
            failed[i] = True
            msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            if msg not in notes:
                notes.append(msg)
    seconds = time.perf_counter() - t0
    failed |= ~torch.isfinite(dist)
    return Result(name, dist, failed, seconds, [f"exception: {m}" for m in notes])


# ---------------------------------------------------------------------------- scoregeo
SCOREGEO_METHODS = {
    "scoregeo geodesic auto (batched)": dict(solver="auto"),  # the default: global, six starts + collocation
    "scoregeo geodesic collocation (batched)": dict(solver="collocation"),  # local: collocation from the chord
    "scoregeo geodesic energy (batched)": dict(solver="energy"),  # local: energy minimisation from the chord
    "scoregeo geodesic shooting (batched)": dict(solver="shooting"),  # local: Newton shooting from x1 − x0
}


def solve_scoregeo(prob: Problem, which=None) -> list[Result]:
    if not hasattr(sg, "geodesic"):
        raise NotImplementedError("sg.geodesic is not available yet (src/scoregeo/geodesics/ in progress)")
    results = []
    for name, kw in SCOREGEO_METHODS.items():
        if which and kw["solver"] not in which:
            continue
        notes = [f"sg.geodesic(metric, x0, x1, solver={kw['solver']!r}), n_points=64 (default), all pairs in one call"]
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # non-convergence is counted, not printed
                path = sg.geodesic(prob.sg_metric, prob.x0, prob.x1, **kw)
            seconds = time.perf_counter() - t0
            dist = path.length.detach().to(DTYPE)
            failed = ~path.converged | ~torch.isfinite(dist)
            if kw["solver"] == "auto" and hasattr(path, "n_local"):
                notes.append(f"pairs where more than one local geodesic was found: {int((path.n_local > 1).sum())}")
            if kw["solver"] == "auto":
                t1 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    d2 = sg.distance(prob.sg_metric, prob.x0, prob.x1, **kw)
                rel = ((d2 - dist) / dist).abs().max()
                notes.append(f"sg.distance: {(time.perf_counter() - t1) / len(prob.x0):.3f} s/pair, "
                             f"max rel. diff to Path.length {rel:.1e}")
        except Exception as exc:  # noqa: BLE001 - a failure of the solver under test
            seconds = time.perf_counter() - t0
            n = len(prob.x0)
            dist, failed = torch.full((n,), float("nan"), dtype=DTYPE), torch.ones(n, dtype=torch.bool)
            notes.append(f"exception: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        results.append(Result(name, dist, failed, seconds, notes))
        print(f"    {name}: {seconds / len(prob.x0):.3f} s/pair", flush=True)
    return results


# ---------------------------------------------------------------------------- geomstats
def geomstats_space(prob: Problem):
    """R² equipped with a geomstats RiemannianMetric whose metric_matrix is prob.G."""
    from geomstats.geometry.euclidean import Euclidean
    from geomstats.geometry.riemannian_metric import RiemannianMetric
    from geomstats.numerics.geodesic import ExpODESolver
    from geomstats.numerics.ivp import GSIVPIntegrator

    G = prob.G

    class MatrixFieldMetric(RiemannianMetric):
        def metric_matrix(self, base_point=None):
            return G(base_point)

    space = Euclidean(dim=2, equip=False)
    space.equip_with_metric(MatrixFieldMetric)
    # IVP integrator used by LogShootingSolver (geomstats' own choice for metrics given
    # by a matrix field, PullbackMetric, is euler with 100 steps; rk4 with 50 steps costs
    # twice as much and is far more accurate)
    space.metric.exp_solver = ExpODESolver(space, integrator=GSIVPIntegrator(n_steps=50, step_type="rk4"))
    return space


GEOMSTATS_SOLVERS = {
    # name: (factory(space) -> solver, description of the settings)
    "PathStraightening": (
        lambda space, gm: gm.PathStraightening(space, n_nodes=100, optimizer=_scipy_min(gm)),
        "n_nodes=100 (default), L-BFGS-B (default)",
    ),
    "MultiresPathStraightening": (
        lambda space, gm: gm.MultiresPathStraightening(space, n_levels=7, optimizer=_scipy_min(gm)),
        "n_levels=7 → nodes 3,5,9,…,129 (default 3 levels stop at 9 nodes), L-BFGS-B",
    ),
    "LogShootingSolver": (
        lambda space, gm: gm.LogShootingSolver(space, flatten=False, optimizer=_scipy_min(gm)),
        "flatten=False (one L-BFGS-B per pair), exp: rk4 50 steps",
    ),
    "LogODESolver": (
        lambda space, gm: gm.LogODESolver(space, n_nodes=100, integrator=_scipy_bvp(), use_jac=False),
        "n_nodes=100, scipy solve_bvp tol=1e-6, max_nodes=10000, use_jac=False (the default use_jac=True needs "
        "metric.jacobian_christoffels, which RiemannianMetric does not define)",
    ),
}


def _scipy_min(gm):
    from geomstats.numerics.optimization import ScipyMinimize

    return ScipyMinimize(method="L-BFGS-B", autodiff_jac=True, options={"disp": False}, save_result=True)


def _scipy_bvp():
    from geomstats.numerics.bvp import ScipySolveBVP

    return ScipySolveBVP(tol=1e-6, max_nodes=10000, save_result=True)


def solve_geomstats(prob: Problem, which=None) -> list[Result]:
    import geomstats.numerics.geodesic as gm

    results = []
    for name, (factory, settings) in GEOMSTATS_SOLVERS.items():
        if which and name not in which:
            continue
        space = geomstats_space(prob)
        solver = factory(space, gm)
        space.metric.log_solver = solver
        metric = space.metric
        path_based = isinstance(solver, gm.PathBasedLogSolver)
        log_dists, left_lengths, misses = [], [], []

        def solve_one(x0, x1, solver=solver, metric=metric, path_based=path_based):
            if path_based:
                path = solver.discrete_geodesic_bvp(x1, x0)  # (n_nodes, 2)
                ok = bool(solver.optimizer.result_.success)
                steps = path[1:] - path[:-1]
                left_lengths.append(float(metric.norm(steps, path[:-1]).sum()))  # geomstats' energy convention
                log_dists.append(float(metric.norm((path.shape[0] - 1) * steps[0], x0)))
                return polyline_length(prob.G, path.detach()), ok  # midpoint rule on its nodes
            if isinstance(solver, gm.LogODESolver):
                log = metric.log(x1, x0)
                ok = bool(solver.integrator.result_.success)
                return metric.norm(log, x0), ok
            # shooting: geomstats reports the optimiser's success; we also check that the
            # shot lands on x1 (L-BFGS-B can stop at a local minimum of the miss distance)
            log = metric.log(x1, x0)
            ok = bool(solver.optimizer.result_.success)
            residual = (metric.exp(log, x0) - x1).norm()
            if ok and not bool(residual <= SHOOT_MISS_TOL * (x1 - x0).norm()):
                misses.append(float(residual))
                ok = False
            return metric.norm(log, x0), ok

        # geomstats logs a warning per optimisation that does not succeed; failures are counted instead
        logging.getLogger().setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = run_per_pair(f"geomstats {name}", prob, solve_one)
        res.notes.insert(0, settings)
        ok = ~res.failed
        for values, what in ((log_dists, "metric.dist (norm of its log)"),
                             (left_lengths, "length of its nodes with the metric at the left node (its energy's rule)")):
            if values and len(values) == len(res.dist) and ok.any():
                rel = ((torch.tensor(values, dtype=DTYPE) - prob.ref) / prob.ref).abs()[ok]
                res.notes.append(f"{what} instead: median error {rel.median():.1e}, max {rel.max():.1e}")
        if misses:
            res.notes.append(f"{len(misses)} pairs where the optimiser reported success but the shot missed x1 "
                             f"(residual up to {max(misses):.1e}) are counted as failed")
        results.append(res)
        print(f"    {res.solver}: {res.seconds / len(prob.x0):.3f} s/pair", flush=True)
    return results


# ---------------------------------------------------------------------------- stochman
STOCHMAN_SETTINGS = {
    # the public entry point Manifold.connecting_geodesic with its defaults
    "stochman connecting_geodesic (defaults)": dict(num_nodes=5, max_iter=150, eval_grid=20, public=True),
    # stochman.geodesic.geodesic_minimizing_energy with a finer spline and more iterations
    "stochman energy min. (longer)": dict(num_nodes=12, max_iter=1000, eval_grid=64, public=False),
}


def solve_stochman(prob: Problem, which=None) -> list[Result]:
    from stochman.curves import CubicSpline
    from stochman.geodesic import geodesic_minimizing_energy
    from stochman.manifold import Manifold

    G = prob.G

    class MatrixFieldManifold(Manifold):
        def metric(self, points):
            return G(points)

    manifold = MatrixFieldManifold()
    results = []
    t_fine = torch.linspace(0, 1, 2001, dtype=DTYPE)
    for name, cfg in STOCHMAN_SETTINGS.items():
        if which and name not in which:
            continue
        n = len(prob.x0)
        notes = [f"CubicSpline num_nodes={cfg['num_nodes']}, Adam lr 0.1, max_iter={cfg['max_iter']}, "
                 f"eval_grid={cfg['eval_grid']}; all pairs in one batched call"]
        t0 = time.perf_counter()
        try:
            if cfg["public"]:
                curve, _ = manifold.connecting_geodesic(prob.x0, prob.x1)
            else:
                curve = CubicSpline(prob.x0, prob.x1, num_nodes=cfg["num_nodes"])
                geodesic_minimizing_energy(curve, manifold, max_iter=cfg["max_iter"], eval_grid=cfg["eval_grid"])
            seconds = time.perf_counter() - t0
            # stochman's convergence criterion (max |∂E/∂params| < 1e-4), per pair
            alpha = torch.linspace(0, 1, cfg["eval_grid"], dtype=DTYPE)
            curve.zero_grad()
            manifold.curve_energy(curve(alpha)).mean().backward()
            grad = curve.params.grad.abs().amax(dim=(1, 2))  # the batch loss is a sum: per-pair gradients
            with torch.no_grad():
                pts = curve(t_fine)
                dist = polyline_length(G, pts).to(DTYPE)  # midpoint rule on 2001 points of the spline
                left = manifold.curve_length(pts.clone()).to(DTYPE)  # stochman's rule (metric at the left point)
            rel_left = ((left - prob.ref) / prob.ref).abs()
            notes.append(f"stochman's own curve_length on the same 2001 points: median error {rel_left.median():.1e}")
            failed = (grad >= 1e-4) | ~torch.isfinite(dist)
        except Exception as exc:  # noqa: BLE001
            seconds = time.perf_counter() - t0
            dist = torch.full((n,), float("nan"), dtype=DTYPE)
            failed = torch.ones(n, dtype=torch.bool)
            notes.append(f"exception: {type(exc).__name__}: {exc}")
        results.append(Result(name, dist, failed, seconds, notes))
        print(f"    {name}: {seconds / n:.3f} s/pair", flush=True)
    return results


# ============================================================================ report
def summarise(prob: Problem, results: list[Result]) -> None:
    print(f"\n{prob.title}")
    print(f"  {len(prob.x0)} pairs; reference: {prob.ref_note}")
    cols = f"{'solver':<42} | {'s/pair':>8} | {'median err':>10} | {'max err':>9} | {'failed':>6}"
    cols += f" | {'wrong local':>11}" if prob.wrong_local else f" | {'err > 1%':>8}"
    print(cols)
    print("-" * len(cols))
    for r in results:
        ok = ~r.failed
        rel = ((r.dist - prob.ref) / prob.ref).abs()
        med = f"{rel[ok].median():.1e}" if ok.any() else "—"
        mx = f"{rel[ok].max():.1e}" if ok.any() else "—"
        wrong = int((rel[ok] > WRONG_LOCAL_TOL).sum())
        line = f"{r.solver:<42} | {r.seconds / len(prob.x0):>8.3f} | {med:>10} | {mx:>9} | {int(r.failed.sum()):>6}"
        line += f" | {wrong:>11}" if prob.wrong_local else f" | {wrong:>8}"
        print(line)
    for r in results:
        for note in r.notes:
            print(f"    {r.solver}: {note}")
        bad = r.failed & torch.isfinite(r.dist)
        if bad.any():
            rel = ((r.dist - prob.ref) / prob.ref).abs()[bad]
            print(f"    {r.solver}: the {int(bad.sum())} failed pairs with a finite distance have error median "
                  f"{rel.median():.1e}, max {rel.max():.1e}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--peers", nargs="+", default=["scoregeo", "geomstats", "stochman"],
                   help="subset of scoregeo, geomstats, stochman, or single solvers such as "
                        "geomstats:LogODESolver, scoregeo:auto, 'stochman:stochman energy min. (longer)'")
    p.add_argument("--metrics", nargs="+", default=["fisher", "mixture"], choices=["fisher", "mixture"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="8 pairs and a coarser in-script reference")
    args = p.parse_args(argv)
    if args.quick and args.pairs == 64:
        args.pairs = 8

    torch.set_num_threads(THREADS)
    torch.set_default_dtype(DTYPE)
    print(f"scoregeo BVP benchmark: torch {torch.__version__}, {THREADS} threads, float64, {args.pairs} pairs, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"mixture (b): means {MIXTURE['means']}, stds {MIXTURE['stds']}, weights {MIXTURE['weights']}; "
          f"pairs uniform in {MIX_BOX[0]} × {MIX_BOX[1]}")
    print(f"pairs (a): μ ~ U{FR_MU}, σ = exp(U(log 0.25, log 2))")

    peers: dict[str, list[str] | None] = {}
    for item in args.peers:
        lib, _, solver = item.partition(":")
        if lib not in ("scoregeo", "geomstats", "stochman"):
            p.error(f"unknown peer {lib!r}")
        if solver:
            peers.setdefault(lib, [])
            if peers[lib] is not None:
                peers[lib].append(solver)
        else:
            peers[lib] = None
    if "geomstats" in peers:
        import geomstats

        print(f"geomstats {geomstats.__version__} (backend {os.environ['GEOMSTATS_BACKEND']})", end="; ")
    if "stochman" in peers:
        import stochman

        print(f"stochman {getattr(stochman, '__version__', '0.3.0')}", end="")
    print()

    status = 0
    builders = {"fisher": fisher_problem, "mixture": mixture_problem}
    for name in args.metrics:
        prob = builders[name](args.pairs, args.seed)
        print(f"\n== {prob.title}", flush=True)
        attach_reference(prob, args.quick)
        print(f"  reference: {prob.ref_note}", flush=True)
        results = []
        if "scoregeo" in peers:
            try:
                results += solve_scoregeo(prob, peers["scoregeo"])
            except NotImplementedError as exc:
                n = args.pairs
                results.append(Result("scoregeo geodesic (batched)", torch.full((n,), float("nan")),
                                      torch.ones(n, dtype=torch.bool), float("nan"), [f"not run: {exc}"]))
        if "geomstats" in peers:
            results += solve_geomstats(prob, peers["geomstats"])
        if "stochman" in peers:
            results += solve_stochman(prob, peers["stochman"])
        summarise(prob, results)
    return status


if __name__ == "__main__":
    sys.exit(main())
