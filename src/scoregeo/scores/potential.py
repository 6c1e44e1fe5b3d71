"""Log-density differences from a score field: line integrals and a least-squares potential on a grid.

A score s = ∇ log p determines log p up to a constant. A learned score is only
approximately a gradient, so:

* ``ray_log_density`` gives log p(x) − log p(r) as a differentiable function of
  x, the integral of s along the straight ray from a reference point r;
* ``line_integral`` gives log p(x_k) − log p(x_0) along a given polyline (exact
  for a gradient field up to the trapezoidal rule's O(h²) error; for a
  non-conservative field it is the path-dependent integral of s·dx);
* ``grid_log_density`` gives the potential φ on a 2-D grid whose finite-difference
  gradient is closest to s in least squares (the gradient part of the field's
  Helmholtz decomposition), normalised so that exp φ integrates to one over the
  grid. For an exact score this is log p restricted to the box, renormalised.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy.sparse import diags, identity, kron, vstack
from scipy.sparse.linalg import spsolve

from .._checks import check_positive_int


def line_integral(score: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor) -> torch.Tensor:
    """log p(x_k) − log p(x_0) along a polyline by the trapezoidal rule on s·dx.

    Args:
        score: callable (..., d) → (..., d).
        points: (..., n, d) polyline vertices.
    Returns: (..., n), zero at the first vertex.
    """
    if points.ndim < 2 or points.shape[-2] < 2:
        raise ValueError(f"points must have shape (..., n, d) with n >= 2, got {tuple(points.shape)}")
    with torch.no_grad():
        s = score(points)
    steps = points.diff(dim=-2)
    increments = 0.5 * ((s[..., 1:, :] + s[..., :-1, :]) * steps).sum(-1)
    return torch.cat([increments.new_zeros(increments.shape[:-1] + (1,)), increments.cumsum(-1)], dim=-1)


def ray_log_density(
    score: Callable[[torch.Tensor], torch.Tensor],
    reference: torch.Tensor,
    log_p_reference: float = 0.0,
    n_nodes: int = 32,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """log p(x) from a score alone, as a differentiable callable (..., d) → (...): the integral along rays.

    f(x) = log p(r) + ∫₀¹ s(r + t (x − r)) · (x − r) dt, by Gauss–Legendre
    quadrature with ``n_nodes`` nodes. For an exact score this is log p, up to
    the unknown log p(r) (``log_p_reference``); for a learned field that is not a
    gradient it is the potential along straight rays from the reference r (d,).
    """
    if not callable(score):
        raise ValueError(f"score must be callable, got {type(score).__name__}")
    if not (isinstance(reference, torch.Tensor) and reference.ndim == 1 and bool(torch.isfinite(reference).all())):
        raise ValueError(f"reference must be a finite tensor of shape (d,), got {getattr(reference, 'shape', reference)!r}")
    n_nodes = check_positive_int(n_nodes, "n_nodes")
    nodes, weights = np.polynomial.legendre.leggauss(n_nodes)
    t = torch.tensor(0.5 * (nodes + 1), dtype=torch.float64)
    w = torch.tensor(0.5 * weights, dtype=torch.float64)

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        r = reference.to(x)
        offset = x - r  # (..., d)
        rays = r + t.to(x)[:, None] * offset.unsqueeze(-2)  # (..., n, d)
        slopes = (score(rays) * offset.unsqueeze(-2)).sum(-1)  # (..., n)
        return log_p_reference + (slopes * w.to(x)).sum(-1)

    return log_prob


def grid_log_density(
    score: Callable[[torch.Tensor], torch.Tensor],
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    shape: tuple[int, int] = (121, 101),
    dtype: torch.dtype = torch.float64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares log-density of a 2-D score field on a grid.

    Solves min_φ Σ ‖D φ − s‖² over the grid edges (D: forward differences, s
    averaged at edge midpoints), then shifts φ so that Σ exp(φ) ΔA = 1.

    Returns: (X, Y, log_density), arrays of shape (ny, nx) for ``shape`` = (nx, ny).
    """
    nx, ny = (check_positive_int(n, "shape", minimum=3) for n in shape)
    xs, ys = np.linspace(*xlim, nx), np.linspace(*ylim, ny)
    X, Y = np.meshgrid(xs, ys)
    grid = torch.as_tensor(np.stack([X, Y], -1), dtype=dtype)
    with torch.no_grad():
        s = score(grid).double().cpu().numpy()  # (ny, nx, 2)
    hx, hy = xs[1] - xs[0], ys[1] - ys[0]
    # Unknowns φ[j, i] flattened row-major (y rows, x columns).
    diff_x = diags([-np.ones(nx - 1), np.ones(nx - 1)], [0, 1], shape=(nx - 1, nx)) / hx
    diff_y = diags([-np.ones(ny - 1), np.ones(ny - 1)], [0, 1], shape=(ny - 1, ny)) / hy
    operator = vstack([kron(identity(ny), diff_x), kron(diff_y, identity(nx))]).tocsr()
    target = np.concatenate([(0.5 * (s[:, 1:, 0] + s[:, :-1, 0])).ravel(), (0.5 * (s[1:, :, 1] + s[:-1, :, 1])).ravel()])
    # Normal equations DᵀD φ = Dᵀ s: a grid Laplacian, singular only by the constant, which we pin at
    # φ[0, 0] = 0 by solving for the other unknowns (the normalisation below fixes the constant anyway).
    normal = (operator.T @ operator).tocsc()[1:, 1:]
    phi = np.concatenate([[0.0], spsolve(normal, (operator.T @ target)[1:])]).reshape(ny, nx)
    log_mass = np.log(np.exp(phi - phi.max()).sum() * hx * hy) + phi.max()
    return X, Y, phi - log_mass
