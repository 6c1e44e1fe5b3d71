"""Forward noising SDEs of score-based generative models (Song et al., ICLR 2021).

    dx = f(x, t) dt + g(t) dw,   t ∈ [0, T], T = 1.

Both SDEs here have a Gaussian perturbation kernel
p_t(x̃ | x) = N(m(t) x, σ(t)² I), so a noise-conditional network is conditioned
on σ(t) (``std``) whatever the SDE, and denoising score matching has the target
−(x̃ − m x)/σ² = −ε/σ.

Every method is shape-agnostic: x is (B, ...) (vectors (B, d) or images
(B, C, H, W)) and t is (B,) or a scalar, broadcast over the trailing
dimensions. Nothing assumes a channel axis.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable

import torch

from .._checks import check_nonnegative
from .parameterization import expand_like

ScoreAtTime = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (B, ...), t (B,)) -> score (B, ...)


class SDE(ABC):
    """A linear forward SDE with Gaussian perturbation kernels N(m(t) x, σ(t)² I)."""

    T = 1.0

    def __init__(self, t_min: float):
        if not (isinstance(t_min, (int, float)) and 0 < t_min < self.T):
            raise ValueError(f"t_min must be a number in (0, {self.T}), got {t_min!r}")
        self.t_min = float(t_min)

    @abstractmethod
    def mean_coef(self, t: torch.Tensor) -> torch.Tensor:
        """m(t): the kernel's mean is m(t)·x, same shape as t."""

    @abstractmethod
    def std(self, t: torch.Tensor) -> torch.Tensor:
        """σ(t): the kernel's standard deviation, same shape as t."""

    @abstractmethod
    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """f(x, t), shape of x."""

    @abstractmethod
    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """g(t), same shape as t."""

    @abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the prior N(0, σ_T² I) that approximates p_T."""

    def perturb(
        self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample x_t ~ N(m(t) x0, σ(t)² I); return (x_t, ε, σ(t)) with x_t = m x0 + σ ε, σ of shape (B,)."""
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        sigma = self.std(t)
        return expand_like(self.mean_coef(t), x0) * x0 + expand_like(sigma, x0) * noise, noise, sigma

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Draw from the prior N(0, σ_T² I), shape ``shape`` = (B, ...)."""
        return self.prior_std() * torch.randn(shape, generator=generator, dtype=dtype, device=device)

    def reverse_drift(
        self, x: torch.Tensor, t: torch.Tensor, score: ScoreAtTime, probability_flow: bool = False
    ) -> torch.Tensor:
        """Drift of the reverse-time SDE, f − g² s, or of the probability-flow ODE, f − ½ g² s."""
        g2 = expand_like(self.diffusion(t) ** 2, x)
        weight = 0.5 if probability_flow else 1.0
        return self.drift(x, t) - weight * g2 * score(x, t)


class VESDE(SDE):
    """Variance-exploding SDE: σ(t) = σ_min (σ_max/σ_min)^t, f = 0, g = σ(t) √(2 log(σ_max/σ_min)).

    As in Song et al., data at t = 0 is taken to carry σ_min of noise, so the
    kernel's standard deviation is σ(t) itself (m = 1). Choose σ_max about the
    largest distance between two data points (``objectives.sigma_max_from_data``).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 1e-5):
        super().__init__(t_min)
        self.sigma_min = check_nonnegative(sigma_min, "sigma_min")
        self.sigma_max = check_nonnegative(sigma_max, "sigma_max")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def mean_coef(self, t):
        return torch.ones_like(torch.as_tensor(t))

    def std(self, t):
        return self.sigma_min * torch.exp(torch.as_tensor(t) * self._log_ratio)

    def drift(self, x, t):
        return torch.zeros_like(x)

    def diffusion(self, t):
        return self.std(t) * math.sqrt(2 * self._log_ratio)

    def prior_std(self) -> float:
        return self.sigma_max

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, t_min={self.t_min})"


class VPSDE(SDE):
    """Variance-preserving SDE: β(t) = β_min + t (β_max − β_min), f = −½ β(t) x, g = √β(t).

    m(t) = exp(−¼ t² (β_max − β_min) − ½ t β_min), σ(t) = √(1 − m(t)²); prior N(0, I).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3):
        super().__init__(t_min)
        self.beta_min = check_nonnegative(beta_min, "beta_min")
        self.beta_max = check_nonnegative(beta_max, "beta_max")
        if not 0 < self.beta_min < self.beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")

    def beta(self, t):
        return self.beta_min + torch.as_tensor(t) * (self.beta_max - self.beta_min)

    def _log_mean_coef(self, t):
        t = torch.as_tensor(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def mean_coef(self, t):
        return torch.exp(self._log_mean_coef(t))

    def std(self, t):
        return torch.sqrt(-torch.expm1(2 * self._log_mean_coef(t)))

    def drift(self, x, t):
        return -0.5 * expand_like(self.beta(t), x) * x

    def diffusion(self, t):
        return torch.sqrt(self.beta(t))

    def prior_std(self) -> float:
        return 1.0

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max}, t_min={self.t_min})"
