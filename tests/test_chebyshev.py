"""Chebyshev nodes, differentiation, quadrature and interpolation against closed forms (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from scoregeo.geodesics.chebyshev import chebyshev_grid, interpolate, resample_polylines

DTYPE = torch.float64


def smooth(t: torch.Tensor) -> torch.Tensor:
    return torch.exp(torch.sin(3 * t))


@pytest.mark.parametrize("order", [32, 33, 64])
def test_nodes_differentiation_and_quadrature_are_spectrally_accurate(order):
    grid = chebyshev_grid(order, DTYPE)
    t = grid.nodes
    assert float(t[0]) == 0.0 and float(t[-1]) == 1.0 and bool((t[1:] > t[:-1]).all())
    derivative = 3 * torch.cos(3 * t) * smooth(t)
    # an entire function: degree 32 already resolves it to rounding; D amplifies rounding by ~N²
    assert float((grid.diff @ smooth(t) - derivative).abs().max()) < 1e-9
    # ∫₀¹ exp(sin 3t) dt by adaptive quadrature (scipy), and polynomials exactly
    assert abs(float(grid.weights @ smooth(t)) - 2.0188898451843835) < 1e-13
    assert abs(float(grid.weights @ t**7) - 1 / 8) < 1e-15


def test_interpolation_hits_nodes_exactly_and_is_accurate_between_them():
    grid = chebyshev_grid(40, DTYPE)
    values = torch.stack([smooth(grid.nodes), grid.nodes**2], -1).unsqueeze(0)  # (1, 41, 2)
    targets = torch.tensor([0.0, 0.123, grid.nodes[7].item(), 0.5, 0.999, 1.0], dtype=DTYPE)
    out = interpolate(grid, values, targets)[0]
    expected = torch.stack([smooth(targets), targets**2], -1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert float(out[2, 0]) == float(values[0, 7, 0])


def test_polylines_are_resampled_by_euclidean_arc_length():
    # an L-shaped polyline of length 2: halfway is the corner
    curve = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]], dtype=DTYPE)
    out = resample_polylines(curve, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=DTYPE))[0]
    expected = torch.tensor([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0], [1.0, 0.5], [1.0, 1.0]], dtype=DTYPE)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-15)
    assert math.isclose(float((out[1:] - out[:-1]).norm(dim=-1).sum()), 2.0)
