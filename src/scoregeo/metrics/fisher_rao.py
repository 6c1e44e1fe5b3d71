"""The Fisher–Rao metric of a parametric family of torch distributions."""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch.distributions import Distribution
from torch.distributions.kl import _dispatch_kl, kl_divergence
from torch.func import grad, jvp

from .._checks import check_positive_int
from .base import Metric, dense_acceleration, solve_spd

Family = Callable[[torch.Tensor], Distribution]


class FisherRaoMetric(Metric):
    """Fisher information G(θ) = E_{y∼p_θ}[∇θ log p_θ(y) ∇θ log p_θ(y)ᵀ] as a metric on θ ∈ R^k.

    Args:
        family: maps θ of shape (..., k) to a ``torch.distributions.Distribution``
            whose batch shape is (...); it must be built from differentiable torch
            operations of θ (for example ``lambda t: Normal(t[..., 0], t[..., 1])``).
        dim: k, the number of parameters.
        mc_samples: number of Monte Carlo samples, used only when torch registers
            no closed-form KL divergence for the family.
        generator: seeds the Monte Carlo samples (a seed is drawn from it once, at
            construction, and reused at every θ, so G is a smooth deterministic
            function of θ for one metric object).

    Exact mode (a KL divergence is registered for the pair): G(θ) is the Hessian
    ∂²/∂θ'² KL(p_θ ‖ p_θ') at θ' = θ, computed by ``torch.func``.

    A dense metric: ``solve`` and ``acceleration`` form G(θ) (k×k) and use
    its Cholesky factor.

    Monte Carlo mode: G(θ) is the average of score outer products over
    ``mc_samples`` draws of the family's own samples; it is **stochastic** (its
    error is O(1/√mc_samples)). The samples are weighted by p_θ'(y)/p_θ(y) (equal
    to 1 in value), so that derivatives of G, and thus Christoffel symbols, are
    also unbiased.
    """

    def __init__(
        self,
        family: Family,
        dim: int,
        mc_samples: int | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__(dim)
        if not callable(family):
            raise ValueError(f"family must be callable, got {type(family).__name__}")
        self.family = family
        if mc_samples is not None:
            check_positive_int(mc_samples, "mc_samples", minimum=2)
        self.mc_samples = mc_samples
        self._seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        self._exact: bool | None = None

    def _is_exact(self, theta: torch.Tensor) -> bool:
        if self._exact is None:
            with _no_validation():
                dist = self.family(theta.detach())
            if not isinstance(dist, Distribution):
                raise ValueError(f"family must return a torch.distributions.Distribution, got {type(dist).__name__}")
            self._exact = _dispatch_kl(type(dist), type(dist)) is not NotImplemented
            if not self._exact and self.mc_samples is None:
                raise ValueError(
                    f"torch registers no closed-form KL divergence for {type(dist).__name__}; pass mc_samples "
                    "(and a generator) to estimate the Fisher information by Monte Carlo"
                )
        return self._exact

    def _matrix(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-1]
        flat = x.reshape(-1, self.dim).contiguous()  # forward-mode AD refuses expanded (stride-0) memory
        with _no_validation():
            G = self._exact_fisher(flat) if self._is_exact(flat) else self._mc_fisher(flat)
        return G.reshape(*batch, self.dim, self.dim)

    def _solve(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """G(θ)⁻¹ b by Cholesky (``ValueError`` naming θ where G is not positive-definite)."""
        x, b = torch.broadcast_tensors(x, b)
        return solve_spd(self._matrix(x), b, x)

    def _acceleration(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return dense_acceleration(self, x, v)

    def _exact_fisher(self, theta: torch.Tensor) -> torch.Tensor:
        """Hessian of KL(p_θ ‖ p_θ') in θ' at θ' = θ, for a batch θ (B, k).

        The KL divergences of different points are independent, so the gradient
        of their sum holds every point's own gradient, and one JVP of it per
        coordinate direction gives one Hessian column for the whole batch. No
        vmap: torch's KL formulas for Bernoulli and Categorical use boolean-mask
        indexing, which vmap cannot batch.
        """

        def kl_gradient(theta1: torch.Tensor) -> torch.Tensor:
            return grad(lambda t1: kl_divergence(self.family(theta), self.family(t1)).sum())(theta1)

        eye = torch.eye(self.dim, dtype=theta.dtype, device=theta.device)
        columns = [jvp(kl_gradient, (theta,), (eye[i].expand_as(theta),))[1] for i in range(self.dim)]
        return torch.stack(columns, dim=-1)

    def _mc_fisher(self, theta: torch.Tensor) -> torch.Tensor:
        """Average of score outer products over the family's own samples, for a batch θ (B, k).

        Like the exact mode, no vmap: the family is evaluated on the whole batch
        (sample n of point b under p_θ_b) and the scores come from one JVP per
        coordinate direction (log p of point b depends on θ_b only). Families
        whose ``log_prob`` uses boolean-mask indexing (Multinomial) work too.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed)
            samples = self.family(theta.detach()).sample((self.mc_samples,))  # (n, B, *event)

        def log_prob(t: torch.Tensor) -> torch.Tensor:
            return self.family(t).log_prob(samples)  # (n, B)

        eye = torch.eye(self.dim, dtype=theta.dtype, device=theta.device)
        columns = [jvp(log_prob, (theta,), (eye[i].expand_as(theta),)) for i in range(self.dim)]
        lp = columns[0][0]  # log p itself, the primal of every JVP
        scores = torch.stack([column for _, column in columns], -1)
        weights = torch.exp(lp - lp.detach())  # 1 in value; carries the derivative of the sampling law
        return torch.einsum("nb,nbi,nbj->bij", weights, scores, scores) / self.mc_samples

    def __repr__(self) -> str:
        mode = "exact KL Hessian" if self._exact else f"Monte Carlo ({self.mc_samples} samples)"
        return f"FisherRaoMetric(dim={self.dim}, {mode if self._exact is not None else 'mode not yet known'})"


@contextlib.contextmanager
def _no_validation():
    """Turn off torch.distributions argument validation (data-dependent checks break under vmap)."""
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)
