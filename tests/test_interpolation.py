"""Straight lines, SLERP and log p along paths."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

import scoregeo as sg

F64 = torch.float64


def test_slerp_moves_at_constant_angle_on_the_sphere_of_equal_norm_end_points():
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(3, 5, generator=gen, dtype=F64), torch.randn(3, 5, generator=gen, dtype=F64)
    x1 = x1 * (x0.norm(dim=-1, keepdim=True) / x1.norm(dim=-1, keepdim=True))
    curve = sg.slerp(x0, x1, 11)
    assert curve.shape == (3, 11, 5)
    torch.testing.assert_close(curve[:, 0], x0)
    torch.testing.assert_close(curve[:, -1], x1)
    torch.testing.assert_close(curve.norm(dim=-1), x0.norm(dim=-1, keepdim=True).expand(3, 11))
    cos = (curve[:, :-1] * curve[:, 1:]).sum(-1) / curve[:, :-1].norm(dim=-1) / curve[:, 1:].norm(dim=-1)
    steps = torch.arccos(cos.clamp(-1, 1))
    torch.testing.assert_close(steps, steps[:, :1].expand_as(steps))  # equal angles
    parallel = sg.slerp(x0[0], 2.5 * x0[0], 5)  # nearly parallel: the straight line
    torch.testing.assert_close(parallel, sg.lerp(x0[0], 2.5 * x0[0], 5))
    with pytest.raises(ValueError, match="antipodal"):
        sg.slerp(x0[0], -x0[0], 5)


def test_path_log_prob_mean_is_the_arc_length_average():
    gaussian = sg.Gaussian(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    x0, x1 = torch.tensor([-2.0, 0.5], dtype=F64), torch.tensor([1.0, 0.5], dtype=F64)
    stats = sg.evaluation.path_log_prob(gaussian.log_prob, sg.lerp(x0, x1, 2001))
    exact = quad(lambda s: -0.5 * (s * s + 0.25) - math.log(2 * math.pi), -2.0, 1.0)[0] / 3.0
    assert float(stats["mean"]) == pytest.approx(exact, rel=1e-6)  # midpoint rule: O(h²) = 1e-7 here
    assert float(stats["minimum"]) == pytest.approx(float(gaussian.log_prob(x0)))
    assert stats["values"].shape == (2001,)
