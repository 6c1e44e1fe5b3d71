"""Closed-form Fisher–Rao distances of classical families.

Each function returns the geodesic distance of the Fisher information metric
between two members of one family, in closed form. They are the exact answers
the numerical solvers (``sg.distance`` on a ``sg.FisherRaoMetric``) should
reproduce, and cheap distances in their own right.

Arguments are tensors (or Python numbers) that broadcast against each other
over leading batch dimensions; the result has the broadcast batch shape, the
promoted floating dtype of the tensor arguments (the default dtype if none is
floating) and their device. Invalid parameters raise a ``ValueError`` that names
the argument. Values are checked only on ordinary tensors: under ``torch.func``
transforms (``vmap``, ``grad``…) they cannot be inspected and are trusted.

The formulas are written in forms that stay accurate when the two members are
close (``arcsinh`` of a half-chord instead of ``arccosh(1 + δ)``, a chord
instead of ``arccos`` of an inner product close to 1), so small distances come
out with full relative precision rather than the square root of the machine
epsilon.
"""

from __future__ import annotations

import functools
import math
from numbers import Real
from typing import Union

import torch

from ._checks import _is_plain, check_finite

__all__ = ["normal", "categorical", "poisson", "exponential", "binomial", "centred_normal"]

TensorLike = Union[torch.Tensor, float, int]


def normal(mu1: TensorLike, sigma1: TensorLike, mu2: TensorLike, sigma2: TensorLike) -> torch.Tensor:
    """Fisher–Rao distance between univariate normals N(μ1, σ1²) and N(μ2, σ2²).

    Parameterisation: mean μ ∈ R and standard deviation σ > 0. The Fisher
    metric is ds² = (dμ² + 2 dσ²) / σ², a hyperbolic plane of curvature −½: in
    the coordinates (μ/√2, σ) it is twice the Poincaré half-plane metric, so ::

        d = √2 · arccosh(1 + ((μ1 − μ2)²/2 + (σ1 − σ2)²) / (2 σ1 σ2))

    (evaluated as 2√2 · arcsinh(√((μ1 − μ2)²/2 + (σ1 − σ2)²) / (2√(σ1 σ2)))).

    Args:
        mu1, sigma1, mu2, sigma2: broadcastable tensors; σ must be > 0.

    Returns:
        Distances of the broadcast shape.
    """
    mu1, sigma1, mu2, sigma2 = _as_tensors(mu1=mu1, sigma1=sigma1, mu2=mu2, sigma2=sigma2)
    _check_broadcast(mu1=mu1.shape, sigma1=sigma1.shape, mu2=mu2.shape, sigma2=sigma2.shape)
    _check_positive(sigma1, "sigma1")
    _check_positive(sigma2, "sigma2")
    chord = torch.hypot((mu1 - mu2) / math.sqrt(2.0), sigma1 - sigma2)
    return 2 * math.sqrt(2.0) * torch.asinh(chord / (2 * torch.sqrt(sigma1 * sigma2)))


def categorical(p: TensorLike, q: TensorLike) -> torch.Tensor:
    """Fisher–Rao distance between categorical distributions p and q, shape (..., k).

    Parameterisation: probability vectors on the simplex (entries ≥ 0, sum 1;
    zero entries are allowed). The Fisher metric is ds² = Σ dp_i² / p_i; the map
    p ↦ 2√p is an isometry onto the positive orthant of the sphere of radius 2,
    so the distance is twice the angle between √p and √q::

        d = 2 · arccos(Σ √(p_i q_i))

    (evaluated as 4 · arcsin(‖√p − √q‖ / 2), the same angle from its chord).
    Inputs whose sums differ from 1 by round-off are renormalised.

    Args:
        p, q: probability vectors (..., k) with broadcastable batch shapes.

    Returns:
        Distances (...), between 0 and π.
    """
    p, q = _as_tensors(p=p, q=q)
    if p.ndim == 0 or q.ndim == 0 or p.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"p and q must be probability vectors (..., k) with the same k, "
            f"got shapes {tuple(p.shape)} and {tuple(q.shape)}"
        )
    _check_broadcast(p=p.shape, q=q.shape)
    p = _check_simplex(p, "p")
    q = _check_simplex(q, "q")
    chord = torch.linalg.vector_norm(p.sqrt() - q.sqrt(), dim=-1)
    return 4 * torch.asin(chord / 2)


def poisson(rate1: TensorLike, rate2: TensorLike) -> torch.Tensor:
    """Fisher–Rao distance between Poisson distributions of rates λ1 and λ2.

    Parameterisation: rate (mean) λ > 0. The Fisher metric is ds² = dλ² / λ;
    the coordinate 2√λ makes it flat, so ``d = 2 |√λ1 − √λ2|``.
    """
    rate1, rate2 = _as_tensors(rate1=rate1, rate2=rate2)
    _check_broadcast(rate1=rate1.shape, rate2=rate2.shape)
    _check_positive(rate1, "rate1")
    _check_positive(rate2, "rate2")
    return 2 * (rate1.sqrt() - rate2.sqrt()).abs()


def exponential(rate1: TensorLike, rate2: TensorLike) -> torch.Tensor:
    """Fisher–Rao distance between exponential distributions of rates λ1 and λ2.

    Parameterisation: rate λ > 0 (density λ e^{−λy}, mean 1/λ). The Fisher
    metric is ds² = dλ² / λ² (the same in the scale 1/λ); the coordinate log λ
    makes it flat, so ``d = |log λ1 − log λ2|``.
    """
    rate1, rate2 = _as_tensors(rate1=rate1, rate2=rate2)
    _check_broadcast(rate1=rate1.shape, rate2=rate2.shape)
    _check_positive(rate1, "rate1")
    _check_positive(rate2, "rate2")
    return (rate1.log() - rate2.log()).abs()


def binomial(p1: TensorLike, p2: TensorLike, n: int | torch.Tensor) -> torch.Tensor:
    """Fisher–Rao distance between Binomial(n, p1) and Binomial(n, p2).

    Parameterisation: success probability p ∈ [0, 1] for a fixed number of
    trials n. The Fisher metric is ds² = n dp² / (p (1 − p)); the coordinate
    2√n · arcsin √p makes it flat, so ::

        d = 2√n · |arcsin √p1 − arcsin √p2|

    For n = 1 (Bernoulli) this is the categorical distance with two categories.

    Args:
        p1, p2: broadcastable success probabilities in [0, 1].
        n: number of trials, a positive ``int`` or an integer tensor of positive
            values that broadcasts with p1 and p2.
    """
    p1, p2 = _as_tensors(p1=p1, p2=p2)
    n = _check_trials(n, p1)
    _check_broadcast(p1=p1.shape, p2=p2.shape, n=n.shape)
    for value, name in ((p1, "p1"), (p2, "p2")):
        if _is_plain(value) and bool(((value < 0) | (value > 1)).any()):
            raise ValueError(
                f"{name} must be probabilities in [0, 1], got values in [{value.min().item()!r}, {value.max().item()!r}]"
            )
    # arcsin √p as atan2(√p, √(1 − p)): well conditioned up to p = 1, where arcsin is not.
    angle1 = torch.atan2(p1.sqrt(), (1 - p1).sqrt())
    angle2 = torch.atan2(p2.sqrt(), (1 - p2).sqrt())
    return 2 * n.sqrt() * (angle1 - angle2).abs()


def centred_normal(cov1: TensorLike, cov2: TensorLike) -> torch.Tensor:
    """Fisher–Rao distance between centred normals N(0, Σ1) and N(0, Σ2), shape (..., d, d).

    Parameterisation: symmetric positive-definite covariance Σ (d × d). The
    Fisher metric is the affine-invariant metric ds² = ½ tr((Σ⁻¹ dΣ)²), so ::

        d = √(½ Σ_i log² λ_i),   λ_i the eigenvalues of Σ1⁻¹ Σ2

    The λ_i are found by a symmetric eigen-solve of L⁻¹ Σ2 L⁻ᵀ with Σ1 = L Lᵀ,
    which stays stable for ill-conditioned covariances. The distance is
    invariant under congruence Σ ↦ A Σ Aᵀ for any invertible A.

    Args:
        cov1, cov2: covariances (..., d, d) with the same d and broadcastable
            batch shapes.

    Returns:
        Distances (...).
    """
    cov1, cov2 = _as_tensors(cov1=cov1, cov2=cov2)
    for value, name in ((cov1, "cov1"), (cov2, "cov2")):
        if value.ndim < 2 or value.shape[-1] != value.shape[-2]:
            raise ValueError(f"{name} must be square matrices (..., d, d), got shape {tuple(value.shape)}")
    if cov1.shape[-1] != cov2.shape[-1]:
        raise ValueError(f"cov1 and cov2 must have the same size d, got {cov1.shape[-1]} and {cov2.shape[-1]}")
    _check_broadcast(cov1=cov1.shape[:-2], cov2=cov2.shape[:-2])
    chol1 = _spd_cholesky(cov1, "cov1")
    _spd_cholesky(cov2, "cov2")
    chol1, cov2 = torch.broadcast_tensors(chol1, cov2)
    half = torch.linalg.solve_triangular(chol1, cov2, upper=False)  # L⁻¹ Σ2
    whitened = torch.linalg.solve_triangular(chol1, half.mT, upper=False)  # L⁻¹ Σ2 L⁻ᵀ
    eigenvalues = torch.linalg.eigvalsh(0.5 * (whitened + whitened.mT))
    return torch.sqrt(0.5 * (eigenvalues.log() ** 2).sum(-1))


# --------------------------------------------------------------------- helpers
def _as_tensors(**named: TensorLike) -> tuple[torch.Tensor, ...]:
    """The named arguments as finite real tensors of one floating dtype and device.

    The dtype is the promotion of the floating tensor arguments (Python numbers
    and integer tensors adapt to it), or the default dtype if there are none.
    """
    for name, value in named.items():
        if isinstance(value, torch.Tensor):
            if value.is_complex() or value.dtype == torch.bool:
                raise ValueError(f"{name} must be a real tensor, got dtype {value.dtype}")
        elif not isinstance(value, Real) or isinstance(value, bool):
            raise ValueError(f"{name} must be a torch.Tensor or a real number, got {type(value).__name__}")
    tensors = [value for value in named.values() if isinstance(value, torch.Tensor)]
    floating = [t.dtype for t in tensors if t.is_floating_point()]
    dtype = functools.reduce(torch.promote_types, floating) if floating else torch.get_default_dtype()
    device = tensors[0].device if tensors else None
    converted = {name: torch.as_tensor(value, dtype=dtype, device=device) for name, value in named.items()}
    for name, value in converted.items():
        check_finite(value, name)
    return tuple(converted.values())


def _check_broadcast(**shapes: torch.Size) -> None:
    """Check that the named (batch) shapes broadcast against each other."""
    try:
        torch.broadcast_shapes(*shapes.values())
    except RuntimeError:
        listed = ", ".join(f"{name} {tuple(shape)}" for name, shape in shapes.items())
        raise ValueError(f"shapes do not broadcast: {listed}") from None


def _check_positive(value: torch.Tensor, name: str) -> None:
    if _is_plain(value) and bool((value <= 0).any()):
        raise ValueError(f"{name} must be > 0, got a minimum of {value.min().item()!r}")


def _check_simplex(p: torch.Tensor, name: str) -> torch.Tensor:
    """Check p (..., k) lies on the probability simplex up to round-off; return it renormalised."""
    tol = math.sqrt(torch.finfo(p.dtype).eps)
    total = p.sum(-1, keepdim=True)
    if _is_plain(p) and p.numel() > 0:
        if bool((p < -tol).any()):
            raise ValueError(f"{name} must have non-negative entries, got a minimum of {p.min().item()!r}")
        worst = (total - 1).abs().max().item()
        if worst > tol * max(1, p.shape[-1]):
            raise ValueError(f"{name} must sum to 1 along its last dimension, off by up to {worst!r}")
    return p.clamp_min(0) / total


def _check_trials(n: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Number of trials as a tensor in the dtype and device of ``like``."""
    if isinstance(n, torch.Tensor):
        if n.is_floating_point() or n.is_complex() or n.dtype == torch.bool:
            raise ValueError(f"n must be a positive integer or an integer tensor, got dtype {n.dtype}")
        if _is_plain(n) and bool((n < 1).any()):
            raise ValueError(f"n must be a positive integer, got a minimum of {n.min().item()}")
    elif not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return torch.as_tensor(n, dtype=like.dtype, device=like.device)


def _spd_cholesky(cov: torch.Tensor, name: str) -> torch.Tensor:
    """Cholesky factor of a symmetric positive-definite batch; ``ValueError`` naming ``name`` otherwise."""
    if _is_plain(cov):
        scale = cov.abs().amax(dim=(-1, -2), keepdim=True)
        asymmetry = (cov - cov.mT).abs().amax(dim=(-1, -2), keepdim=True)
        if bool((asymmetry > math.sqrt(torch.finfo(cov.dtype).eps) * scale).any()):
            raise ValueError(f"{name} must be symmetric (largest |Σ − Σᵀ| is {asymmetry.max().item():.3g})")
    chol, info = torch.linalg.cholesky_ex(0.5 * (cov + cov.mT))
    if _is_plain(info) and bool((info != 0).any()):
        raise ValueError(f"{name} must be positive-definite (Cholesky factorisation failed)")
    return chol
