"""Hermite curves of the multilevel solver: exact on cubics, the same in any tiling."""

from __future__ import annotations

import pytest
import torch

import scoregeo as sg
from scoregeo.geodesics import hermite


def _cubic(t: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Curves (B, m, d) x(t) = Σ_k c_k t^k for coefficients (B, 4, d) at times t (m,)."""
    powers = t[:, None] ** torch.arange(4, dtype=t.dtype)  # (m, 4)
    return torch.einsum("mk,bkd->bmd", powers, coefficients)


@pytest.fixture(
    params=[hermite._TILE_BYTES, 40 * 8 * 6, 5 * 8 * 6, 1],
    ids=["one tile", "one curve a tile", "five points a tile", "one point a tile"],
)
def tile_bytes(request, monkeypatch):
    monkeypatch.setattr(hermite, "_TILE_BYTES", request.param)
    return request.param


def test_resample_reproduces_a_cubic_in_any_tiling(tile_bytes):
    """Fourth-order slopes are exact on cubics, so the Hermite interpolant is the cubic itself."""
    coefficients = torch.randn(3, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    samples = _cubic(torch.linspace(0, 1, 9, dtype=torch.float64), coefficients)
    fine = torch.linspace(0, 1, 37, dtype=torch.float64)
    torch.testing.assert_close(hermite.resample(samples, 37), _cubic(fine, coefficients), rtol=0, atol=1e-12)


def test_measure_of_a_cubic_is_exact_in_any_tiling(tile_bytes):
    """Euclidean energy ∫|ẋ|² dt of a cubic is a quartic in t: 3-point Gauss–Legendre is exact on it."""
    coefficients = torch.randn(3, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    samples = _cubic(torch.linspace(0, 1, 9, dtype=torch.float64), coefficients)
    c1, c2, c3 = coefficients[:, 1], coefficients[:, 2], coefficients[:, 3]

    def dot(u, v):
        return (u * v).sum(-1)

    # ẋ = c1 + 2 c2 t + 3 c3 t²; ∫₀¹ |ẋ|² dt term by term
    energy = (dot(c1, c1) + 2 * dot(c1, c2) + 2 * dot(c1, c3) + 4 / 3 * dot(c2, c2) + 3 * dot(c2, c3) + 9 / 5 * dot(c3, c3))
    _, measured, _ = hermite.measure(sg.Euclidean(6), samples)
    torch.testing.assert_close(measured, energy, rtol=1e-12, atol=0)
