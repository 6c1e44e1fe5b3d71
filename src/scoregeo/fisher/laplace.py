"""Laplace posteriors: a Gaussian N(θ*, H⁻¹) around a trained model's parameters θ*.

H = F + δI, with F the Fisher information (= generalised Gauss–Newton matrix for
the built-in likelihoods) of the whole data set (summed over examples, the
log-likelihood scale of ``fim(..., reduction="sum")``) and δ the precision of an
isotropic Gaussian prior N(0, δ⁻¹I) on θ. θ* should be the MAP of that prior
(the model trained with weight decay δ on the summed negative log-likelihood).

Constant conventions (those of laplace-torch 0.3):

    log p(D) ≈ log p(D | θ*) − ½ (log det H − P log δ) − ½ δ ‖θ*‖²,

with log p(D | θ*) the exact normalised log-likelihood (Gaussian: including
−½ log 2πσ² per output); the (2π)^(P/2) of the Laplace integral cancels the
prior's normaliser. For linear-Gaussian regression at its MAP this is the exact
evidence.

Predictive distributions linearise the model around θ* (the "GLM predictive"):
f(x) ~ N(f(x; θ*), J(x) H⁻¹ J(x)ᵀ), J = ∂f/∂θ. Regression returns that Gaussian
plus the observation noise; classification returns probabilities by the probit
approximation (MacKay) or by Monte Carlo over f.

Structures, each held in an eigenbasis of F so that log det H, H⁻¹ and
samples cost nothing more for a new δ:

* "dense": F as a P×P matrix;
* "diag": the diagonal of F;
* "kfac": the K-FAC blocks G ⊗ A of ``fim(structure="kfac")`` (eigenvalues g aᵀ,
  eigenvectors U_G ⊗ U_A per block; the exact damped inverse, as in laplace-torch's
  Kron posterior);
* "last_layer": a dense posterior over the parameters of the model's last
  ``nn.Linear`` only, every other parameter fixed at θ* (``mean`` and ``sample``
  are then vectors of the last layer's parameters).
"""

from __future__ import annotations

import math
import contextlib
from dataclasses import dataclass

import scipy.optimize
import torch
from torch import nn

from ._parameters import _check_positive_number, _trainable
from .fim import fim
from .kfac import KFACBlock
from .likelihoods import Categorical, Gaussian, Likelihood, get_likelihood
from .scores import _check_inputs, _check_model, _forward, jacobians

__all__ = ["laplace", "LaplacePosterior", "STRUCTURES"]

STRUCTURES = ("dense", "diag", "kfac", "last_layer")
PREDICTIVE_METHODS = ("glm", "probit", "mc")


@dataclass
class LaplacePosterior:
    """The Laplace approximation N(θ*, (F + δI)⁻¹) of a model's posterior; see the module docstring.

    Attributes:
        model: the model (its parameters are θ*; do not change them afterwards).
        likelihood: the ``Likelihood``.
        structure: "dense", "diag", "kfac" or "last_layer".
        mean: θ* (P,), the flattened trainable parameters (for "last_layer": those of the last nn.Linear).
        log_likelihood: log p(D | θ*), summed over the data (a float).
        prior_precision: δ (a float; ``optimize_prior_precision`` changes it).
        basis: F's eigenbasis (eigenvalues λ (P,) and the rotations to and from it).
    """

    model: nn.Module
    likelihood: Likelihood
    structure: str
    mean: torch.Tensor
    log_likelihood: float
    prior_precision: float
    basis: "_Eigenbasis"

    # -- the posterior ---------------------------------------------------------------------------
    def _precision_spectrum(self, prior_precision: float | None = None) -> torch.Tensor:
        delta = self.prior_precision if prior_precision is None else prior_precision
        return self.basis.eigenvalues.clamp_min(0) + delta

    def posterior_precision(self) -> torch.Tensor:
        """H = F + δI: its diagonal (P,) for "diag", else the (P, P) matrix."""
        return self.basis.matrix(self._precision_spectrum())

    def posterior_covariance(self) -> torch.Tensor:
        """H⁻¹: its diagonal (P,) for "diag", else the (P, P) matrix."""
        return self.basis.matrix(1 / self._precision_spectrum())

    def log_det_posterior_precision(self, prior_precision: float | None = None) -> float:
        """log det H at δ (default: the current prior precision)."""
        return float(self._precision_spectrum(prior_precision).log().sum())

    def log_marginal_likelihood(self, prior_precision: float | None = None) -> float:
        """Laplace estimate of log p(D) at δ (default: the current one), θ* held fixed (see module docstring)."""
        delta = self.prior_precision if prior_precision is None else _check_positive_number(
            prior_precision, "prior_precision")
        P = self.mean.numel()
        log_det_ratio = self.log_det_posterior_precision(delta) - P * math.log(delta)
        scatter = delta * float(self.mean @ self.mean)
        return self.log_likelihood - 0.5 * (log_det_ratio + scatter)

    def optimize_prior_precision(self, bounds: tuple[float, float] = (1e-8, 1e8)) -> float:
        """Set δ to the maximiser of ``log_marginal_likelihood`` over [low, high] (bounded Brent in log δ).

        Returns the new δ. θ* is not re-trained: this is the usual empirical-Bayes
        step after training (MacKay), as in laplace-torch.
        """
        low, high = (_check_positive_number(b, "bounds") for b in bounds)
        if not low < high:
            raise ValueError(f"bounds must be (low, high) with 0 < low < high, got {bounds!r}")
        result = scipy.optimize.minimize_scalar(
            lambda log_delta: -self.log_marginal_likelihood(math.exp(log_delta)),
            bounds=(math.log(low), math.log(high)), method="bounded", options={"xatol": 1e-10},
        )
        self.prior_precision = math.exp(result.x)
        return self.prior_precision

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n parameter vectors (n, P) from N(θ*, H⁻¹)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        z = torch.randn(n, self.mean.numel(), generator=generator, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + self.basis.from_eigen(z / self._precision_spectrum().sqrt())

    # -- predictions -----------------------------------------------------------------------------
    def function_variance(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x; θ*) (N, C), J H⁻¹ Jᵀ (N, C, C)) of the linearised model at ``inputs``."""
        inputs = _check_inputs(inputs)
        output, J = _last_layer_jacobian(self.model, inputs) if self.structure == "last_layer" else (None, None)
        if J is None:
            output = _forward(self.model, inputs)
            with _posterior_parameters(self.model, self.structure):
                J = jacobians(self.model, inputs)  # (N, C, P)
        root = self.basis.to_eigen(J) / self._precision_spectrum().sqrt()
        return output, root @ root.mT

    def predictive(self, inputs: torch.Tensor, method: str | None = None, n_samples: int = 1000,
                   generator: torch.Generator | None = None):
        """The linearised (GLM) predictive at ``inputs`` (N, ...).

        Gaussian likelihood ("glm", the default): returns (mean (N, C), covariance
        (N, C, C)) of y, J H⁻¹ Jᵀ plus the observation variance.
        Categorical and Bernoulli: returns probabilities (N, C); ``method``
        "probit" (default; softmax/sigmoid of f / √(1 + π/8 · var f), per
        output) or "mc" (``n_samples`` draws of f, averaged probabilities).
        """
        is_gaussian = isinstance(self.likelihood, Gaussian)
        method = method or ("glm" if is_gaussian else "probit")
        if method not in PREDICTIVE_METHODS:
            raise ValueError(f"method must be one of {PREDICTIVE_METHODS}, got {method!r}")
        if is_gaussian != (method == "glm"):
            raise ValueError(f"method {method!r} does not apply to the {self.likelihood!r} likelihood "
                             f"({'glm' if is_gaussian else 'probit or mc'})")
        f, variance = self.function_variance(inputs)
        if is_gaussian:
            noise = self.likelihood._var(f).expand_as(f)
            return f, variance + torch.diag_embed(noise)
        squash = (lambda g: torch.softmax(g, -1)) if isinstance(self.likelihood, Categorical) else torch.sigmoid
        if method == "probit":
            return squash(f / (1 + math.pi / 8 * variance.diagonal(dim1=-2, dim2=-1)).sqrt())
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
        values, vectors = torch.linalg.eigh(variance)
        root = vectors * values.clamp_min(0).sqrt().unsqueeze(-2)  # (N, C, C), root rootᵀ = variance
        z = torch.randn(n_samples, *f.shape, generator=generator, dtype=f.dtype, device=f.device)
        draws = f + (root @ z.unsqueeze(-1)).squeeze(-1)  # (S, N, C)
        return squash(draws).mean(0)


def laplace(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    likelihood,
    structure: str = "kfac",
    prior_precision: float = 1.0,
    variance=None,
) -> LaplacePosterior:
    """The Laplace posterior of a trained model (see the module docstring for conventions).

    Args:
        model: maps inputs (N, ...) to outputs (N, C); its current trainable
            parameters are θ* (the MAP under the prior N(0, δ⁻¹I)).
        data: (inputs, targets), the training data, targets as the likelihood
            expects them.
        likelihood: "categorical", "bernoulli", "gaussian" or a ``Likelihood``.
        structure: "kfac" (default), "dense", "diag" or "last_layer" (see the module docstring).
        prior_precision: δ > 0.
        variance: σ² of the "gaussian" likelihood.
    """
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    delta = _check_positive_number(prior_precision, "prior_precision")
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"data must be a pair (inputs, targets), got {type(data).__name__}")
    inputs, targets = data
    lik = get_likelihood(likelihood, variance)
    _check_model(model)
    if structure == "last_layer":
        _last_linear(model)
    inputs = _check_inputs(inputs)
    output = _forward(model, inputs)
    lik.check_output(output)
    targets = lik.check_targets(output, targets)
    log_likelihood = float(lik.log_prob(output, targets).sum())
    with _posterior_parameters(model, structure):
        mean = torch.cat([p.detach().reshape(-1) for p in _trainable(model)])
        fim_structure = "dense" if structure == "last_layer" else structure
        curvature = fim(model, inputs, lik, kind="true", structure=fim_structure, reduction="sum")
    if structure == "diag":
        basis = _Eigenbasis(curvature.diag())
    elif structure == "kfac":
        basis = _Eigenbasis.kronecker(curvature.blocks, mean.numel())
    else:
        values, vectors = torch.linalg.eigh(curvature.dense())
        basis = _Eigenbasis(values, vectors=vectors)
    return LaplacePosterior(model, lik, structure, mean, log_likelihood, delta, basis)


class _Eigenbasis:
    """An orthonormal eigenbasis U of F (F = U diag(λ) Uᵀ): dense U, the identity (diagonal F), or per-block
    U_G ⊗ U_A (K-FAC; eigen-coordinates of a block sit at the block's own parameter positions)."""

    def __init__(self, eigenvalues: torch.Tensor, vectors: torch.Tensor | None = None,
                 blocks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None):
        self.eigenvalues, self.vectors, self.blocks = eigenvalues, vectors, blocks

    @classmethod
    def kronecker(cls, blocks: list[KFACBlock], size: int) -> "_Eigenbasis":
        eigenvalues = torch.full((size,), math.nan, dtype=blocks[0].A.dtype, device=blocks[0].A.device)
        rotations = []
        for block in blocks:
            eA, UA, eG, UG = block.eig()
            eigenvalues[block.index] = torch.outer(eG, eA)
            rotations.append((block.index, UG, UA))
        if bool(eigenvalues.isnan().any()):
            raise ValueError("the K-FAC blocks do not cover every trainable parameter")
        return cls(eigenvalues, blocks=rotations)

    def to_eigen(self, v: torch.Tensor) -> torch.Tensor:
        """Uᵀ v for row vectors v (..., P)."""
        if self.vectors is not None:
            return v @ self.vectors
        if self.blocks is None:
            return v
        out = torch.empty_like(v)
        for index, UG, UA in self.blocks:
            out[..., index] = UG.T @ v[..., index] @ UA
        return out

    def from_eigen(self, z: torch.Tensor) -> torch.Tensor:
        """U z for row vectors z (..., P)."""
        if self.vectors is not None:
            return z @ self.vectors.T
        if self.blocks is None:
            return z
        out = torch.empty_like(z)
        for index, UG, UA in self.blocks:
            out[..., index] = UG @ z[..., index] @ UA.T
        return out

    def matrix(self, spectrum: torch.Tensor) -> torch.Tensor:
        """U diag(spectrum) Uᵀ: (P, P), or the vector itself for the identity basis."""
        if self.vectors is None and self.blocks is None:
            return spectrum
        return self.from_eigen(self.from_eigen(torch.diag(spectrum)).T)


@contextlib.contextmanager
def _posterior_parameters(model: nn.Module, structure: str):
    """For "last_layer", only the last nn.Linear's parameters require grad inside the block; else nothing changes."""
    if structure != "last_layer":
        yield
        return
    keep = {id(p) for p in _last_linear(model).parameters()}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in keep]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError("structure='last_layer' needs an nn.Linear layer in the model (the last one is used)")
    return linears[-1]


def _last_layer_jacobian(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(output, J) with J (N, C, P) in closed form when the last nn.Linear's output is the model's output.

    f = W φ + b: ∂f_c/∂W_{c'j} = δ_{cc'} φ_j and ∂f_c/∂b_{c'} = δ_{cc'}, from the
    layer's input φ captured by a forward hook. J is None when anything follows
    the layer (the caller then differentiates the model).
    """
    layer = _last_linear(model)
    captured = {}
    handle = layer.register_forward_hook(lambda module, args, out: captured.update(features=args[0], out=out))
    try:
        output = _forward(model, inputs)
    finally:
        handle.remove()
    if captured.get("out") is None or captured["out"].shape != output.shape or not torch.equal(captured["out"], output):
        return output, None
    features = captured["features"]  # (N, D)
    if features.ndim != 2:
        return output, None
    eye = torch.eye(output.shape[1], dtype=output.dtype, device=output.device)
    blocks = []
    if layer.weight.requires_grad:
        blocks.append(torch.einsum("ck,nj->nckj", eye, features).reshape(*output.shape, -1))
    if layer.bias is not None and layer.bias.requires_grad:
        blocks.append(eye.expand(output.shape[0], -1, -1))
    return output, torch.cat(blocks, -1)
