"""Conformal density metrics G(x) = h(p(x)) I: lengths weighted by a function of the density."""

from __future__ import annotations

from typing import Callable

import torch
from torch.func import grad

from .._checks import check_nonnegative, check_positive
from ..scores.potential import ray_log_density
from .base import Metric, OutsideDomainError, describe_point

LogProb = Callable[[torch.Tensor], torch.Tensor]
FORMS = ("power", "energy")


class ConformalMetric(Metric):
    """G(x) = h(x) I with h a function of the log-density f = log p (possibly unnormalised).

    Forms:

    * ``"power"``: h = p^(−β) = exp(−β f), β > 0. Lengths are ∫ p^(−β/2) |ẋ| dt:
      low density is expensive, so geodesics stay in high-density regions (the
      density-weighted distances of manifold learning; β = 1 gives the classical
      p^(−1) weighting). Unnormalised log-densities rescale every length by the
      same factor. Degenerates far from the data, where p → 0 makes h blow up
      (every curve through empty space is very long), and for β → 0 (Euclidean).
    * ``"energy"``: h = α(−f) + β with α > 0, β ≥ 0 (the energy-based form:
      lengths weighted by the surprisal). Defined where h > 0, that is where
      log p < β/α; an unnormalised log p shifts h, so give a normalised one or
      choose β accordingly. Degenerates where h → 0 (near the modes if β is
      small: curves through them are free).

    Geodesic acceleration in closed form: with φ = ½ log h,
    ẍ = −2 (∇φ·v) v + |v|² ∇φ, and ∇φ = ½ h'(f)/h(f) ∇f (∇f = the score, here
    by autograd of ``log_prob``): one gradient of log p per step, no d×d
    matrix.

    Args:
        log_prob: (..., d) → (...), each value depending on its own point only;
            differentiable twice (``torch.func``).
        dim: the dimension d.
        form: "power" or "energy".
        beta, alpha: the parameters of the form (see above).
    """

    def __init__(self, log_prob: LogProb, dim: int, form: str = "power", beta: float = 1.0, alpha: float = 1.0):
        super().__init__(dim)
        if not callable(log_prob):
            raise ValueError(f"log_prob must be callable, got {type(log_prob).__name__}")
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        self.log_prob, self.form = log_prob, form
        if form == "power":
            self.beta, self.alpha = check_positive(beta, "beta"), None
        else:
            self.alpha, self.beta = check_positive(alpha, "alpha"), check_nonnegative(beta, "beta")
        self._gradient = grad(lambda x: self.log_prob(x).sum())

    @classmethod
    def from_score(
        cls,
        score,
        dim: int,
        reference: torch.Tensor,
        log_p_reference: float = 0.0,
        n_nodes: int = 32,
        **kwargs,
    ) -> "ConformalMetric":
        """A conformal metric from a score field alone: log p by its line integral from a reference point.

        f(x) = log p(r) + ∫₀¹ s(r + t (x − r)) · (x − r) dt, by Gauss–Legendre
        quadrature with ``n_nodes`` nodes (``scores.potential.ray_log_density``;
        differentiable, so the metric's derivatives are those of this f). For an exact score this is log p up to
        the unknown log p(r) (``log_p_reference``; it only rescales every length
        by a constant in the "power" form, but shifts h in the "energy" form);
        for a learned field that is not a gradient it is the potential along
        straight rays from r. Keyword arguments: ``form``, ``beta``, ``alpha``.
        """
        if not (isinstance(reference, torch.Tensor) and reference.shape == (dim,) and bool(torch.isfinite(reference).all())):
            raise ValueError(f"reference must be a finite tensor of shape ({dim},)")
        log_prob = ray_log_density(score, reference, log_p_reference, n_nodes)
        return cls(log_prob, dim, **kwargs)

    # ------------------------------------------------------------------ the conformal factor
    def factor(self, x: torch.Tensor) -> torch.Tensor:
        """h(x) (...): the conformal factor, G = h I."""
        return self._h(self._f(x))

    def _f(self, x: torch.Tensor) -> torch.Tensor:
        f = self.log_prob(x)
        if not isinstance(f, torch.Tensor) or f.shape != x.shape[:-1]:
            got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise OutsideDomainError(f"log_prob must map x of shape {tuple(x.shape)} to shape {tuple(x.shape[:-1])}, got {got}")
        return f

    def _h(self, f: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.beta * f) if self.form == "power" else self.alpha * (-f) + self.beta

    def _log_h_slope(self, f: torch.Tensor) -> torch.Tensor:
        """h'(f) / h(f), (...)."""
        if self.form == "power":
            return torch.full_like(f, -self.beta)
        return -self.alpha / self._h(f)

    # ------------------------------------------------------------------ operators
    def _matrix(self, x: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        return self.factor(x)[..., None, None] * eye

    def _apply(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.factor(x).unsqueeze(-1) * v

    def _solve(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return b / self.factor(x).unsqueeze(-1)

    def _inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.factor(x) * (u * v).sum(-1)

    def _acceleration(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """ẍ = −2 (∇φ·v) v + |v|² ∇φ with ∇φ = ½ (h'/h)(f) ∇f."""
        x, v = torch.broadcast_tensors(x, v)
        grad_phi = 0.5 * self._log_h_slope(self._f(x)).unsqueeze(-1) * self._gradient(x)
        return -2 * (grad_phi * v).sum(-1, keepdim=True) * v + (v * v).sum(-1, keepdim=True) * grad_phi

    def _check_domain(self, x: torch.Tensor, name: str) -> None:
        """h(x) must be finite and > 0."""
        h = self.factor(x)
        bad = ~(torch.isfinite(h) & (h > 0))
        if bool(bad.any()):
            index = tuple(int(i) for i in bad.nonzero()[0]) if bad.ndim else ()
            point = x[index] if index else x
            raise OutsideDomainError(
                f"{name} = {describe_point(point)} is outside the domain of the conformal metric: "
                f"h = {float(h[index] if index else h):.3g} (must be finite and > 0)"
            )

    def __repr__(self) -> str:
        params = f"beta={self.beta}" if self.form == "power" else f"alpha={self.alpha}, beta={self.beta}"
        return f"ConformalMetric(dim={self.dim}, form={self.form!r}, {params})"
