"""Baseline boundary-value geodesic solvers that users compare against, and a common length measure.

Everything here sees the metric only through ``inner(x, u, v) = uᵀ G(x) v`` (batched over
leading dimensions), so it is independent of scoregeo; ``score_inner`` builds it for the score
metric αI + λ s sᵀ from a plain score function. Count score evaluations by wrapping the score
in a ``CountingScore`` before building ``inner``.

- ``lbfgs_geodesic``: the "30-line L-BFGS": torch.optim.LBFGS (strong-Wolfe line search) on the
  discrete curve energy E = (n−1) Σᵢ ⟨Δᵢ, G(midᵢ) Δᵢ⟩ of a polyline with 64 interior points,
  from the straight line, one pair at a time, each run to its own gradient tolerance.
- ``adam_geodesic``: Adam, lr 1e-2, 2000 iterations on the same energy (the published protocol).
  Adam's update is elementwise, so optimising the sum of the pairs' energies in one batch gives
  every pair exactly its own run.
- ``geomstats_geodesic``: geomstats 2.8 ``PathStraightening`` (default 100 nodes, L-BFGS-B) on a
  ``RiemannianMetric`` whose ``metric_matrix`` is the dense G(x); set GEOMSTATS_BACKEND=pytorch
  before geomstats is first imported.
- ``polyline_length``: the common, independent length measure: the metric length of the returned
  polyline itself, Gauss–Legendre quadrature on every segment (5 nodes). A polyline is a curve
  between the end points, so this length is never below the true distance (up to quadrature).
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

Inner = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# ============================================================================ score counting
def _points_in(x: torch.Tensor) -> int:
    """Number of d-vectors in x, also when x is a torch.func (vmap / grad / jvp) wrapper."""
    d = x.shape[-1] if x.ndim else 1
    try:
        from torch._C._functorch import get_unwrapped, is_functorch_wrapped_tensor

        while is_functorch_wrapped_tensor(x):  # vmap hides its batch dimensions from x.shape
            x = get_unwrapped(x)
    except (ImportError, RuntimeError):  # pragma: no cover - private API changed
        pass
    return x.numel() // d


class CountingScore:
    """Wraps a score s: (..., d) → (..., d) and counts the points it is evaluated at.

    One forward evaluation at one point counts 1, whatever the batch; a VJP or JVP of the score
    runs one forward (counted) plus a backward or tangent pass (not counted separately).
    """

    def __init__(self, score: Callable[[torch.Tensor], torch.Tensor]):
        self.score = score
        self.points = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.points += _points_in(x)
        return self.score(x)

    def reset(self) -> int:
        """Return the count so far and start again from 0."""
        n, self.points = self.points, 0
        return n


def score_inner(score: Callable, lam: float, alpha: float = 1.0) -> Inner:
    """⟨u, v⟩_x = α u·v + λ (s(x)·u)(s(x)·v) of the score metric, never forming a d×d matrix."""

    def inner(x, u, v):
        s = score(x)
        return alpha * (u * v).sum(-1) + lam * (s * u).sum(-1) * (s * v).sum(-1)

    return inner


# ============================================================================ common measure
def polyline_length(inner: Inner, points: torch.Tensor, nodes: int = 5, chunk: int = 2**22) -> torch.Tensor:
    """Metric length (B,) of polylines (B, n, d): Σ_segments ∫₀¹ √(Δᵀ G(x_i + tΔ) Δ) dt, Gauss–Legendre.

    The integrand is smooth along each segment, so 5 nodes integrate it to near round-off;
    segments are processed in chunks of ``chunk`` scalars to bound memory.
    """
    t, w = np.polynomial.legendre.leggauss(nodes)
    t = torch.as_tensor((t + 1) / 2, dtype=points.dtype)
    w = torch.as_tensor(w / 2, dtype=points.dtype)
    B, n, d = points.shape
    out = torch.zeros(B, dtype=points.dtype)
    per = max(1, chunk // (nodes * (n - 1) * d))
    with torch.no_grad():
        for lo in range(0, B, per):
            p = points[lo:lo + per]
            delta = p[:, 1:] - p[:, :-1]  # (b, n-1, d)
            x = p[:, :-1, None] + t[:, None] * delta[:, :, None]  # (b, n-1, q, d)
            dd = delta[:, :, None].expand_as(x)
            speed = inner(x, dd, dd).clamp_min(0).sqrt()  # (b, n-1, q)
            out[lo:lo + per] = (speed * w).sum((-1, -2))
    return out


# ============================================================================ discrete energy
def straight_line(x0: torch.Tensor, x1: torch.Tensor, n: int) -> torch.Tensor:
    """(..., n, d) equally spaced points from x0 to x1 (..., d)."""
    s = torch.linspace(0, 1, n, dtype=x0.dtype)[:, None]
    return x0[..., None, :] * (1 - s) + x1[..., None, :] * s


def discrete_energy(inner: Inner, points: torch.Tensor) -> torch.Tensor:
    """E = (n−1) Σᵢ ⟨Δᵢ, G(midᵢ) Δᵢ⟩ of polylines (..., n, d) → (...)."""
    delta = points[..., 1:, :] - points[..., :-1, :]
    mid = 0.5 * (points[..., 1:, :] + points[..., :-1, :])
    return (points.shape[-2] - 1) * inner(mid, delta, delta).sum(-1)


@dataclass
class BaselineResult:
    points: torch.Tensor  # (B, n, d)
    converged: torch.Tensor  # (B,) bool
    iterations: torch.Tensor  # (B,) optimiser iterations
    evaluations: torch.Tensor  # (B,) score evaluations (points) per pair; NaN if not counted
    seconds: torch.Tensor  # (B,) wall time per pair (batched solvers: total / B)
    notes: list = field(default_factory=list)


# ============================================================================ L-BFGS
def lbfgs_geodesic(inner: Inner, x0: torch.Tensor, x1: torch.Tensor, n_interior: int = 64, tol: float = 1e-5,
                   max_iter: int = 5000, history: int = 50, counter: CountingScore | None = None) -> BaselineResult:
    """L-BFGS (strong Wolfe) on the discrete energy, one pair at a time, from the straight line.

    Variables are the interior points in units of |x1 − x0| (offsets Y from the chord) and the
    objective is E / E(chord), so the stopping rule max|∂f/∂Y| ≤ ``tol`` is scale-free.
    ``converged`` means that rule was met (not the iteration cap, nor a stall: objective or step
    change below 1e-13).
    """
    B = x0.shape[0]
    pts, conv, iters, evals, secs = [], torch.zeros(B, dtype=torch.bool), torch.zeros(B), torch.zeros(B), torch.zeros(B)
    for i in range(B):
        if counter is not None:
            counter.reset()
        t0 = time.perf_counter()
        line = straight_line(x0[i], x1[i], n_interior + 2)
        scale = float((x1[i] - x0[i]).norm())
        with torch.no_grad():
            e0 = float(discrete_energy(inner, line))
        Y = torch.zeros(n_interior, x0.shape[-1], dtype=x0.dtype, requires_grad=True)

        def curve():
            return torch.cat([line[:1], line[1:-1] + scale * Y, line[-1:]])

        opt = torch.optim.LBFGS([Y], lr=1, max_iter=max_iter, max_eval=2 * max_iter, tolerance_grad=tol,
                                tolerance_change=1e-13, history_size=history, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            f = discrete_energy(inner, curve()) / e0
            f.backward()
            return f

        opt.step(closure)
        closure()  # the gradient at the final point
        conv[i] = bool(Y.grad.abs().max() <= tol)
        iters[i] = opt.state[opt._params[0]]["n_iter"]
        secs[i] = time.perf_counter() - t0
        evals[i] = counter.points if counter is not None else float("nan")
        pts.append(curve().detach())
    return BaselineResult(torch.stack(pts), conv, iters, evals, secs,
                          [f"L-BFGS per pair: {n_interior} interior points, strong Wolfe, history {history}, "
                           f"stop at max|grad| <= {tol:g} (energy / chord energy, offsets in |x1 - x0|), "
                           f"cap {max_iter} iterations"])


# ============================================================================ Adam
def adam_geodesic(inner: Inner, x0: torch.Tensor, x1: torch.Tensor, n_interior: int = 64, lr: float = 1e-2,
                  steps: int = 2000, tol: float = 1e-5, counter: CountingScore | None = None) -> BaselineResult:
    """Adam (lr, steps) on the interior points of the discrete energy, from the straight line.

    All pairs in one batch: the loss is the sum of the pairs' energies and Adam's update is
    elementwise, so each pair follows exactly its own trajectory. ``converged``: the same
    scale-free gradient rule as ``lbfgs_geodesic`` at the end.
    """
    B = x0.shape[0]
    if counter is not None:
        counter.reset()
    t0 = time.perf_counter()
    line = straight_line(x0, x1, n_interior + 2)  # (B, n, d)
    X = line[:, 1:-1].clone().requires_grad_(True)
    opt = torch.optim.Adam([X], lr=lr)

    def curve():
        return torch.cat([line[:, :1], X, line[:, -1:]], 1)

    for _ in range(steps):
        opt.zero_grad()
        discrete_energy(inner, curve()).sum().backward()
        opt.step()
    seconds = time.perf_counter() - t0
    evals = torch.full((B,), counter.points / B if counter is not None else float("nan"))
    with torch.no_grad():
        e0 = discrete_energy(inner, line)
    opt.zero_grad()
    discrete_energy(inner, curve()).sum().backward()
    scale = (x1 - x0).norm(dim=-1)
    rel_grad = (X.grad.abs().amax((-1, -2)) * scale / e0)  # the gradient of E/E0 with respect to Y
    return BaselineResult(curve().detach(), rel_grad <= tol, torch.full((B,), float(steps)), evals,
                          torch.full((B,), seconds / B),
                          [f"Adam lr {lr:g}, {steps} iterations, {n_interior} interior points, all pairs in one batch "
                           f"(s/pair = total / pairs); final scale-free gradient median {rel_grad.median():.1e}"])


# ============================================================================ geomstats
class PairTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise PairTimeout("timeout")


def geomstats_geodesic(score: Callable, lam: float, alpha: float, x0: torch.Tensor, x1: torch.Tensor,
                       n_nodes: int = 100, timeout: int = 120, counter: CountingScore | None = None) -> BaselineResult:
    """geomstats 2.8 PathStraightening, one pair at a time, G(x) = αI + λ s sᵀ as a dense matrix field.

    ``score`` should already be the counting wrapper when evaluations are to be counted (pass
    the same object as ``counter``). Pairs over ``timeout`` seconds or raising count as not
    converged (their points are the straight line, length NaN is decided by the caller).
    """
    import os

    if os.environ.get("GEOMSTATS_BACKEND") != "pytorch":
        raise RuntimeError("set GEOMSTATS_BACKEND=pytorch before importing geomstats")
    import logging

    import geomstats.numerics.geodesic as gm
    from geomstats.geometry.euclidean import Euclidean
    from geomstats.geometry.riemannian_metric import RiemannianMetric
    from geomstats.numerics.optimization import ScipyMinimize

    d = x0.shape[-1]

    class ScoreMatrixMetric(RiemannianMetric):
        def metric_matrix(self, base_point=None):
            s = score(base_point)
            eye = torch.eye(d, dtype=s.dtype)
            return alpha * eye + lam * s.unsqueeze(-1) * s.unsqueeze(-2)

    space = Euclidean(dim=d, equip=False)
    space.equip_with_metric(ScoreMatrixMetric)
    optimizer = ScipyMinimize(method="L-BFGS-B", autodiff_jac=True, options={"disp": False}, save_result=True)
    solver = gm.PathStraightening(space, n_nodes=n_nodes, optimizer=optimizer)
    logging.getLogger().setLevel(logging.ERROR)  # geomstats logs each unsuccessful optimisation
    B = x0.shape[0]
    pts, conv, iters, evals, secs = [], torch.zeros(B, dtype=torch.bool), torch.zeros(B), torch.zeros(B), torch.zeros(B)
    notes = []
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for i in range(B):
            if counter is not None:
                counter.reset()
            t0 = time.perf_counter()
            try:
                signal.alarm(timeout)
                try:
                    path = solver.discrete_geodesic_bvp(x1[i], x0[i])  # (n_nodes, d) from x0 to x1
                finally:
                    signal.alarm(0)
                res = solver.optimizer.result_
                conv[i] = bool(res.success)
                iters[i] = float(getattr(res, "nit", math.nan))
                pts.append(path.detach().to(x0.dtype))
            except Exception as exc:  # noqa: BLE001 - a failure of the solver under test
                msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"
                if msg not in notes:
                    notes.append(msg)
                pts.append(torch.full((n_nodes, d), float("nan"), dtype=x0.dtype))
                iters[i] = float("nan")
            secs[i] = time.perf_counter() - t0
            evals[i] = counter.points if counter is not None else float("nan")
    finally:
        signal.signal(signal.SIGALRM, old)
    return BaselineResult(torch.stack(pts), conv, iters, evals, secs,
                          [f"geomstats PathStraightening n_nodes={n_nodes}, L-BFGS-B (autodiff), per pair, "
                           f"timeout {timeout} s/pair; converged = optimiser success"]
                          + [f"exception: {m}" for m in notes])
