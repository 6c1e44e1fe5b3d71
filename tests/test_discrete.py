"""The discrete-energy building blocks of the multilevel solver, against dense autodiff references."""

from __future__ import annotations

import pytest
import torch

import scoregeo as sg
from scoregeo.geodesics import discrete


def _rotational_score(x: torch.Tensor) -> torch.Tensor:
    """A smooth field that is not a gradient (a learned score need not be one)."""
    skew = torch.tensor([[0.0, 1.0, -0.5], [-1.0, 0.0, 0.3], [0.5, -0.3, 0.0]], dtype=x.dtype)
    return -x + torch.sin(x) @ skew + 0.3 * x.pow(2).roll(1, -1)


def _dense_gauss_newton(metric: sg.ScoreMetric, curve: torch.Tensor) -> torch.Tensor:
    """2N JᵀJ of the residuals (√α Δ_i, √λ s(m_i)·Δ_i) over the interior points, by torch.func."""
    segments, d = curve.shape[0] - 1, curve.shape[1]

    def residuals(interior: torch.Tensor) -> torch.Tensor:
        full = torch.cat([curve[:1], interior.reshape(-1, d), curve[-1:]])
        steps, mids = full[1:] - full[:-1], 0.5 * (full[1:] + full[:-1])
        along = (metric.score(mids) * steps).sum(-1, keepdim=True)
        return torch.cat([metric.alpha**0.5 * steps, metric.lam**0.5 * along], -1).flatten()

    jacobian = torch.func.jacrev(residuals)(curve[1:-1].flatten())
    return 2 * segments * jacobian.T @ jacobian


@pytest.mark.parametrize("segments", [2, 5, 8])
def test_preconditioner_is_the_inverse_of_the_gauss_newton_hessian(segments):
    torch.manual_seed(0)
    metric = sg.ScoreMetric(_rotational_score, 3, lam=30.0, alpha=0.7)
    line = torch.linspace(0, 1, segments + 1, dtype=torch.float64)[:, None]
    curve = torch.tensor([-1.0, 0.4, 0.2], dtype=torch.float64) + line * torch.tensor([2.0, -0.3, 0.9], dtype=torch.float64)
    curve[1:-1] += 0.2 * torch.randn(segments - 1, 3, dtype=torch.float64)
    rhs = torch.randn(2, segments - 1, 3, dtype=torch.float64)
    apply = discrete._preconditioner(metric, torch.stack([curve, curve]))
    dense = _dense_gauss_newton(metric, curve)
    expected = torch.linalg.solve(dense, rhs.flatten(1).T).T.reshape(rhs.shape)
    torch.testing.assert_close(apply(rhs), expected, rtol=1e-10, atol=1e-12)


def test_preconditioner_of_a_constant_metric_is_the_exact_inverse_hessian():
    """Euclidean: the energy is quadratic, P is its Hessian 2Nα DᵀD, and one preconditioned step solves it."""
    metric = sg.Euclidean(4)
    curve = torch.randn(1, 7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    energy, gradient, _ = discrete._energy_gradient(metric, curve)
    step = -discrete._preconditioner(metric, curve)(gradient)
    solved = curve.clone()
    solved[:, 1:-1] += step
    line = curve[:, :1] + torch.linspace(0, 1, 7, dtype=torch.float64)[None, :, None] * (curve[:, -1:] - curve[:, :1])
    torch.testing.assert_close(solved, line, rtol=0, atol=1e-12)


@pytest.mark.parametrize("d", [3, 512])  # 512 float64 values: a 4 KiB stride, summed row by row on CPU
def test_inverse_second_difference_solves_the_tridiagonal_system(d):
    r = torch.randn(2, 9, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    ones = torch.ones(8, dtype=torch.float64)
    second_difference = 2 * torch.eye(9, dtype=torch.float64) - torch.diag(ones, 1) - torch.diag(ones, -1)
    expected = torch.linalg.solve(second_difference, r)
    torch.testing.assert_close(discrete._inverse_second_difference(r), expected, rtol=1e-12, atol=1e-12)
