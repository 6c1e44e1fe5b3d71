"""Initial-value geodesics (sg.shoot / sg.exp_map) against independent oracles, up to d = 3072.

Oracles: the hyperbolic half-plane's closed-form geodesic; the rotational
symmetry of an isotropic Gaussian's score metric, which confines a geodesic in
any d to the 2-plane of its start and velocity, where torchdiffeq's fixed-step
RK4 integrates the hand-derived equation; torchdiffeq's RK4 at fine steps for
an MLP score in d = 3072.
"""

from __future__ import annotations

import time
import warnings

import pytest
import torch
from torchdiffeq import odeint

import scoregeo as sg

F64 = torch.float64


def half_plane() -> sg.MatrixMetric:
    return sg.MatrixMetric(lambda x: torch.eye(2, dtype=x.dtype) / x[..., 1:2, None] ** 2, 2)


def semicircle(t: torch.Tensor) -> torch.Tensor:
    """Unit-speed half-plane geodesic from (0, 1) with velocity (1, 0): (tanh t, sech t)."""
    return torch.stack([torch.tanh(t), 1 / torch.cosh(t)], -1)


def mlp_score(d: int, hidden: int, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised score network d → hidden → hidden → d (non-conservative: J ≠ Jᵀ)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(d, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
        torch.nn.Linear(hidden, d),
    ).to(dtype)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def rk4_reference(metric: sg.Metric, x: torch.Tensor, v: torch.Tensor, times: torch.Tensor, steps: int):
    """Positions (B, n, d) from torchdiffeq's fixed-step RK4 with ``steps`` steps over [0, times[-1]]."""

    def rhs(_t, state):
        return state[1], metric._acceleration(state[0], state[1])

    with torch.no_grad():
        xs, _ = odeint(rhs, (x, v), times, method="rk4", options={"step_size": float(times[-1]) / steps})
    return xs.transpose(0, 1)


# ------------------------------------------------------------ closed form, d = 2
def test_dopri5_meets_its_tolerance_at_every_sample():
    """Each sample (including the interpolated ones between steps) is within a small multiple of
    rtol of the closed form, and the error shrinks with the tolerance."""
    x, v, t = torch.tensor([0.0, 1.0], dtype=F64), torch.tensor([1.0, 0.0], dtype=F64), 2.0
    errors = []
    for rtol in (1e-7, 1e-8, 1e-9):
        path = sg.shoot(half_plane(), x, v, t=t, n_points=33, rtol=rtol, atol=rtol / 10, max_evals=100_000)
        errors.append(float((path.points - semicircle(path.times)).abs().max()))
        # global error over ~tens of steps: up to ~10× the local tolerance
        assert errors[-1] < 10 * rtol
    assert errors[0] > errors[1] > errors[2]
    assert int(path.evaluations) > 0


def test_rk4_is_fourth_order():
    x, v, t = torch.tensor([0.0, 1.0], dtype=F64), torch.tensor([1.0, 0.0], dtype=F64), 2.0
    errors = []
    for n in (17, 33, 65):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the coarse grid drifts more than 1e-6
            path = sg.shoot(half_plane(), x, v, t=t, n_points=n, method="rk4")
        errors.append(float((path.end_point - semicircle(torch.tensor(t, dtype=F64))).abs().max()))
        assert int(path.evaluations) == 1 + 4 * (n - 1)
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(12 < r < 20 for r in ratios), ratios  # 2⁴ = 16 when the step halves


def test_a_curve_gets_the_same_result_alone_and_in_a_batch():
    metric = half_plane()
    x = torch.tensor([[0.0, 1.0], [0.3, 2.0], [-1.0, 0.5]], dtype=F64)
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, -0.5]], dtype=F64)
    batch = sg.shoot(metric, x, v, n_points=16, rtol=1e-8, atol=1e-9)
    for i in range(3):
        alone = sg.shoot(metric, x[i], v[i], n_points=16, rtol=1e-8, atol=1e-9)
        assert torch.equal(alone.points, batch.points[i])
        assert int(alone.evaluations) == int(batch.evaluations[i])
    assert len(set(batch.evaluations.tolist())) > 1  # the curves really took different steps


# ----------------------------------------------------------- symmetry oracle, d = 3072
def test_gaussian_score_geodesic_in_d3072_matches_its_planar_reduction():
    """g = αI + λ s sᵀ with s = −(x − μ)/σ² is invariant under rotations about μ, so the geodesic
    stays in μ + span(r₀, v₀) and obeys ẍ = −k|ẋ|² r / (α + k|r|²), k = λ/σ⁴ (from the
    Euler–Lagrange equation of α|ẋ|² + k(r·ẋ)²), integrated here in 2-D by torchdiffeq."""
    d, sigma, lam, alpha = 3072, 1.5, 1.0, 1.0
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(d, generator=g, dtype=F64)
    x0 = mu + sigma * torch.randn(d, generator=g, dtype=F64)
    # data scale, bending by ~1.3 rad around the mode (straight at a sample, the curve would plunge into
    # the mode at ~3000 units/time and need ~6000 evaluations)
    v0 = sigma * torch.randn(d, generator=g, dtype=F64) - 0.2 * (x0 - mu)
    metric = sg.ScoreMetric(lambda x: -(x - mu) / sigma**2, d, lam=lam, alpha=alpha)
    path = sg.shoot(metric, x0, v0, n_points=17)
    assert bool(path.converged) and int(path.evaluations) <= sg.geodesics.ivp.MAX_EVALS

    r0 = x0 - mu
    e1 = r0 / r0.norm()
    e2 = v0 - (v0 @ e1) * e1
    e2 = e2 / e2.norm()
    frame = torch.stack([e1, e2], -1)  # (d, 2)
    k = lam / sigma**4

    def planar(_t, state):
        y, w = state
        return w, -k * (w * w).sum(-1, keepdim=True) * y / (alpha + k * (y * y).sum(-1, keepdim=True))

    fine, coarse = (
        odeint(planar, (r0 @ frame, v0 @ frame), path.times, method="rk4", options={"step_size": 1 / n})[0]
        for n in (4000, 2000)
    )
    scale = float(r0.abs().max())
    assert float((fine - coarse).abs().max()) < 1e-11 * scale  # the reference is converged (measured 4e-13)
    # dopri5 at rtol 1e-10 over ~60 steps: ~1e-9 relative at worst (measured 1.5e-11 absolute)
    torch.testing.assert_close(path.points, mu + fine @ frame.T, rtol=0, atol=1e-9 * scale)


def test_mlp_score_shot_in_d3072_is_bounded_and_matches_rk4():
    """A non-conservative MLP score, float32, data-scale velocity: finishes within its budget, and its
    end point agrees with torchdiffeq's RK4 (float64, 400 fixed steps) to the float32 tolerance.

    The field winds the curve by λ (s·v)(J − Jᵀ)v; at λ = 10 the same shot takes ~1 500 evaluations."""
    d = 3072
    net = mlp_score(d, 64, torch.float32)
    metric32 = sg.ScoreMetric(net, d, lam=3.0)
    metric64 = sg.ScoreMetric(mlp_score(d, 64, F64), d, lam=3.0)
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(2, d, generator=g)
    start = time.process_time()
    path = sg.shoot(metric32, x0, x1 - x0, n_points=2, max_evals=2_000)
    elapsed = time.process_time() - start
    assert bool(path.converged) and 0 < int(path.evaluations) <= 2_000
    assert elapsed < 20

    times = torch.tensor([0.0, 1.0], dtype=F64)
    ref = rk4_reference(metric64, x0.double()[None], (x1 - x0).double()[None], times, 400)[0, -1]
    coarse = rk4_reference(metric64, x0.double()[None], (x1 - x0).double()[None], times, 200)[0, -1]
    travel = float((ref - x0.double()).norm())
    # RK4 is 4th order, so the reference's own error is about |ref − coarse| / 15 (measured 3e-9 · travel)
    assert float((ref - coarse).norm()) < 1e-6 * travel
    # float32 at rtol 1e-6 over ~70 steps (440 evaluations): measured 3e-7 · travel; 30× margin
    assert float((path.end_point.double() - ref).norm()) < 1e-5 * travel


def test_stiff_mlp_shot_in_d3072_stops_at_its_budget():
    """At λ = 1000 the curve winds ~1000× faster than at λ = 1; the shot stops at its budget."""
    d = 3072
    metric = sg.ScoreMetric(mlp_score(d, 64, torch.float32), d, lam=1000.0)
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(2, d, generator=g)
    start = time.process_time()
    with pytest.warns(RuntimeWarning, match="max_evals=300"):
        path = sg.shoot(metric, x0, x1 - x0, n_points=4, max_evals=300)
    assert time.process_time() - start < 20
    assert not bool(path.converged) and int(path.evaluations) <= 300
    assert torch.isnan(path.end_point).all() and torch.isfinite(path.points[0]).all()
