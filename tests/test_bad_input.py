"""Bad input to the initial-value solvers and the shared checks: clear ValueErrors, empty results,
and shots that stop with a warning instead of crashing inside the integrator."""

from __future__ import annotations

import pytest
import torch

import scoregeo as sg
from scoregeo._checks import check_magnitude, check_points, check_positive

F64 = torch.float64


def flat(d: int = 2) -> sg.ScoreMetric:
    """Score metric of a standard normal (ẍ bends towards the origin), any dtype."""
    return sg.ScoreMetric(lambda x: -x, d, lam=1.0)


def point(*values: float, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


# ---------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_points_are_refused(dtype):
    x, v = point(0.5, 1.0, dtype=dtype), point(1.0, 0.0, dtype=dtype)
    with pytest.raises(ValueError, match="x must be a floating-point tensor of dtype float32 or float64"):
        sg.shoot(flat(), x, v)
    with pytest.raises(ValueError, match="float32 or float64"):
        flat().norm(x, v)
    with pytest.raises(ValueError, match="points must be"):
        check_points(x, 2, "points")


def test_mixed_dtypes_are_refused():
    with pytest.raises(ValueError, match="same dtype"):
        sg.shoot(flat(), point(0.5, 1.0), point(1.0, 0.0, dtype=torch.float32))


# ----------------------------------------------------------- hyperparameters
@pytest.mark.parametrize("name", ["rtol", "atol"])
@pytest.mark.parametrize("value", [0.0, -1e-6, float("nan"), float("inf"), True])
def test_tolerances_must_be_finite_and_positive(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a finite number > 0"):
        sg.shoot(flat(), point(0.5, 1.0), point(1.0, 0.0), **{name: value})


@pytest.mark.parametrize("t", [0.0, -1.0, float("nan"), float("inf"), -float("inf"), True, "1"])
def test_time_must_be_finite_and_positive(t):
    with pytest.raises(ValueError, match="t must be a finite number > 0"):
        sg.shoot(flat(), point(0.5, 1.0), point(1.0, 0.0), t=t)
    with pytest.raises(ValueError, match="t must be a finite number > 0"):
        sg.exp_map(flat(), point(0.5, 1.0), point(1.0, 0.0), t=t)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_points": 1}, "n_points must be an integer >= 2"),
        ({"n_points": 2.0}, "n_points must be an integer >= 2"),
        ({"max_evals": 0}, "max_evals must be an integer >= 1"),
        ({"method": "dopri8"}, "method must be one of"),
    ],
)
def test_other_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sg.shoot(flat(), point(0.5, 1.0), point(1.0, 0.0), **kwargs)


def test_check_positive_returns_a_float():
    assert check_positive(3, "rtol") == 3.0 and isinstance(check_positive(3, "rtol"), float)


# ------------------------------------------------------------- empty batches
@pytest.mark.parametrize("batch", [(0,), (3, 0)])
def test_empty_batches_give_empty_results_without_calling_the_score(batch):
    def score(x):
        raise AssertionError("the score must not be called on an empty batch")

    metric = sg.ScoreMetric(score, 3)
    x = torch.zeros(*batch, 3, dtype=F64)
    path = sg.shoot(metric, x, x, n_points=5)
    assert path.points.shape == (*batch, 5, 3)
    assert path.length.shape == path.converged.shape == path.evaluations.shape == batch
    assert path.initial_velocity.shape == (*batch, 3) and path.times.shape == (5,)
    assert sg.exp_map(metric, x, x).shape == (*batch, 3)


# ------------------------------------------------------------ huge coordinates
@pytest.mark.parametrize(
    "dtype, big, name", [(F64, 1e300, "x"), (F64, -1e200, "v"), (torch.float32, 1e25, "x"), (torch.float32, 3e19, "v")]
)
def test_huge_coordinates_are_refused_as_too_large(dtype, big, name):
    values = {"x": point(0.5, 1.0, dtype=dtype), "v": point(1.0, 0.0, dtype=dtype)}
    values[name] = point(big, 0.0, dtype=dtype)
    with pytest.raises(ValueError, match=f"{name} has coordinates too large for {dtype}.*overflows"):
        sg.shoot(flat(), values["x"], values["v"])


def test_check_magnitude_accepts_the_largest_safe_coordinates_and_names_the_point():
    limit = (torch.finfo(F64).max / 4) ** 0.5  # d = 4: the sum of four squares just fits
    ok = torch.full((2, 4), 0.99 * limit, dtype=F64)
    assert check_magnitude(ok, "x1") is ok
    bad = ok.clone()
    bad[1, 2] = 1e300
    with pytest.raises(ValueError, match=r"x1 has coordinates too large .*1e\+300 at batch index \(1,\)"):
        check_magnitude(bad, "x1")
    assert check_magnitude(torch.zeros(0, 4, dtype=F64), "x1").shape == (0, 4)


# ------------------------------------------------------ failures mid-integration
def nan_beyond(threshold: float) -> sg.ScoreMetric:
    """Euclidean-like metric (score 0) whose score is NaN where x₀ > threshold."""

    def score(x):
        return torch.where(x[..., :1] > threshold, float("nan"), 0.0 * x)

    return sg.ScoreMetric(score, 2)


def test_nan_acceleration_mid_shot_stops_that_curve_with_a_warning():
    """The first curve walks into the NaN region at t = 0.5; the second never meets it."""
    metric = nan_beyond(0.5)
    x = torch.zeros(2, 2, dtype=F64)
    v = point(1.0, 0.0).expand(2, 2) * torch.tensor([[1.0], [-1.0]], dtype=F64)
    with pytest.warns(RuntimeWarning, match=r"1 stopped where the metric's acceleration was NaN or Inf.*curve 0"):
        path = sg.shoot(metric, x, v, n_points=11)
    assert path.converged.tolist() == [False, True]
    times = path.times.unsqueeze(-1)
    # score 0 is the Euclidean metric: straight lines x + t v, exact for Runge–Kutta
    reached = path.times < 0.5
    torch.testing.assert_close(path.points[0, reached], times[reached] * v[0], rtol=0, atol=1e-12)
    assert torch.isnan(path.points[0, ~path.times.lt(0.55)]).all()
    torch.testing.assert_close(path.points[1], times * v[1], rtol=0, atol=1e-12)
    assert int(path.evaluations[0]) <= sg.geodesics.ivp.MAX_EVALS


def test_nan_acceleration_at_the_start_stops_at_once():
    with pytest.warns(RuntimeWarning, match="NaN or Inf"):
        end = sg.exp_map(nan_beyond(0.5), point(1.0, 0.0), point(1.0, 0.0))
    assert torch.isnan(end).all()


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_infinite_acceleration_stops_instead_of_raising(method):
    """A score that overflows (ẍ = ±Inf) beyond x₀ = 0.3: no AssertionError from a step-size underflow."""

    def score(x):
        return torch.where(x[..., :1] > 0.3, 1e200 * x.pow(2) * 1e200, -x)

    metric = sg.ScoreMetric(score, 2)
    with pytest.warns(RuntimeWarning, match="NaN or Inf"):
        path = sg.shoot(metric, point(0.0, 0.1), point(1.0, 0.0), method=method, n_points=8)
    assert not bool(path.converged)
    assert torch.isfinite(path.points[0]).all() and torch.isnan(path.end_point).all()


def test_budget_exhaustion_stops_with_a_warning():
    with pytest.warns(RuntimeWarning, match="max_evals=20 .*raise max_evals"):
        path = sg.shoot(flat(), point(0.5, 1.0), point(3.0, -2.0), max_evals=20, rtol=1e-12, atol=1e-12)
    assert not bool(path.converged) and int(path.evaluations) <= 20
    assert torch.isnan(path.end_point).all()
