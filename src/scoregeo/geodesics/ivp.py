"""Initial-value geodesics: integrate ẍ = a(x, ẋ) = −Γ(ẋ, ẋ) with a batched Runge–Kutta solver.

Every curve of a batch has its own step size, error control, evaluation count
and budget, so a curve gets the same result alone or inside any batch, and a
curve that needs many steps (or fails) does not make its neighbours pay for it.
The adaptive method is the Dormand–Prince 5(4) pair; samples between steps come
from the quintic Hermite interpolant of (x, ẋ, ẍ) at both ends of a step, which
costs no extra evaluation.

Why high-dimensional shots can be expensive: for a learned score the Jacobian
J = ∂s/∂x is not symmetric, and the term λ (s·v) (J − Jᵀ) v of the acceleration
acts like a magnetic field that turns the velocity at a rate of about
λ |s·v| ‖J − Jᵀ‖ / α. The curve really winds that fast, so any explicit
integrator needs a number of steps proportional to it (measured at d = 3072,
float32, a random MLP d → 256 → 256 → d and a velocity the size of the distance
between two data points: 158 evaluations at λ = 1, 836 at λ = 10, 8 996 at
λ = 100, about 1.5 ms each on one CPU thread). The budget ``max_evals`` bounds
the cost of every call.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch.func import jvp, vmap

from .._checks import check_magnitude, check_points, check_positive, check_positive_int, check_same_shape
from ..metrics import Metric
from .path import Path

MAX_EVALS = 10_000
"""Default budget of acceleration evaluations per curve and call (about 1 650 Dormand–Prince steps)."""

METHODS = ("dopri5", "rk4")

_STOP_REACHED, _STOP_BUDGET, _STOP_FAILED = 0, 1, 2

# Dormand–Prince 5(4) for an autonomous system: stage coefficients, 5th-order weights (= the last stage row,
# so the last stage is the first of the next step) and the 5th − 4th order weights (error estimate).
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_B = _DP_A[6] + (0.0,)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_DP_E = tuple(b - b4 for b, b4 in zip(_DP_B, _DP_B4))
# classical RK4, with a fifth stage at the new point that serves as the next step's first
_RK4_A = ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0), (1 / 6, 1 / 3, 1 / 3, 1 / 6))

_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0


def default_tolerances(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for the adaptive integrator: tight in float64, loose enough for float32.

    float32: 1e-6 is about eight units of roundoff, the tightest an error estimate
    computed in float32 resolves; float64: 1e-10 leaves the speed-drift
    criterion (1e-6) four orders of margin for the error accumulated over
    thousands of steps.
    """
    return (1e-10, 1e-11) if dtype == torch.float64 else (1e-6, 1e-7)


def speed_tolerance(dtype: torch.dtype) -> float:
    """Largest relative drift of ⟨ẋ, ẋ⟩ along a shot that still counts as converged."""
    return 1e-6 if dtype == torch.float64 else 1e-3


def shoot(
    metric: Metric,
    x: torch.Tensor,
    v: torch.Tensor,
    t: float = 1.0,
    n_points: int = 64,
    rtol: float | None = None,
    atol: float | None = None,
    method: str = "dopri5",
    max_evals: int = MAX_EVALS,
) -> Path:
    """Geodesic from x with initial velocity v over [0, t] (initial-value problem).

    Args:
        metric: any :class:`~scoregeo.Metric`.
        x, v: (..., d) start points and initial velocities (broadcast together),
            float32 or float64; a batch may be empty.
        t: end time (finite, > 0); the end point is exp_x(t v).
        n_points: number of samples along each path (>= 2), uniform in time.
        rtol, atol: tolerances (finite, > 0) of the adaptive method on the local
            error of each step, for every coordinate of every curve:
            |error_i| ≤ atol + rtol·|x_i|, the same for the velocities. Defaults: see
            :func:`default_tolerances` (1e-10/1e-11 in float64, 1e-6/1e-7 in float32).
        method: "dopri5" (adaptive Dormand–Prince 5(4), the default) or "rk4"
            (classical Runge–Kutta with ``n_points − 1`` fixed steps; no error control).
        max_evals: budget of acceleration evaluations per curve (default
            :data:`MAX_EVALS` = 10 000). A curve that would exceed it stops where
            it is.

    Returns:
        A :class:`Path` (shapes as x with n = ``n_points``). ``evaluations`` counts
        the acceleration evaluations of each curve; ``speed_drift``
        (= ``residual``) measures how well the constant speed of a geodesic was
        conserved. ``converged`` is False, with a warning, when a curve ran out
        of budget, when the acceleration became NaN or Inf (or the step size
        underflowed) before the end time, or when the speed drifted by more than
        :func:`speed_tolerance` (1e-6 in float64, 1e-3 in float32) relative. The
        samples after the time a curve stopped are NaN.
    """
    given = x
    x, v = validated_points(metric, x, v, ("x", "v"))
    n_points = check_positive_int(n_points, "n_points", minimum=2)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not t > 0:
        raise ValueError(f"t must be a finite number > 0, got {t!r}")
    batch = x.shape[:-1]
    x, v = x.reshape(-1, metric.dim), v.reshape(-1, metric.dim)
    times = torch.linspace(0.0, float(t), n_points, dtype=x.dtype, device=x.device)
    run = _integrate(metric._acceleration, x, v, times, rtol, atol, method, max_evals, metric.dim)
    if x.shape[0] == 0:  # an empty batch: the metric is never called
        return shaped_like(metric, given, _empty_path(run, times, f"shoot/{method}").reshape(batch))
    path = path_from_trajectory(metric, run.positions, run.velocities, times, f"shoot/{method}", run.evaluations)
    path.converged = path.converged & (run.status == _STOP_REACHED) & (path.speed_drift <= speed_tolerance(x.dtype))
    if not bool(path.converged.all()):
        warnings.warn(_failure_report(run, path, x, max_evals), RuntimeWarning, stacklevel=2)
    return shaped_like(metric, given, path.reshape(batch))


def exp_map(metric: Metric, x: torch.Tensor, v: torch.Tensor, t: float = 1.0, **kwargs) -> torch.Tensor:
    """Riemannian exponential map exp_x(t v), shape of x. Keyword arguments go to :func:`shoot`."""
    return shoot(metric, x, v, t=t, n_points=2, **kwargs).end_point


def integrate(
    metric: Metric,
    x: torch.Tensor,
    v: torch.Tensor,
    times: torch.Tensor,
    rtol: float | None = None,
    atol: float | None = None,
    method: str = "dopri5",
    max_evals: int = MAX_EVALS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrate the geodesic equation for a flat batch x, v (B, d) from ``times[0]``.

    Args:
        times: (n,) increasing sample times, n >= 2.
        rtol, atol, method, max_evals: as in :func:`shoot`.

    Returns:
        Positions and velocities at ``times``, each (B, n, d); NaN after the time
        a curve stopped (budget exhausted or non-finite acceleration).
    """
    run = _integrate(metric._acceleration, x, v, times, rtol, atol, method, max_evals, metric.dim)
    return run.positions, run.velocities


def integrate_with_jacobian(
    metric: Metric,
    x: torch.Tensor,
    v: torch.Tensor,
    times: torch.Tensor,
    rtol: float | None = None,
    atol: float | None = None,
    method: str = "dopri5",
    max_evals: int = MAX_EVALS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Like :func:`integrate`, also returning ∂x(T)/∂v(0), (B, d, d), from the Jacobi equation.

    The variations X = ∂x/∂v₀ and V = ∂ẋ/∂v₀ obey Ẍ = ∂a/∂x X + ∂a/∂v V, with
    a(x, v) the geodesic acceleration; each column is one JVP of a. Only x and v
    take part in step-size control; each evaluation counted by ``max_evals`` is
    one acceleration and d JVPs.
    """
    d = x.shape[-1]
    eye = torch.eye(d, dtype=x.dtype, device=x.device).expand(x.shape[0], d, d)

    def acceleration(q, p):
        pos, vel = q[:, :d], p[:, :d]
        dpos, dvel = q[:, d:].unflatten(1, (d, d)), p[:, d:].unflatten(1, (d, d))

        def push(tangent_x, tangent_v):
            return jvp(metric._acceleration, (pos, vel), (tangent_x, tangent_v))[1]

        # out_dims=-1 gives a corrupt shape in torch 2.13 when the acceleration does not depend on
        # its inputs (a flat metric); batch the columns first and move them last instead
        dacc = vmap(push, in_dims=(-1, -1))(dpos, dvel).movedim(0, -1)
        return torch.cat([metric._acceleration(pos, vel), dacc.flatten(1)], dim=1)

    q0 = torch.cat([x, torch.zeros_like(eye).flatten(1)], dim=1)
    p0 = torch.cat([v, eye.flatten(1)], dim=1)
    run = _integrate(acceleration, q0, p0, times, rtol, atol, method, max_evals, d)
    qs, ps = run.positions, run.velocities
    return qs[..., :d], ps[..., :d], qs[:, -1, d:].unflatten(1, (d, d))


def path_from_trajectory(
    metric: Metric,
    xs: torch.Tensor,
    vs: torch.Tensor,
    times: torch.Tensor,
    method: str,
    evaluations: torch.Tensor | None = None,
) -> Path:
    """A :class:`Path` (flat batch) from sampled positions and velocities (B, n, d) of a geodesic.

    Samples that are NaN (after a curve stopped) do not enter ``speed_drift``,
    but make ``converged`` False. ``evaluations`` (B,) is stored as given.
    """
    speed_sq = metric._inner(xs, vs, vs)
    initial = speed_sq[:, :1]
    drift = ((speed_sq - initial).abs() / initial.clamp_min(torch.finfo(xs.dtype).tiny))
    drift = torch.where(initial > 0, drift, (speed_sq - initial).abs())
    drift = torch.where(torch.isnan(drift), 0.0, drift).amax(-1)
    duration = times[-1] - times[0]
    finite = torch.isfinite(xs).all(-1).all(-1) & torch.isfinite(speed_sq).all(-1)
    return Path(
        points=xs,
        times=times,
        length=duration * initial[:, 0].clamp_min(0).sqrt(),
        energy=duration * initial[:, 0],
        converged=finite,
        initial_velocity=vs[:, 0],
        residual=drift,
        speed_drift=drift,
        method=method,
        evaluations=evaluations,
    )


def validated_points(
    metric: Metric, a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a metric and two (..., d) tensors named ``names`` for a solver; return them broadcast together.

    Both must be float32 or float64, finite, of the same dtype, with coordinates
    small enough that their squares do not overflow (:func:`check_magnitude`).
    Points of shape (..., *metric.event_shape) (images) are flattened to (..., d).
    """
    if not isinstance(metric, Metric):
        raise ValueError(f"metric must be a scoregeo Metric, got {type(metric).__name__}")
    (a, _), (b, _) = metric.flatten_points(a, names[0]), metric.flatten_points(b, names[1])
    for tensor, name in zip((a, b), names):
        check_points(tensor, metric.dim, name)
        check_magnitude(tensor, name)
    check_same_shape(a, b, *names)
    if a.dtype != b.dtype:
        raise ValueError(f"{names[0]} and {names[1]} must have the same dtype, got {a.dtype} and {b.dtype}")
    metric.check_solvable()
    return torch.broadcast_tensors(a, b)


def shaped_like(metric: Metric, x, path: Path) -> Path:
    """``path`` with image-shaped points when the user's ``x`` was shaped (..., *metric.event_shape)."""
    return path.shaped(metric.event_shape) if metric.flatten_points(x)[1] else path


@dataclass
class _Run:
    """Result of :func:`_integrate` for a flat batch of B curves with n samples."""

    positions: torch.Tensor  # (B, n, m), NaN after the stop
    velocities: torch.Tensor  # (B, n, m)
    evaluations: torch.Tensor  # (B,) int64, acceleration evaluations
    status: torch.Tensor  # (B,) int64: _STOP_REACHED, _STOP_BUDGET or _STOP_FAILED
    stop_time: torch.Tensor  # (B,) time each curve got to
    stop_point: torch.Tensor  # (B, m) last accepted position


def _integrate(
    acceleration: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    v: torch.Tensor,
    times: torch.Tensor,
    rtol: float | None,
    atol: float | None,
    method: str,
    max_evals: int,
    n_controlled: int,
) -> _Run:
    """Solve ẍ = acceleration(x, ẋ) for x, v (B, m), each curve with its own step size.

    The error of a step must be below atol + rtol·|y_i| in each of the first
    ``n_controlled`` coordinates of the positions and of the velocities (a
    max-norm per curve, as strict in d = 3072 as in d = 2; a Euclidean norm
    would take about 1.6× fewer steps in high d but lets the coordinates near 0
    carry larger relative errors). A stage with a NaN or Inf counts as a
    rejected step (the step shrinks); a curve whose acceleration at the start is
    not finite, or whose step underflows (the end of a curve that runs into a
    NaN region), stops with _STOP_FAILED.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    max_evals = check_positive_int(max_evals, "max_evals")
    default_rtol, default_atol = default_tolerances(x.dtype)
    rtol = default_rtol if rtol is None else check_positive(rtol, "rtol")
    atol = default_atol if atol is None else check_positive(atol, "atol")
    if times.ndim != 1 or times.numel() < 2 or not bool((times[1:] > times[:-1]).all()):
        raise ValueError(f"times must be an increasing 1-D tensor of at least 2 times, got {times.tolist()}")
    batch, width = x.shape
    n = times.numel()
    xs = torch.full((batch, n, width), float("nan"), dtype=x.dtype, device=x.device)
    vs = torch.full_like(xs, float("nan"))
    xs[:, 0], vs[:, 0] = x, v
    evaluations = torch.zeros(batch, dtype=torch.long, device=x.device)
    status = torch.full((batch,), _STOP_REACHED, dtype=torch.long, device=x.device)
    t = torch.full((batch,), float(times[0]), dtype=x.dtype, device=x.device)
    t_end = float(times[-1])
    if batch == 0:
        return _Run(xs, vs, evaluations, status, t, x.clone())
    pos, vel = x.clone(), v.clone()
    with torch.no_grad():
        acc = acceleration(pos, vel)
        evaluations += 1
        status[~_finite_rows(acc)] = _STOP_FAILED
        if method == "dopri5":
            norm = _ErrorNorm(rtol, atol, n_controlled)
            step = _initial_step(acceleration, pos, vel, acc, norm, order=5)
            evaluations += 1
        else:
            step = torch.zeros_like(t)  # fixed steps go from sample to sample
        next_sample = torch.ones(batch, dtype=torch.long, device=x.device)
        cost = len(_DP_A) - 1 if method == "dopri5" else len(_RK4_A) - 1
        while True:
            out_of_budget = (status == _STOP_REACHED) & (t < t_end) & (evaluations + cost > max_evals)
            status[out_of_budget] = _STOP_BUDGET
            idx = ((status == _STOP_REACHED) & (t < t_end)).nonzero().squeeze(-1)
            if idx.numel() == 0:
                break
            t0, p0, v0, a0 = t[idx], pos[idx], vel[idx], acc[idx]
            if method == "dopri5":
                h = torch.minimum(step[idx], t_end - t0)
                last = h >= t_end - t0
                p1, v1, a1, ok, ratio = _rk_step(acceleration, p0, v0, a0, h, _DP_A, norm)
                accept = ok & (ratio <= 1)
                factor = (_SAFETY * ratio.clamp_min(1e-10) ** -0.2).clamp(_MIN_FACTOR, _MAX_FACTOR)
                factor = torch.where(accept, factor, factor.clamp_max(1.0))
                step[idx] = h * factor
                underflow = ~accept & (step[idx] <= 16 * torch.finfo(x.dtype).eps * max(abs(t_end), 1.0))
                status[idx[underflow]] = _STOP_FAILED
            else:
                target = times[next_sample[idx]]
                h = target - t0
                p1, v1, a1, ok, _ = _rk_step(acceleration, p0, v0, a0, h, _RK4_A, None)
                accept = ok
                status[idx[~ok]] = _STOP_FAILED
            evaluations[idx] += cost
            t1 = torch.where(last, torch.full_like(t0, t_end), t0 + h) if method == "dopri5" else target
            moved = idx[accept]
            ends = tuple(e[accept] for e in (p0, v0, a0, p1, v1, a1))
            _fill_samples(xs, vs, next_sample, times, moved, t0[accept], h[accept], t1[accept], ends)
            t[moved], pos[moved], vel[moved], acc[moved] = t1[accept], ends[3], ends[4], ends[5]
    return _Run(xs, vs, evaluations, status, t, pos)


class _ErrorNorm:
    """Per-curve error ratio: max of |e_i| / (atol + rtol |y_i|) over the first m coordinates of (x, v)."""

    def __init__(self, rtol: float, atol: float, n_controlled: int):
        self.rtol, self.atol, self.m = rtol, atol, n_controlled

    def __call__(self, errors: tuple[torch.Tensor, ...], states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        ratios = [
            (e[:, : self.m].abs() / (self.atol + self.rtol * y[:, : self.m].abs())).amax(-1)
            for e, y in zip(errors, states)
        ]
        return torch.stack(ratios).amax(0)


def _rk_step(acceleration, p0, v0, a0, h, tableau, norm):
    """One explicit Runge–Kutta step of ẍ = a(x, ẋ) for curves (B, m) with steps h (B,).

    The last row of ``tableau`` gives the new state, at which the last stage is
    evaluated (the next step's first stage). Returns the new position, velocity
    and acceleration, whether every stage was finite (B,), and the error ratio
    (B,) of the embedded pair (inf where a stage was not finite; None without ``norm``).
    """
    hs = h.unsqueeze(-1)
    dx, dv = [v0], [a0]
    for row in tableau[1:]:
        pos = p0 + hs * sum(c * k for c, k in zip(row, dx) if c)
        vel = v0 + hs * sum(c * k for c, k in zip(row, dv) if c)
        dx.append(vel)
        dv.append(acceleration(pos, vel))
    p1, v1, a1 = pos, vel, dv[-1]
    ok = _finite_rows(p1) & _finite_rows(v1) & torch.stack([_finite_rows(k) for k in dv]).all(0)
    if norm is None:
        return p1, v1, a1, ok, None
    err_x = hs * sum(e * k for e, k in zip(_DP_E, dx) if e)
    err_v = hs * sum(e * k for e, k in zip(_DP_E, dv) if e)
    scale_x, scale_v = torch.maximum(p0.abs(), p1.abs()), torch.maximum(v0.abs(), v1.abs())
    ratio = norm((err_x, err_v), (scale_x, scale_v))
    return p1, v1, a1, ok, torch.where(ok & ~torch.isnan(ratio), ratio, float("inf"))


def _initial_step(acceleration, p0, v0, a0, norm, order):
    """A first step size (B,) from the size of the state and of its first two derivatives.

    h₀ = 0.01·‖y‖/‖ẏ‖ (in the error norm), then h = (0.01 / max(‖ẏ‖, ‖ÿ‖·h₀))^(1/order)
    from one extra evaluation at y + h₀ ẏ, capped at 100 h₀: the step whose error
    term, by a Taylor estimate, is about 1 % of the tolerance.
    """
    states = (p0.abs(), v0.abs())
    size = norm((p0, v0), states)
    slope = norm((v0, a0), states)
    h0 = torch.where((size > 1e-5) & (slope > 1e-5), 0.01 * size / slope.clamp_min(1e-300), 1e-6)
    h0 = torch.nan_to_num(h0, nan=1e-6, posinf=1e-6)
    hs = h0.unsqueeze(-1)
    p1, v1 = p0 + hs * v0, v0 + hs * a0
    a1 = acceleration(p1, v1)
    curvature = norm((v1 - v0, a1 - a0), states) / h0
    top = torch.maximum(slope, curvature)
    h1 = torch.where(top > 1e-15, (0.01 / top.clamp_min(1e-300)) ** (1.0 / order), (h0 * 1e-3).clamp_min(1e-6))
    step = torch.minimum(100 * h0, torch.nan_to_num(h1, nan=1e-6))
    return step.clamp_min(torch.finfo(p0.dtype).tiny)


def _fill_samples(xs, vs, next_sample, times, idx, t0, h, t1, ends):
    """Write the samples with times in (t0, t1] of curves ``idx`` from the quintic Hermite interpolant.

    ``ends`` = (x₀, v₀, a₀, x₁, v₁, a₁), each (k, m): the interpolant matches
    position, velocity and acceleration at both ends of the step, so its
    position error is O(h⁶) and its velocity (its derivative) error O(h⁵), the
    orders of the step itself. Advances ``next_sample``.
    """
    if idx.numel() == 0:
        return
    n = times.numel()
    inside = (times > t0.unsqueeze(-1)) & (times <= t1.unsqueeze(-1))
    rows, cols = inside.nonzero(as_tuple=True)
    if rows.numel():
        theta = ((times[cols] - t0[rows]) / h[rows]).clamp(0.0, 1.0).unsqueeze(-1)
        hk = h[rows].unsqueeze(-1)
        x0, v0, a0, x1, v1, a1 = (e[rows] for e in ends)
        basis, slopes = _quintic_hermite(theta)
        coefficients = (x0, hk * v0, hk * hk * a0, x1, hk * v1, hk * hk * a1)
        xs[idx[rows], cols] = sum(b * c for b, c in zip(basis, coefficients))
        vs[idx[rows], cols] = sum(s * c for s, c in zip(slopes, coefficients)) / hk
    next_sample[idx] = torch.clamp(torch.searchsorted(times, t1, right=True), max=n)


def _quintic_hermite(s: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Quintic Hermite basis on [0, 1] and its derivatives at s, ordered (y₀, y₀′, y₀″, y₁, y₁′, y₁″)."""
    s2, s3, s4, s5 = s**2, s**3, s**4, s**5
    basis = (
        1 - 10 * s3 + 15 * s4 - 6 * s5,
        s - 6 * s3 + 8 * s4 - 3 * s5,
        0.5 * s2 - 1.5 * s3 + 1.5 * s4 - 0.5 * s5,
        10 * s3 - 15 * s4 + 6 * s5,
        -4 * s3 + 7 * s4 - 3 * s5,
        0.5 * s3 - s4 + 0.5 * s5,
    )
    slopes = (
        -30 * s2 + 60 * s3 - 30 * s4,
        1 - 18 * s2 + 32 * s3 - 15 * s4,
        s - 4.5 * s2 + 6 * s3 - 2.5 * s4,
        30 * s2 - 60 * s3 + 30 * s4,
        -12 * s2 + 28 * s3 - 15 * s4,
        1.5 * s2 - 4 * s3 + 2.5 * s4,
    )
    return basis, slopes


def _empty_path(run: _Run, times: torch.Tensor, method: str) -> Path:
    """The :class:`Path` of an empty flat batch: every field with 0 curves."""
    empty = run.stop_time
    return Path(
        points=run.positions,
        times=times,
        length=empty,
        energy=empty,
        converged=torch.zeros_like(empty, dtype=torch.bool),
        initial_velocity=run.velocities[:, 0],
        residual=empty,
        speed_drift=empty,
        method=method,
        evaluations=run.evaluations,
    )


def _finite_rows(x: torch.Tensor) -> torch.Tensor:
    """(B,) whether each row of x (B, m) is finite."""
    return torch.isfinite(x).all(-1)


def _failure_report(run: _Run, path: Path, x: torch.Tensor, max_evals: int) -> str:
    """The warning of :func:`shoot` for its unconverged curves (flat batch)."""
    parts = []
    budget = run.status == _STOP_BUDGET
    if bool(budget.any()):
        parts.append(
            f"{int(budget.sum())} ran out of their budget of max_evals={max_evals} acceleration evaluations "
            f"(stopped at t = {float(run.stop_time[budget].min()):.3g}; raise max_evals, or loosen rtol/atol); "
            "the samples after the stop are NaN"
        )
    failed = run.status == _STOP_FAILED
    if bool(failed.any()):
        first = int(failed.nonzero()[0])
        parts.append(
            f"{int(failed.sum())} stopped where the metric's acceleration was NaN or Inf or the step size "
            f"underflowed (first: curve {first} at t = {float(run.stop_time[first]):.3g}, "
            f"x = {_short(run.stop_point[first, : x.shape[-1]])}); the samples after the stop are NaN"
        )
    drifted = (run.status == _STOP_REACHED) & ~path.converged
    if bool(drifted.any()):
        parts.append(
            f"{int(drifted.sum())} did not conserve their speed to {speed_tolerance(x.dtype):g} "
            f"(max drift {float(path.speed_drift[drifted].max()):.3g}); tighten rtol/atol"
        )
    return f"shoot: of {run.status.numel()} geodesics, " + "; ".join(parts)


def _short(point: torch.Tensor) -> str:
    """A point for a message: all coordinates when few, else the first four."""
    values = point.detach().cpu().tolist()
    text = ", ".join(f"{value:.4g}" for value in values[:4])
    return f"[{text}{', …' if len(values) > 4 else ''}]"
