"""Analytic densities with closed-form scores.

Points are tensors of shape (..., d); every method broadcasts over the leading
dimensions and keeps the dtype and device of its input. Parameters are stored in
the dtype given at construction and cast to the dtype and device of each input,
so a float64 density evaluated at float32 points returns float32 results.
"""

from __future__ import annotations

import math

import torch

from ._checks import check_finite, check_points, check_positive_int


class Gaussian:
    """Multivariate normal N(mean, cov).

    Args:
        mean: (d,) mean vector.
        cov: (d, d) symmetric positive-definite covariance.
    """

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor):
        mean = torch.as_tensor(mean)
        if not mean.is_floating_point():
            mean = mean.to(torch.get_default_dtype())
        cov = torch.as_tensor(cov, dtype=mean.dtype, device=mean.device)
        if mean.ndim != 1:
            raise ValueError(f"mean must have shape (d,), got {tuple(mean.shape)}")
        d = mean.shape[0]
        if cov.shape != (d, d):
            raise ValueError(f"cov must have shape ({d}, {d}) to match mean, got {tuple(cov.shape)}")
        check_finite(mean, "mean")
        check_finite(cov, "cov")
        self.mean = mean
        self.cov = cov
        self.scale_tril = _cholesky(cov, "cov")
        self.precision = torch.cholesky_inverse(self.scale_tril)
        self._log_norm = -0.5 * d * math.log(2 * math.pi) - self.scale_tril.diagonal().log().sum()

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density at x (..., d) → (...)."""
        check_points(x, self.dim, "x")
        diff = x - self.mean.to(x)
        tril = self.scale_tril.to(x)
        z = torch.linalg.solve_triangular(tril, diff.unsqueeze(-1), upper=False).squeeze(-1)
        return self._log_norm.to(x) - 0.5 * (z**2).sum(-1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Stein score ∇x log p = −Σ⁻¹(x − μ), shape (..., d)."""
        check_points(x, self.dim, "x")
        return -(x - self.mean.to(x)) @ self.precision.to(x)

    score.symmetric_jacobian = True  # a gradient field: ScoreMetric skips the Jᵀv pass

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n samples, shape (n, d)."""
        check_positive_int(n, "n")
        z = torch.randn(n, self.dim, generator=generator, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + z @ self.scale_tril.T


class GaussianMixture:
    """Mixture Σ_k w_k N(mean_k, cov_k).

    Args:
        means: (K, d) component means.
        covs: (K, d, d) component covariances, or (d, d) shared by all.
        weights: (K,) non-negative weights (normalised here); uniform when None.
    """

    def __init__(self, means: torch.Tensor, covs: torch.Tensor, weights: torch.Tensor | None = None):
        means = torch.as_tensor(means)
        if not means.is_floating_point():
            means = means.to(torch.get_default_dtype())
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        k, d = means.shape
        covs = torch.as_tensor(covs, dtype=means.dtype, device=means.device)
        if covs.shape == (d, d):
            covs = covs.expand(k, d, d)
        if covs.shape != (k, d, d):
            raise ValueError(f"covs must have shape ({k}, {d}, {d}) or ({d}, {d}), got {tuple(covs.shape)}")
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=means.dtype, device=means.device)
        weights = torch.as_tensor(weights, dtype=means.dtype, device=means.device)
        if weights.shape != (k,):
            raise ValueError(f"weights must have shape ({k},), got {tuple(weights.shape)}")
        check_finite(means, "means")
        check_finite(covs, "covs")
        check_finite(weights, "weights")
        if bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        self.means = means
        self.covs = covs.contiguous()
        self.weights = weights / weights.sum()
        self.scale_trils = _cholesky(self.covs, "covs")
        self.precisions = torch.cholesky_inverse(self.scale_trils)
        self._log_norms = (
            self.weights.log() - 0.5 * d * math.log(2 * math.pi) - self.scale_trils.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        )

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _component_log_probs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted component log-densities (..., K) and differences x − μ_k (..., K, d)."""
        diff = x.unsqueeze(-2) - self.means.to(x)
        z = torch.linalg.solve_triangular(self.scale_trils.to(x), diff.unsqueeze(-1), upper=False).squeeze(-1)
        return self._log_norms.to(x) - 0.5 * (z**2).sum(-1), diff

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density at x (..., d) → (...)."""
        check_points(x, self.dim, "x")
        logp, _ = self._component_log_probs(x)
        return torch.logsumexp(logp, dim=-1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Stein score Σ_k r_k(x) (−Σ_k⁻¹(x − μ_k)) with responsibilities r_k, shape (..., d)."""
        check_points(x, self.dim, "x")
        logp, diff = self._component_log_probs(x)
        resp = torch.softmax(logp, dim=-1)
        comp_scores = -(self.precisions.to(x) @ diff.unsqueeze(-1)).squeeze(-1)
        return (resp.unsqueeze(-1) * comp_scores).sum(-2)

    score.symmetric_jacobian = True  # a gradient field: ScoreMetric skips the Jᵀv pass

    def noisy(self, sigma: float, mean_coef: float = 1.0) -> "GaussianMixture":
        """The law of m·X + σ·Z (X from this mixture, Z ~ N(0, I)): means m μ_k, covariances m² Σ_k + σ² I.

        This is the marginal p_t of a diffusion SDE with kernel N(m x, σ² I), so its
        ``score`` is the exact target of (denoising) score matching at that noise level.
        """
        sigma, mean_coef = float(sigma), float(mean_coef)
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
        if not (math.isfinite(mean_coef) and mean_coef > 0):
            raise ValueError(f"mean_coef must be a finite number > 0, got {mean_coef!r}")
        eye = torch.eye(self.dim, dtype=self.means.dtype, device=self.means.device)
        return GaussianMixture(mean_coef * self.means, mean_coef**2 * self.covs + sigma**2 * eye, self.weights)

    def noisy_score(self, x: torch.Tensor, sigma: torch.Tensor, mean_coef: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Score at x (..., d) of the law of m·X + σ·Z, with σ and m per point (shape (...) or scalars).

        The per-point version of ``noisy(σ, m).score(x)``: what a noise-conditional
        score network s(x, σ) should learn; it forms one d×d Cholesky factor per
        point and component, so it is meant for small d (tests, benchmarks).
        """
        check_points(x, self.dim, "x")
        batch = x.shape[:-1]
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(batch)
        m = torch.as_tensor(mean_coef, dtype=x.dtype, device=x.device).expand(batch)
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        m2 = (m**2)[..., None, None, None]
        covs = m2 * self.covs.to(x) + (sigma**2)[..., None, None, None] * eye  # (..., K, d, d)
        diff = x.unsqueeze(-2) - m[..., None, None] * self.means.to(x)  # (..., K, d)
        tril = torch.linalg.cholesky(covs)
        z = torch.linalg.solve_triangular(tril, diff.unsqueeze(-1), upper=False)
        logp = self.weights.to(x).log() - tril.diagonal(dim1=-2, dim2=-1).log().sum(-1) - 0.5 * (z**2).sum((-2, -1))
        comp_scores = -torch.cholesky_solve(diff.unsqueeze(-1), tril).squeeze(-1)
        return (torch.softmax(logp, dim=-1).unsqueeze(-1) * comp_scores).sum(-2)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n samples, shape (n, d)."""
        check_positive_int(n, "n")
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype, device=self.means.device)
        return self.means[idx] + (self.scale_trils[idx] @ z.unsqueeze(-1)).squeeze(-1)


def _cholesky(cov: torch.Tensor, name: str) -> torch.Tensor:
    if not torch.allclose(cov, cov.transpose(-1, -2), rtol=1e-6, atol=1e-8 * float(cov.abs().max())):
        raise ValueError(f"{name} must be symmetric")
    chol, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        raise ValueError(f"{name} must be positive-definite (Cholesky factorisation failed)")
    return chol

