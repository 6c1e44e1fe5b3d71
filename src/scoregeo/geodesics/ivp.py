"""Initial-value geodesics: integrate ẍ = −Γ(ẋ, ẋ) with torchdiffeq."""

from __future__ import annotations

import warnings

import torch
from torch.func import jvp, vmap
from torchdiffeq import odeint

from .._checks import check_points, check_positive_int, check_same_shape
from ..metrics import Metric
from .path import Path


def default_tolerances(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for the adaptive integrator: tight in float64, loose enough for float32."""
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
) -> Path:
    """Geodesic from x with initial velocity v over [0, t] (initial-value problem).

    Args:
        metric: any :class:`~scoregeo.Metric`.
        x, v: (..., d) start points and initial velocities (broadcast together).
        t: end time (> 0); the end point is exp_x(t v).
        n_points: number of samples along each path (>= 2), uniform in time.
        rtol, atol: integrator tolerances (defaults: 1e-10/1e-11 in float64,
            1e-6/1e-7 in float32).
        method: a torchdiffeq method; adaptive ones ("dopri5", the default)
            control the error, fixed-step ones ("rk4") take ``n_points − 1``
            steps. (torchdiffeq's "dopri8" misses its tolerance by orders of
            magnitude on these equations, so it is not the default.)

    Returns:
        A :class:`Path` whose ``speed_drift`` (= ``residual``) measures how well
        the constant speed of a geodesic was conserved; ``converged`` is False,
        with a warning, when it drifted by more than 1e-6 (float64) or 1e-3
        (float32) relative, or the integration produced non-finite values.
    """
    x, v = validated_points(metric, x, v, ("x", "v"))
    n_points = check_positive_int(n_points, "n_points", minimum=2)
    if not isinstance(t, (int, float)) or not t > 0 or t == float("inf"):
        raise ValueError(f"t must be a finite number > 0, got {t!r}")
    batch = x.shape[:-1]
    x, v = x.reshape(-1, metric.dim), v.reshape(-1, metric.dim)
    times = torch.linspace(0.0, float(t), n_points, dtype=x.dtype, device=x.device)
    xs, vs = integrate(metric, x, v, times, rtol=rtol, atol=atol, method=method)
    path = path_from_trajectory(metric, xs, vs, times, method=f"shoot/{method}")
    path.converged = path.converged & (path.speed_drift <= speed_tolerance(x.dtype))
    if not bool(path.converged.all()):
        bad = int((~path.converged).sum())
        warnings.warn(
            f"shoot: {bad} of {path.converged.numel()} geodesics did not conserve their speed to "
            f"{speed_tolerance(x.dtype):g} (max drift {float(path.speed_drift.max()):.3g}); "
            "tighten rtol/atol or use an adaptive method",
            RuntimeWarning,
            stacklevel=2,
        )
    return path.reshape(batch)


def exp_map(metric: Metric, x: torch.Tensor, v: torch.Tensor, t: float = 1.0, **kwargs) -> torch.Tensor:
    """Riemannian exponential map exp_x(t v), shape (..., d). Keyword arguments go to :func:`shoot`."""
    return shoot(metric, x, v, t=t, n_points=2, **kwargs).end_point


def integrate(
    metric: Metric,
    x: torch.Tensor,
    v: torch.Tensor,
    times: torch.Tensor,
    rtol: float | None = None,
    atol: float | None = None,
    method: str = "dopri5",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrate the geodesic equation for a flat batch x, v (B, d).

    Returns positions and velocities at ``times``, each (B, n, d). The adaptive
    step is controlled in the max-norm over the whole batch, so every curve (not
    just the average) meets the tolerance.
    """

    def rhs(_t, state):
        pos, vel = state
        return vel, metric._acceleration(pos, vel)

    xs, vs = _odeint(rhs, (x, v), times, rtol, atol, method, n_controlled=2)
    return xs.transpose(0, 1), vs.transpose(0, 1)


def integrate_with_jacobian(
    metric: Metric,
    x: torch.Tensor,
    v: torch.Tensor,
    times: torch.Tensor,
    rtol: float | None = None,
    atol: float | None = None,
    method: str = "dopri5",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Like :func:`integrate`, also returning ∂x(T)/∂v(0), (B, d, d), from the Jacobi equation.

    The variations X = ∂x/∂v₀ and V = ∂ẋ/∂v₀ obey Ẋ = V, V̇ = ∂a/∂x X + ∂a/∂v V,
    with a(x, v) the geodesic acceleration; each column is one JVP of a. Only
    x and v take part in step-size control.
    """
    d = x.shape[-1]
    eye = torch.eye(d, dtype=x.dtype, device=x.device).expand(x.shape[0], d, d)

    def rhs(_t, state):
        pos, vel, dpos, dvel = state

        def push(tangent_x, tangent_v):
            return jvp(metric._acceleration, (pos, vel), (tangent_x, tangent_v))[1]

        # out_dims=-1 gives a corrupt shape in torch 2.13 when the acceleration does not depend on
        # its inputs (a flat metric); batch the columns first and move them last instead
        dacc = vmap(push, in_dims=(-1, -1))(dpos, dvel).movedim(0, -1)
        return vel, metric._acceleration(pos, vel), dvel, dacc

    xs, vs, dxs, _ = _odeint(rhs, (x, v, torch.zeros_like(eye), eye.clone()), times, rtol, atol, method, 2)
    return xs.transpose(0, 1), vs.transpose(0, 1), dxs[-1]


def path_from_trajectory(metric: Metric, xs: torch.Tensor, vs: torch.Tensor, times: torch.Tensor, method: str) -> Path:
    """A :class:`Path` (flat batch) from sampled positions and velocities (B, n, d) of a geodesic."""
    speed_sq = metric._inner(xs, vs, vs)
    initial = speed_sq[:, :1]
    drift = ((speed_sq - initial).abs() / initial.clamp_min(torch.finfo(xs.dtype).tiny)).amax(-1)
    drift = torch.where(initial[:, 0] > 0, drift, (speed_sq - initial).abs().amax(-1))
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
    )


def validated_points(
    metric: Metric, a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a metric and two (..., d) tensors named ``names`` for a solver; return them broadcast together."""
    if not isinstance(metric, Metric):
        raise ValueError(f"metric must be a scoregeo Metric, got {type(metric).__name__}")
    check_points(a, metric.dim, names[0])
    check_points(b, metric.dim, names[1])
    check_same_shape(a, b, *names)
    if a.dtype != b.dtype:
        raise ValueError(f"{names[0]} and {names[1]} must have the same dtype, got {a.dtype} and {b.dtype}")
    metric.check_solvable()
    return torch.broadcast_tensors(a, b)


_ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
_FIXED = ("rk4", "euler", "midpoint")


def _odeint(rhs, state, times, rtol, atol, method, n_controlled):
    """torchdiffeq.odeint; adaptive methods control the max-norm error of the first ``n_controlled`` states."""
    if method in _ADAPTIVE:
        options = {"norm": lambda tensors: max(t.abs().max() for t in tensors[:n_controlled])}
    elif method in _FIXED:
        options = {}
    else:
        raise ValueError(f"method must be one of {_ADAPTIVE + _FIXED}, got {method!r}")
    default_rtol, default_atol = default_tolerances(times.dtype)
    with torch.no_grad():
        return odeint(
            rhs,
            state,
            times,
            rtol=default_rtol if rtol is None else rtol,
            atol=default_atol if atol is None else atol,
            method=method,
            options=options,
        )
