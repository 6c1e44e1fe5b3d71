"""Likelihoods p(y | f) of a model's output f, on the log-likelihood scale.

A model maps inputs x (N, ...) to outputs f (N, C); a likelihood turns each row
f_n into a distribution over targets y_n. Every quantity here is the exact,
normalised log-likelihood and its derivatives, never a loss: a cross-entropy
loss with ``reduction="mean"`` or an MSE loss is off by a factor (1/N, 2σ²…)
and a constant, and the Fisher information built from it would be off too.

Conventions (shapes for a batch of N examples and C outputs):

=============  ==========================  ===================================
likelihood     output f (N, C)             targets y
=============  ==========================  ===================================
Categorical    logits of C classes         integer class indices (N,) in [0, C)
Bernoulli      one logit per output        (N, C) of 0/1, independent outputs
Gaussian(σ²)   means of C outputs          (N, C) reals, y_c ~ N(f_c, σ_c²)
=============  ==========================  ===================================

``log_prob`` sums over the C outputs and returns (N,). ``precision(f)`` is the
Fisher information of the likelihood with respect to its output,
Λ(f) = E_{y~p(y|f)}[∇_f log p ∇_f log pᵀ] (N, C, C):

- Categorical: diag(p) − p pᵀ with p = softmax(f);
- Bernoulli: diag(σ(f)(1 − σ(f)));
- Gaussian: diag(1/σ²) — the variance σ² is explicit and fixed (a scalar or one
  per output), never silently 1.

Probabilities are computed with ``softmax``/``logsigmoid``, so very confident
models (logits of size 10³) give no NaN.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as nnf

from .._checks import _is_plain

__all__ = ["Likelihood", "Categorical", "Bernoulli", "Gaussian", "get_likelihood", "LIKELIHOODS"]

LIKELIHOODS = ("categorical", "bernoulli", "gaussian")


class Likelihood:
    """Base class of a likelihood p(y | f) of a model output f (N, C).

    Subclasses implement ``log_prob``, ``sample``, ``precision`` and
    ``check_targets``; the other methods have generic defaults (autograd for
    ``output_score``, an eigen-decomposition for ``precision_factor``) that the
    built-in likelihoods replace with closed forms.
    """

    name: str = "likelihood"

    # -- to implement -------------------------------------------------------------------------
    def log_prob(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Exact normalised log p(y_n | f_n), summed over the C outputs: (..., N).

        ``output`` is (N, C); ``targets`` has the shape given by the class table,
        optionally with leading sample dimensions (then the result has them too).
        Targets are not validated here (this runs under ``torch.func``
        transforms); use ``check_targets``.
        """
        raise NotImplementedError

    def sample(self, output: torch.Tensor, n_samples: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """Targets drawn from p(y | f): shape (n_samples, N, ...) (deterministic for a fixed generator)."""
        raise NotImplementedError

    def precision(self, output: torch.Tensor) -> torch.Tensor:
        """Λ(f) = E_y[∇_f log p ∇_f log pᵀ], shape (N, C, C)."""
        raise NotImplementedError

    def check_targets(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Validate targets against the output (N, C); return them in the working dtype.

        Raises ``ValueError`` naming ``targets`` on a wrong shape or value.
        """
        raise NotImplementedError

    # -- generic defaults ---------------------------------------------------------------------
    def check_output(self, output: torch.Tensor) -> torch.Tensor:
        """Check that the model output is a 2-D (N, C) floating tensor."""
        if not isinstance(output, torch.Tensor) or output.ndim != 2:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(
                f"the model output must have shape (N, C) (a batch of N examples with C outputs), got {shape}; "
                "reshape it inside the model (e.g. flatten extra dimensions)"
            )
        if not output.is_floating_point():
            raise ValueError(f"the model output must be floating point, got dtype {output.dtype}")
        return output

    def output_score(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """∇_f log p(y | f) for each example (and each leading sample), shape (..., N, C).

        The Fisher score in θ is then g_n = J_nᵀ ∇_f log p(y_n | f_n), J_n = ∂f_n/∂θ.
        """
        lead = targets.shape[: targets.ndim - self._target_ndim()]
        f = output.detach().expand(*lead, *output.shape).clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self.log_prob(f, targets).sum(), f)
        return g

    def precision_mm(self, output: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Λ_n m_n for m (N, C, ...): shape (N, C, ...)."""
        lam = self.precision(output)
        n, c = output.shape
        return (lam @ m.reshape(n, c, -1)).reshape(m.shape)

    def precision_factor(self, output: torch.Tensor) -> torch.Tensor:
        """A square root B_n (N, K, C) with B_nᵀ B_n = Λ_n (default: eigen-decomposition, K = C)."""
        evals, evecs = torch.linalg.eigh(self.precision(output))
        return evals.clamp_min(0).sqrt().unsqueeze(-1) * evecs.mT

    def _target_ndim(self) -> int:
        """Number of trailing target dimensions per batch (1 for (N,), 2 for (N, C))."""
        return 2

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _check_target_tensor(targets) -> torch.Tensor:
    if not isinstance(targets, torch.Tensor):
        raise ValueError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    return targets


def _sum_of_others(p: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Σ_{j ≠ i} p_j (…, 1) for the class i = ``index`` (…, 1), summed rather than taken as 1 − p_i."""
    return p.scatter(-1, index, 0).sum(-1, keepdim=True)


class Categorical(Likelihood):
    """Categorical likelihood: output = logits (N, C), targets = class indices (N,) in [0, C).

    log p(y | f) = log_softmax(f)_y. Λ(f) = diag(p) − p pᵀ, p = softmax(f), of rank
    C − 1, which ``precision_factor`` factors as Bᵀ B with C − 1 rows.
    """

    name = "categorical"

    def _target_ndim(self) -> int:
        return 1

    def log_prob(self, output, targets):
        logp = torch.log_softmax(output, dim=-1)
        logp = logp.expand(*targets.shape, output.shape[-1])
        return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    def sample(self, output, n_samples=1, generator=None):
        self.check_output(output)
        probs = torch.softmax(output.detach(), dim=-1)
        return torch.multinomial(probs, n_samples, replacement=True, generator=generator).T.contiguous()

    # Near a confident prediction p_k → 1, and 1 − p_k computed as a difference loses every
    # digit (it is 0 in float64 once p_k rounds to 1), although Λ and the scores are of the
    # size of Σ_{j≠k} p_j. The forms below only ever sum the small probabilities.

    def precision(self, output):
        self.check_output(output)
        p = torch.softmax(output, dim=-1)
        top = p.argmax(-1, keepdim=True)
        complement = (1 - p).scatter(-1, top, _sum_of_others(p, top))
        lam = -p.unsqueeze(-1) * p.unsqueeze(-2)
        lam.diagonal(dim1=-2, dim2=-1).copy_(p * complement)  # p_c (1 − p_c)
        return lam

    def output_score(self, output, targets):
        # e_y − p, with 1 − p_y summed from the other classes
        p = torch.softmax(output, dim=-1).expand(*targets.shape, output.shape[-1])
        chosen = targets.unsqueeze(-1)
        return (-p).scatter(-1, chosen, _sum_of_others(p, chosen))

    def precision_mm(self, output, m):
        # Λ m = p ⊙ (m − pᵀm); with d = m − m_k for the most probable class k (d_k = 0),
        # m − pᵀm = d − pᵀd and pᵀd involves no p_k
        p = torch.softmax(output, dim=-1)
        p = p.reshape(*p.shape, *([1] * (m.ndim - 2)))
        top = p.argmax(1, keepdim=True).expand(-1, 1, *m.shape[2:])
        d = m - m.gather(1, top)
        return p * (d - (p * d).sum(1, keepdim=True))

    def precision_factor(self, output):
        # Λ has rank C − 1 (Λ 1 = 0), so a factor with C − 1 rows exists: with k the most
        # probable class, Λ = Tᵀ Λ' T for T u = u_rest − u_k and Λ' = diag(p') − p' p'ᵀ over
        # the rest. With q = √p', 1 − |q|² = p_k and (I − c q qᵀ)² = I − q qᵀ for
        # c = 1/(1 + √p_k), so B = (I − c q qᵀ) diag(q) T: C − 1 rows, no division by a
        # small number, finite for a confident model.
        p = torch.softmax(output, dim=-1)
        n, c = p.shape
        if c == 1:  # Λ = 0
            return torch.zeros(n, 1, 1, dtype=p.dtype, device=p.device)
        top = p.argmax(dim=1, keepdim=True)  # (N, 1)
        slots = torch.arange(c - 1, device=p.device).expand(n, -1)
        rest = slots + (slots >= top).long()  # (N, C−1): the other classes, in order
        q = p.gather(1, rest).sqrt()
        coef = 1 / (1 + p.gather(1, top).sqrt())  # (N, 1)
        eye = torch.eye(c, dtype=p.dtype, device=p.device)
        scaled = q.unsqueeze(-1) * (eye[rest] - eye[top.squeeze(1)].unsqueeze(1))  # diag(q) T: (N, C−1, C)
        return scaled - (coef * q).unsqueeze(-1) * (q.unsqueeze(1) @ scaled)

    def check_targets(self, output, targets):
        self.check_output(output)
        targets = _check_target_tensor(targets)
        n, c = output.shape
        if targets.dtype == torch.bool or targets.is_floating_point() or targets.is_complex():
            raise ValueError(
                f"targets of the categorical likelihood must be integer class indices (e.g. torch.long), "
                f"got dtype {targets.dtype}"
            )
        if targets.shape != (n,):
            raise ValueError(
                f"targets of the categorical likelihood must have shape ({n},) (one class index per example), "
                f"got {tuple(targets.shape)}"
            )
        if _is_plain(targets) and n > 0 and (int(targets.min()) < 0 or int(targets.max()) >= c):
            raise ValueError(
                f"targets of the categorical likelihood must be class indices in [0, {c}), "
                f"got values in [{int(targets.min())}, {int(targets.max())}]"
            )
        return targets.to(device=output.device, dtype=torch.long)


class Bernoulli(Likelihood):
    """Independent Bernoulli outputs: output = one logit per output (N, C), targets (N, C) in {0, 1}.

    log p(y | f) = Σ_c y_c log σ(f_c) + (1 − y_c) log σ(−f_c). Λ(f) = diag(σ(f)(1 − σ(f))).
    """

    name = "bernoulli"

    def log_prob(self, output, targets):
        targets = targets.to(output.dtype)
        return (targets * nnf.logsigmoid(output) + (1 - targets) * nnf.logsigmoid(-output)).sum(-1)

    def sample(self, output, n_samples=1, generator=None):
        self.check_output(output)
        probs = torch.sigmoid(output.detach()).expand(n_samples, *output.shape)
        return torch.bernoulli(probs, generator=generator)

    def _variance(self, output):
        # σ(f)(1 − σ(f)) = exp(log σ(f) + log σ(−f)): no cancellation for large |f|.
        return torch.exp(nnf.logsigmoid(output) + nnf.logsigmoid(-output))

    def precision(self, output):
        self.check_output(output)
        return torch.diag_embed(self._variance(output))

    def output_score(self, output, targets):
        return targets.to(output.dtype) - torch.sigmoid(output)

    def precision_mm(self, output, m):
        v = self._variance(output)
        return v.reshape(*v.shape, *([1] * (m.ndim - 2))) * m

    def precision_factor(self, output):
        return torch.diag_embed(self._variance(output).sqrt())

    def check_targets(self, output, targets):
        self.check_output(output)
        targets = _check_target_tensor(targets)
        if targets.shape != output.shape:
            raise ValueError(
                f"targets of the bernoulli likelihood must have the output's shape {tuple(output.shape)} "
                f"(one 0/1 value per output), got {tuple(targets.shape)}"
            )
        if targets.is_complex():
            raise ValueError("targets of the bernoulli likelihood must be real 0/1 values")
        if _is_plain(targets) and not bool(((targets == 0) | (targets == 1)).all()):
            raise ValueError("targets of the bernoulli likelihood must be 0 or 1 (got other values)")
        return targets.to(device=output.device, dtype=output.dtype)


class Gaussian(Likelihood):
    """Gaussian outputs with fixed variance: y_c ~ N(f_c, σ_c²) independently.

    Args:
        variance: σ² > 0, a number (shared by the C outputs) or a tensor of shape
            (C,) (one per output). It is the variance of the observation noise, not
            the standard deviation, and it scales the Fisher information as 1/σ².

    log p(y | f) = −½ Σ_c [(y_c − f_c)²/σ_c² + log(2π σ_c²)]; Λ = diag(1/σ²).
    """

    name = "gaussian"

    def __init__(self, variance):
        if isinstance(variance, Real) and not isinstance(variance, bool):
            var = torch.tensor(float(variance), dtype=torch.float64)
        elif isinstance(variance, torch.Tensor) and variance.ndim <= 1 and not variance.is_complex():
            var = variance.detach().clone()
            if not var.is_floating_point():
                var = var.to(torch.float64)
        else:
            raise ValueError(
                "variance of the gaussian likelihood must be a number > 0 or a tensor of shape (C,) of numbers > 0, "
                f"got {variance!r}"
            )
        if var.numel() == 0 or not bool(torch.isfinite(var).all()) or not bool((var > 0).all()):
            raise ValueError(f"variance of the gaussian likelihood must be finite and > 0, got {variance!r}")
        self.variance = var

    def _var(self, output):
        var = self.variance.to(dtype=output.dtype, device=output.device)
        if var.ndim == 1 and var.shape[0] != output.shape[-1]:
            raise ValueError(
                f"variance of the gaussian likelihood has {var.shape[0]} entries but the model has "
                f"{output.shape[-1]} outputs"
            )
        return var

    def log_prob(self, output, targets):
        var = self._var(output)
        quad = (targets - output) ** 2 / var
        return -0.5 * (quad + torch.log(2 * math.pi * var)).sum(-1)

    def sample(self, output, n_samples=1, generator=None):
        self.check_output(output)
        out = output.detach()
        noise = torch.randn(n_samples, *out.shape, generator=generator, dtype=out.dtype, device=out.device)
        return out + self._var(out).sqrt() * noise

    def precision(self, output):
        self.check_output(output)
        inv = (1 / self._var(output)).expand(output.shape)
        return torch.diag_embed(inv)

    def output_score(self, output, targets):
        return (targets - output) / self._var(output)

    def precision_mm(self, output, m):
        inv = (1 / self._var(output)).expand(output.shape)
        return inv.reshape(*inv.shape, *([1] * (m.ndim - 2))) * m

    def precision_factor(self, output):
        return torch.diag_embed((1 / self._var(output)).sqrt().expand(output.shape))

    def check_output(self, output):
        super().check_output(output)
        self._var(output)
        return output

    def check_targets(self, output, targets):
        self.check_output(output)
        targets = _check_target_tensor(targets)
        if targets.shape != output.shape:
            raise ValueError(
                f"targets of the gaussian likelihood must have the output's shape {tuple(output.shape)}, "
                f"got {tuple(targets.shape)} (reshape e.g. (N,) targets to (N, 1))"
            )
        if targets.is_complex() or targets.dtype == torch.bool:
            raise ValueError(f"targets of the gaussian likelihood must be real numbers, got dtype {targets.dtype}")
        targets = targets.to(device=output.device, dtype=output.dtype)
        if _is_plain(targets) and not bool(torch.isfinite(targets).all()):
            raise ValueError("targets of the gaussian likelihood contain NaN or Inf")
        return targets

    def __repr__(self) -> str:
        v = self.variance
        return f"Gaussian(variance={v.item() if v.ndim == 0 else v.tolist()})"


def get_likelihood(spec, variance=None) -> Likelihood:
    """Resolve a likelihood: a ``Likelihood`` instance, or "categorical" | "bernoulli" | "gaussian".

    ``variance`` (σ² > 0, a number or (C,)) is required by, and only used for,
    "gaussian"; with an instance, set it on the instance instead.
    """
    if isinstance(spec, Likelihood):
        if variance is not None:
            raise ValueError(
                f"variance was given together with the likelihood instance {spec!r}; "
                "set the variance on the instance (e.g. Gaussian(variance)) instead"
            )
        return spec
    if not isinstance(spec, str):
        raise ValueError(
            f"likelihood must be a Likelihood instance or one of {', '.join(map(repr, LIKELIHOODS))}, "
            f"got {type(spec).__name__}"
        )
    key = spec.strip().lower()
    if key == "gaussian":
        if variance is None:
            raise ValueError(
                "the gaussian likelihood needs an explicit variance σ² > 0 (variance=...): "
                "the Fisher information scales as 1/σ²"
            )
        return Gaussian(variance)
    if key in ("categorical", "bernoulli"):
        if variance is not None:
            raise ValueError(f"variance only applies to the gaussian likelihood, not to {key!r}")
        return Categorical() if key == "categorical" else Bernoulli()
    raise ValueError(f"unknown likelihood {spec!r}; choose one of {', '.join(map(repr, LIKELIHOODS))}")
