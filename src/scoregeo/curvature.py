"""Curvature of any metric: Riemann and Ricci tensors, scalar and Gaussian curvature.

Works for every :class:`~scoregeo.metrics.Metric` from its matrix G(x) and the
dense Christoffel symbols built from it, so it is meant for small dimensions d (the Riemann tensor has d⁴
entries and costs d² second-order forward-mode derivatives of G(x)). The
generic formulas use only ``Metric._matrix``, not a subclass's own
``_christoffel``.

Conventions (those of most textbooks, e.g. Carroll or do Carmo)::

    Γ[..., k, i, j]            = Γ^k_ij                     (as Metric.christoffel)
    R^ρ_σμν = ∂_μ Γ^ρ_νσ − ∂_ν Γ^ρ_μσ + Γ^ρ_μλ Γ^λ_νσ − Γ^ρ_νλ Γ^λ_μσ
    R_σν    = R^ρ_σρν                                          (Ricci)
    R       = g^σν R_σν                                        (scalar)
    K       = R / 2                                            (Gaussian, d = 2)

With these signs the round sphere of radius r has K = 1/r² and scalar curvature
d(d − 1)/r² > 0, and hyperbolic space (e.g. the Poincaré half-plane) is negative.

Derivatives are taken by forward mode: one ``torch.func.jvp`` of the metric's
first derivatives ∂G per coordinate direction (so second derivatives of G), each
over the whole batch of points at once (points are independent); Γ and ∂Γ are
assembled from G, ∂G and ∂²G by hand. No ``vmap`` is used, so metrics that
draw random samples inside ``G`` (Monte Carlo Fisher–Rao metrics) work too: every
evaluation sees the same flat batch and hence the same samples.
"""

from __future__ import annotations

import torch
from torch.func import jvp

from ._checks import check_points
from .metrics.base import Metric, cholesky_checked

__all__ = ["riemann_tensor", "ricci_tensor", "scalar_curvature", "gaussian_curvature"]


def riemann_tensor(metric: Metric, x: torch.Tensor) -> torch.Tensor:
    """Riemann curvature tensor R^ρ_σμν at points x.

    Args:
        metric: any :class:`~scoregeo.metrics.Metric` of dimension d (small d).
        x: points, shape (..., d), finite floating tensor.

    Returns:
        Tensor of shape (..., d, d, d, d) with ``R[..., ρ, σ, μ, ν] = R^ρ_σμν``
        (conventions in the module docstring; antisymmetric in μ, ν).
    """
    _check(metric, x)
    riemann, _ = _riemann_flat(metric, x.reshape(-1, metric.dim))
    d = metric.dim
    return riemann.reshape(*x.shape[:-1], d, d, d, d)


def ricci_tensor(metric: Metric, x: torch.Tensor) -> torch.Tensor:
    """Ricci tensor R_σν = R^ρ_σρν at points x.

    Args:
        metric: any :class:`~scoregeo.metrics.Metric` of dimension d (small d).
        x: points, shape (..., d), finite floating tensor.

    Returns:
        Symmetric tensor of shape (..., d, d). Positive-definite on a round sphere
        (R_σν = (d − 1)/r² g_σν), negative on hyperbolic space.
    """
    _check(metric, x)
    riemann, _ = _riemann_flat(metric, x.reshape(-1, metric.dim))
    ricci = torch.einsum("brsrn->bsn", riemann)
    return ricci.reshape(*x.shape[:-1], metric.dim, metric.dim)


def scalar_curvature(metric: Metric, x: torch.Tensor) -> torch.Tensor:
    """Scalar curvature R = g^σν R_σν at points x.

    Args:
        metric: any :class:`~scoregeo.metrics.Metric` of dimension d (small d);
            its geodesics must be well defined (``metric.check_solvable()``), e.g.
            a :class:`~scoregeo.metrics.ScoreMetric` needs ``alpha > 0``.
        x: points, shape (..., d), finite floating tensor.

    Returns:
        Tensor of shape (...), same dtype and device as x. Sign convention: the
        round d-sphere of radius r gives d(d − 1)/r² (positive), hyperbolic
        d-space of curvature −1 gives −d(d − 1), flat space 0. For d = 2 this is
        twice the Gaussian curvature; for d = 1 it is 0.

    Raises:
        ValueError: if ``metric`` is not a Metric, x has the wrong type, shape or
            non-finite entries, the metric is degenerate, or G(x) is not
            positive-definite at some point.
    """
    _check(metric, x)
    riemann, G_inv = _riemann_flat(metric, x.reshape(-1, metric.dim))
    ricci = torch.einsum("brsrn->bsn", riemann)
    scalar = torch.einsum("bsn,bsn->b", G_inv, ricci)
    return scalar.reshape(x.shape[:-1])


def gaussian_curvature(metric: Metric, x: torch.Tensor) -> torch.Tensor:
    """Gaussian curvature K = R / 2 of a 2-dimensional metric at points x.

    Args:
        metric: a :class:`~scoregeo.metrics.Metric` with ``dim == 2``.
        x: points, shape (..., 2), finite floating tensor.

    Returns:
        Tensor of shape (...): K = 1/r² on a sphere of radius r, −1 on the
        Poincaré half-plane, 0 on the plane. For the score metric
        g = αI + λ s sᵀ of an exact score s = ∇ log p this equals
        λ det(∇²log p) / (α + λ|s|²)².

    Raises:
        ValueError: if the metric is not 2-dimensional (use
            :func:`scalar_curvature` in other dimensions), or for the reasons
            listed in :func:`scalar_curvature`.
    """
    _check_metric(metric)
    if metric.dim != 2:
        raise ValueError(
            f"gaussian_curvature needs a 2-dimensional metric (a surface), got metric.dim = {metric.dim}; "
            "use scalar_curvature for other dimensions"
        )
    return 0.5 * scalar_curvature(metric, x)


# --------------------------------------------------------------------- internals
def _check_metric(metric: Metric) -> None:
    if not isinstance(metric, Metric):
        raise ValueError(f"metric must be a scoregeo Metric (e.g. sg.ScoreMetric), got {type(metric).__name__}")


def _check(metric: Metric, x: torch.Tensor) -> None:
    _check_metric(metric)
    check_points(x, metric.dim, "x")
    metric.check_solvable()


def _riemann_flat(metric: Metric, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Riemann tensor (B, d, d, d, d) and inverse metric (B, d, d) at points flat (B, d).

    Only G(x) and its first and second derivatives are differentiated (nested
    forward mode); Γ and ∂Γ are then assembled by hand. No derivative is ever
    taken through a linear-algebra routine: the forward-mode rule of
    ``torch.cholesky_inverse`` is wrong for non-diagonal factors (torch 2.13;
    pytorch/pytorch#196682, and #196694 for ``cholesky_solve``), so a JVP of
    ``Metric._christoffel`` would silently give a wrong ∂Γ.
    """
    d = metric.dim
    G = metric._matrix(flat)
    G_inv = torch.cholesky_inverse(cholesky_checked(G, flat))  # values only, never differentiated
    if flat.shape[0] == 0:
        return flat.new_zeros(0, d, d, d, d), G_inv
    eye = torch.eye(d, dtype=flat.dtype, device=flat.device)
    dG = None
    columns = []
    for m in range(d):  # one JVP per direction, over the whole batch (no vmap)
        dG, dd_m = jvp(metric._matrix_derivatives, (flat,), (eye[m].expand_as(flat),))
        columns.append(dd_m)
    ddG = torch.stack(columns, dim=-1)  # ddG[b, l, j, i, m] = ∂_m ∂_i G_lj; dG[b, l, j, i] = ∂_i G_lj
    # Christoffel symbols of the first kind Γ_l,ij = ½(∂_i G_lj + ∂_j G_li − ∂_l G_ij), and their derivatives.
    lowered = 0.5 * (torch.einsum("blji->blij", dG) + dG - torch.einsum("bjil->blij", dG))
    d_lowered = 0.5 * (torch.einsum("bljim->blijm", ddG) + ddG - torch.einsum("bjilm->blijm", ddG))
    gamma = torch.einsum("bkl,blij->bkij", G_inv, lowered)  # Γ^k_ij
    # ∂_m Γ^k_ij = G^kl (∂_m Γ_l,ij − ∂_m G_lp Γ^p_ij)
    d_gamma = torch.einsum(
        "bkl,blijm->bkijm", G_inv, d_lowered - torch.einsum("blpm,bpij->blijm", dG, gamma)
    )  # d_gamma[b, k, i, j, m] = ∂_m Γ^k_ij
    # A[b, ρ, σ, μ, ν] = ∂_μ Γ^ρ_νσ + Γ^ρ_μλ Γ^λ_νσ; R = A − (A with μ ↔ ν).
    A = torch.einsum("brnsm->brsmn", d_gamma) + torch.einsum("brml,blns->brsmn", gamma, gamma)
    return A - A.transpose(-1, -2), G_inv
