"""What the Fisher information is for: natural gradient, EWC, the KL link, the Cramér–Rao bound.

- ``NaturalGradient``: a ``torch.optim.Optimizer`` taking θ ← θ − lr (F + λI)⁻¹ ∇L,
  with F any ``Curvature`` (typically the matrix-free Fisher of ``fim(...,
  structure="implicit")``, solved by conjugate gradient through ``Curvature.solve``).
- ``ewc_penalty``: the elastic-weight-consolidation penalty ½ s (θ − θ*)ᵀ F (θ − θ*).
- ``kl_curvature_check``: the Fisher information is the Hessian of the KL
  divergence, KL(p_θ ‖ p_{θ+εδ}) = ½ ε² δᵀFδ + O(ε³); this checks it numerically
  against the exact KL of the model's output distributions.
- ``cramer_rao_bound``: F(θ)⁻¹ / n for a parametric family of torch distributions.

Scaling conventions (shared with ``fim``): everything is on the log-likelihood
scale. ``fim(..., reduction="sum")`` is the Fisher of the whole batch, the Hessian
(in expectation) of the summed negative log-likelihood; ``reduction="mean"``
divides it by N and matches the mean negative log-likelihood. A natural-gradient
step is only the Newton-like step it claims to be when the loss and F are on the
same scale: the mean NLL with reduction="mean" (the usual choice: the step does
not depend on the batch size), or the summed NLL with reduction="sum". A loss
written as an MSE (factor 2σ² away from the Gaussian NLL) or a cross-entropy
with a temperature is not on that scale.

Parameter order everywhere: ``[p for p in model.parameters() if p.requires_grad]``,
flattened row-major and concatenated (length P).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from numbers import Integral
from typing import Callable, Sequence

import torch
import torch.nn.functional as nnf
from torch import nn
from torch.func import functional_call

from .fim import fim
from .likelihoods import Bernoulli, Categorical, Gaussian, get_likelihood
from .operators import Curvature
from .scores import _check_inputs, _check_model, _forward

__all__ = ["NaturalGradient", "SolveInfo", "ewc_penalty", "kl_curvature_check", "KLCurvatureCheck", "cramer_rao_bound"]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _check_positive_number(value, name: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _trainable(model: nn.Module) -> list[torch.Tensor]:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameter that requires grad")
    return params


def _as_parameter_vector(value, params: list[torch.Tensor], name: str) -> torch.Tensor:
    """A flat (P,) tensor, or a list of tensors shaped like ``params``, as one (P,) tensor."""
    size = sum(p.numel() for p in params)
    first = params[0]
    if isinstance(value, torch.Tensor):
        if value.ndim != 1 or value.shape[0] != size:
            raise ValueError(
                f"{name} must be a flat tensor of shape ({size},) (the model's trainable parameters, flattened and "
                f"concatenated) or a list of tensors shaped like them, got a tensor of shape {tuple(value.shape)}"
            )
        flat = value
    elif isinstance(value, (list, tuple)):
        if len(value) != len(params):
            raise ValueError(
                f"{name} must hold one tensor per trainable parameter ({len(params)}), got {len(value)}"
            )
        parts = []
        for i, (v, p) in enumerate(zip(value, params)):
            if not isinstance(v, torch.Tensor) or v.shape != p.shape:
                shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise ValueError(f"{name}[{i}] must have the parameter's shape {tuple(p.shape)}, got {shape}")
            parts.append(v.reshape(-1))
        flat = torch.cat(parts)
    else:
        raise ValueError(
            f"{name} must be a (P,) tensor or a list of tensors like model.parameters(), got {type(value).__name__}"
        )
    if not flat.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {flat.dtype}")
    if not bool(torch.isfinite(flat.detach()).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return flat.to(dtype=first.dtype, device=first.device)


class _CurvatureProduct(torch.autograd.Function):
    """v ↦ F v with F a constant symmetric matrix: the backward pass is F g again (any order)."""

    @staticmethod
    def forward(ctx, v, curvature):
        ctx.curvature = curvature
        with torch.no_grad():
            return curvature.mv(v.detach()).to(v.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        return _CurvatureProduct.apply(grad_out, ctx.curvature), None


# ---------------------------------------------------------------------------------------------
# natural gradient
# ---------------------------------------------------------------------------------------------
@dataclass
class SolveInfo:
    """Diagnostics of the last linear solve (F + λI) x = ∇L of a ``NaturalGradient`` step.

    Attributes:
        converged: False when the solver reported it did not meet its tolerance
            (conjugate gradient: a ``RuntimeWarning`` from ``Curvature.solve``) or
            returned non-finite values; the step was then taken anyway (and the
            warning re-issued) unless ``strict=True``.
        relative_residual: ‖∇L − (F + λI) x‖ / ‖∇L‖, recomputed with one extra
            product F x (so it is the true residual, not CG's recursive one).
        method: "cg" (the generic conjugate gradient of ``Curvature.solve``, used by
            ``ImplicitCurvature``) or "direct" (Cholesky, elementwise, Kronecker eigenbasis).
        damping: λ.
        grad_norm: ‖∇L‖.
        step_norm: ‖x‖, the norm of the natural-gradient direction (before lr).
        curvature: the class name of F.
        messages: the ``RuntimeWarning`` messages the solver emitted (re-issued to the caller).
    """

    converged: bool
    relative_residual: float
    method: str
    damping: float
    grad_norm: float
    step_norm: float
    curvature: str
    messages: list[str] = field(default_factory=list)


class NaturalGradient(torch.optim.Optimizer):
    """Natural-gradient descent θ ← θ − lr · (F(θ) + damping·I)⁻¹ ∇L(θ).

    Args:
        params: the parameters (or parameter groups), in the order of the
            curvature's parameter vector: for ``fim(model, ...)`` that is
            ``model.parameters()`` (parameters that do not require grad are
            skipped, as ``fim`` skips them). Groups may have their own ``lr``;
            they must share one ``damping`` (the solve is joint).
        curvature: a callable returning the ``Curvature`` F at the current
            parameters, called once per step after the closure, e.g.
            ``lambda: fim(model, x, "categorical", structure="implicit", reduction="mean")``;
            or a fixed ``Curvature`` (a constant preconditioner).
        lr: step size > 0. With lr=1 and F the exact Hessian of the loss the step
            is Newton's (exact for linear-Gaussian regression; for logistic and
            softmax regression F equals the Hessian of the NLL).
        damping: λ > 0, added to F (F is usually singular; λ also bounds the step
            by ‖∇L‖/λ).
        cg_rtol, cg_max_iter: tolerance and iteration cap of the conjugate-gradient
            solve (``Curvature.solve``; ignored by the direct solvers of dense,
            diagonal and K-FAC curvatures).
        strict: if True, a solve that does not converge raises ``RuntimeError``
            and the parameters are left unchanged; if False (default) the step is
            taken, the solver's ``RuntimeWarning`` is re-issued and
            ``last_solve_info.converged`` is False.

    Scale: F and the loss must be on the same scale. With
    ``fim(..., reduction="mean")`` the loss must be the MEAN negative
    log-likelihood of the same batch (e.g. ``F.cross_entropy(logits, y)`` for
    "categorical", ``F.binary_cross_entropy_with_logits`` for "bernoulli",
    ``((y − f)² / (2σ²)).sum(1).mean()`` for "gaussian" with variance σ²); with
    reduction="sum", the summed NLL. A plain MSE loss is off by 2σ² and turns
    lr into lr·2σ².

    ``step(closure)`` follows the torch convention: the closure clears the
    gradients, computes the loss, calls ``backward()`` and returns the loss;
    without a closure the gradients already in ``.grad`` are used. After each
    step ``last_solve_info`` (a ``SolveInfo``) holds the solve's true relative
    residual and convergence.
    """

    def __init__(
        self,
        params,
        curvature: Callable[[], Curvature] | Curvature,
        lr: float = 0.1,
        damping: float = 1e-3,
        *,
        cg_rtol: float | None = None,
        cg_max_iter: int | None = None,
        strict: bool = False,
    ):
        lr = _check_positive_number(lr, "lr")
        damping = _check_positive_number(damping, "damping")
        if not (isinstance(curvature, Curvature) or callable(curvature)):
            raise ValueError(
                f"curvature must be a Curvature or a callable returning one, got {type(curvature).__name__}"
            )
        if cg_rtol is not None:
            cg_rtol = _check_positive_number(cg_rtol, "cg_rtol")
        if cg_max_iter is not None and (
            isinstance(cg_max_iter, bool) or not isinstance(cg_max_iter, Integral) or cg_max_iter < 1
        ):
            raise ValueError(f"cg_max_iter must be an integer >= 1, got {cg_max_iter!r}")
        self.curvature = curvature
        self.cg_rtol = cg_rtol
        self.cg_max_iter = None if cg_max_iter is None else int(cg_max_iter)
        self.strict = bool(strict)
        self.last_solve_info: SolveInfo | None = None
        super().__init__(params, dict(lr=lr, damping=damping))

    def add_param_group(self, param_group: dict) -> None:
        for key in ("lr", "damping"):
            if key in param_group:
                param_group[key] = _check_positive_number(param_group[key], key)
        super().add_param_group(param_group)

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        inputs,
        likelihood,
        *,
        variance=None,
        kind: str = "true",
        structure: str = "implicit",
        reduction: str = "mean",
        lr: float = 0.1,
        damping: float = 1e-3,
        **kwargs,
    ) -> "NaturalGradient":
        """A ``NaturalGradient`` over ``model``'s trainable parameters with F = ``fim(model, inputs, ...)``.

        ``inputs`` is a tensor (full batch) or a callable returning the current
        batch (it must be the batch the closure's loss is computed on). F is
        rebuilt at every step with the given ``kind``/``structure``/``reduction``
        (default: the true Fisher, matrix-free, reduction="mean" — so the loss
        must be the mean NLL). Remaining keyword arguments go to the constructor.
        """
        params = _trainable(model)
        get_likelihood(likelihood, variance)  # validate early

        def curvature() -> Curvature:
            x = inputs() if callable(inputs) else inputs
            return fim(model, x, likelihood, kind=kind, structure=structure, reduction=reduction, variance=variance)

        return cls(params, curvature, lr=lr, damping=damping, **kwargs)

    def _params(self) -> list[tuple[torch.Tensor, float]]:
        return [(p, group["lr"]) for group in self.param_groups for p in group["params"] if p.requires_grad]

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """One natural-gradient step; returns the closure's loss (None without a closure)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        entries = self._params()
        if not entries:
            raise ValueError("the optimizer holds no parameter that requires grad")
        dampings = {group["damping"] for group in self.param_groups}
        if len(dampings) != 1:
            raise ValueError(
                f"all parameter groups must share one damping (the solve is joint), got {sorted(dampings)}"
            )
        damping = dampings.pop()
        if all(p.grad is None for p, _ in entries):
            raise RuntimeError("no parameter has a gradient: call loss.backward() first or pass a closure that does")
        grad = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p, _ in entries])
        if not bool(torch.isfinite(grad).all()):
            raise ValueError("the gradient contains NaN or Inf")

        with torch.enable_grad():  # K-FAC records a graph; implicit products build one lazily
            F = self.curvature if isinstance(self.curvature, Curvature) else self.curvature()
            if not isinstance(F, Curvature):
                raise ValueError(f"the curvature callable must return a Curvature, got {type(F).__name__}")
            if F.size != grad.numel():
                raise ValueError(
                    f"the curvature has size {F.size} but the optimizer's parameters have {grad.numel()} entries; "
                    "pass the parameters in the curvature's order (model.parameters() for fim(model, ...))"
                )
            g = grad.to(dtype=F.dtype, device=F.device)
            cg = type(F).solve is Curvature.solve
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RuntimeWarning)  # other warnings keep the caller's filters
                x = F.solve(g, damping, rtol=self.cg_rtol, max_iter=self.cg_max_iter)
            residual = g - (F.mv(x) + damping * x)
        x, residual = x.detach(), residual.detach()

        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        unconverged = any(
            issubclass(w.category, RuntimeWarning) and "did not converge" in str(w.message) for w in caught
        )
        finite = bool(torch.isfinite(x).all())
        gnorm = float(g.norm())
        rel = float(residual.norm() / g.norm()) if gnorm > 0 else float(residual.norm())
        info = SolveInfo(
            converged=finite and not unconverged,
            relative_residual=rel,
            method="cg" if cg else "direct",
            damping=damping,
            grad_norm=gnorm,
            step_norm=float(x.norm()),
            curvature=type(F).__name__,
            messages=messages,
        )
        self.last_solve_info = info
        if not finite:
            raise RuntimeError(
                f"the natural-gradient solve returned NaN or Inf ({type(F).__name__}, damping={damping}); "
                "parameters left unchanged"
            )
        if not info.converged and self.strict:
            raise RuntimeError(
                f"the natural-gradient solve did not converge (relative residual {rel:.3e}); parameters left "
                "unchanged (raise cg_max_iter or damping)"
            )
        for w in caught:  # never swallow a warning of the solver
            if issubclass(w.category, RuntimeWarning):
                warnings.warn(str(w.message), w.category, stacklevel=2)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

        offset = 0
        for p, lr in entries:
            n = p.numel()
            p.add_(x[offset : offset + n].view_as(p).to(dtype=p.dtype, device=p.device), alpha=-lr)
            offset += n
        return loss


# ---------------------------------------------------------------------------------------------
# elastic weight consolidation
# ---------------------------------------------------------------------------------------------
def ewc_penalty(model: nn.Module, anchor_params, fim: Curvature, strength: float = 1.0) -> torch.Tensor:
    """Elastic-weight-consolidation penalty ½ · strength · (θ − θ*)ᵀ F (θ − θ*).

    Args:
        model: the model; θ = its parameters that require grad, in order, flattened.
        anchor_params: θ*, a flat (P,) tensor or a list of tensors shaped like
            ``[p for p in model.parameters() if p.requires_grad]`` (e.g. a
            detached copy taken after the previous task). Treated as a constant.
        fim: any ``Curvature`` of size P (dense, diagonal, K-FAC or implicit),
            typically the Fisher of the previous task; it is applied through
            ``fim.mv`` and treated as a constant.
        strength: s ≥ 0.

    Returns:
        A scalar tensor, differentiable in the model's parameters (to any order):
        its gradient is s·F(θ − θ*) and its Hessian s·F. Scale: with F from
        ``fim(..., reduction="sum")`` this is the Laplace approximation of the old
        task's summed NLL; with reduction="mean" it is on the mean-NLL scale.

    Raises:
        ValueError: anchors of the wrong shape or count, a curvature of another
        size, or a negative strength.
    """
    params = _trainable(model)
    if not isinstance(fim, Curvature):
        raise ValueError(f"fim must be a Curvature (e.g. from scoregeo.fisher.fim), got {type(fim).__name__}")
    if (
        isinstance(strength, bool)
        or not isinstance(strength, (int, float))
        or not math.isfinite(strength)
        or strength < 0
    ):
        raise ValueError(f"strength must be a finite number >= 0, got {strength!r}")
    anchor = _as_parameter_vector(anchor_params, params, "anchor_params").detach()
    if fim.size != anchor.numel():
        raise ValueError(f"fim has size {fim.size} but the model has {anchor.numel()} trainable parameters")
    theta = torch.cat([p.reshape(-1) for p in params])
    delta = theta - anchor
    return 0.5 * float(strength) * torch.dot(delta, _CurvatureProduct.apply(delta, fim))


# ---------------------------------------------------------------------------------------------
# the Fisher information as the Hessian of the KL divergence
# ---------------------------------------------------------------------------------------------
@dataclass
class KLCurvatureCheck:
    """KL divergences along θ + εδ against the quadratic form ½ ε² δᵀFδ.

    All tensors have one entry per ε (float64).

    Attributes:
        epsilons: the step sizes ε.
        kl_forward: KL(p_θ ‖ p_{θ+εδ}) summed over the examples.
        kl_reverse: KL(p_{θ+εδ} ‖ p_θ) summed over the examples.
        quadratic: ½ ε² δᵀFδ, F the Fisher summed over the examples.
        ratio_forward, ratio_reverse: KL / quadratic (→ 1 as ε → 0, error O(ε);
            exactly 1 for a Gaussian likelihood and a model linear in θ).
        fisher_quadratic: δᵀFδ.
    """

    epsilons: torch.Tensor
    kl_forward: torch.Tensor
    kl_reverse: torch.Tensor
    quadratic: torch.Tensor
    ratio_forward: torch.Tensor
    ratio_reverse: torch.Tensor
    fisher_quadratic: float

    @property
    def errors_forward(self) -> torch.Tensor:
        """|ratio_forward − 1|."""
        return (self.ratio_forward - 1).abs()

    @property
    def errors_reverse(self) -> torch.Tensor:
        """|ratio_reverse − 1|."""
        return (self.ratio_reverse - 1).abs()

    def __str__(self) -> str:
        names = ("KL(θ‖θ+εδ)", "KL(θ+εδ‖θ)", "½ε²δᵀFδ")
        header = f"{'ε':>10} " + " ".join(f"{n:>14}" for n in names) + f" {'ratio fwd':>12} {'ratio rev':>12}"
        lines = [f"δᵀFδ = {self.fisher_quadratic:.6g}", header]
        for i in range(self.epsilons.numel()):
            lines.append(
                f"{float(self.epsilons[i]):10.3g} {float(self.kl_forward[i]):14.6e} {float(self.kl_reverse[i]):14.6e} "
                f"{float(self.quadratic[i]):14.6e} {float(self.ratio_forward[i]):12.8f} "
                f"{float(self.ratio_reverse[i]):12.8f}"
            )
        return "\n".join(lines)


def _output_kl(lik, f_p: torch.Tensor, f_q: torch.Tensor) -> torch.Tensor:
    """Σ_n KL(p(·|f_p,n) ‖ p(·|f_q,n)) in closed form for the built-in likelihoods."""
    if isinstance(lik, Categorical):
        logp, logq = torch.log_softmax(f_p, -1), torch.log_softmax(f_q, -1)
        return (logp.exp() * (logp - logq)).sum()
    if isinstance(lik, Bernoulli):
        lp1, lp0 = nnf.logsigmoid(f_p), nnf.logsigmoid(-f_p)
        lq1, lq0 = nnf.logsigmoid(f_q), nnf.logsigmoid(-f_q)
        return (lp1.exp() * (lp1 - lq1) + lp0.exp() * (lp0 - lq0)).sum()
    if isinstance(lik, Gaussian):
        var = lik._var(f_p)
        return ((f_p - f_q) ** 2 / (2 * var)).sum()
    raise ValueError(
        f"kl_curvature_check has closed-form KL divergences for the categorical, bernoulli and gaussian "
        f"likelihoods only, got {lik!r}"
    )


def kl_curvature_check(
    model: nn.Module,
    inputs: torch.Tensor,
    direction,
    likelihood,
    epsilons: Sequence[float] = (1e-1, 1e-2, 1e-3),
    variance=None,
    structure: str = "implicit",
) -> KLCurvatureCheck:
    """Check F as the Hessian of the KL: KL(p_θ ‖ p_{θ+εδ}) ≈ ½ ε² δᵀFδ for each ε.

    The KL divergences are exact (closed forms between the output distributions:
    Σ p (log p − log q) for "categorical", the two-outcome version per output for
    "bernoulli", Σ_c (f_c − f'_c)²/(2σ_c²) for "gaussian"), summed over the
    examples, so they are an oracle independent of the Fisher code. F is the true
    Fisher summed over the same examples (``fim(..., reduction="sum")``), applied
    to δ matrix-free (structure="implicit") or as a matrix ("dense").

    Both KL(p_θ ‖ p_{θ+εδ}) and KL(p_{θ+εδ} ‖ p_θ) are reported; each ratio to
    the quadratic form tends to 1 with error O(ε) (the cubic terms differ in
    sign between the two directions). Use float64: the KL at ε = 1e-3 is
    ~10⁻⁶ times the size of its terms.

    Args:
        model: maps inputs (N, ...) to outputs (N, C), examples independent.
        inputs: (N, ...).
        direction: δ, a flat (P,) tensor or a list of tensors like the model's
            trainable parameters.
        likelihood: "categorical" | "bernoulli" | "gaussian" or such a ``Likelihood``.
        epsilons: step sizes ε > 0.
        variance: σ² for "gaussian".
        structure: "implicit" (default) or "dense", how F δ is computed.

    Returns:
        A ``KLCurvatureCheck`` (``str()`` prints a table).
    """
    lik = get_likelihood(likelihood, variance)
    _check_model(model)
    inputs = _check_inputs(inputs)
    params = _trainable(model)
    if structure not in ("implicit", "dense"):
        raise ValueError(f"structure must be 'implicit' or 'dense', got {structure!r}")
    try:
        eps = [float(e) for e in epsilons]
    except (TypeError, ValueError):
        raise ValueError(f"epsilons must be a sequence of numbers > 0, got {epsilons!r}") from None
    if not eps or any(not math.isfinite(e) or e <= 0 for e in eps):
        raise ValueError(f"epsilons must be a non-empty sequence of finite numbers > 0, got {epsilons!r}")
    delta = _as_parameter_vector(direction, params, "direction").detach()

    F = fim(model, inputs, lik, structure=structure, reduction="sum")
    fq = float(torch.dot(delta, F.mv(delta)))
    if not fq > 0:
        raise ValueError(f"δᵀFδ = {fq:.3g}: the direction lies in the null space of the Fisher information")

    names = [name for name, p in model.named_parameters() if p.requires_grad]
    base = {name: p.detach() for name, p in zip(names, params)}
    f0 = _forward(model, inputs)
    lik.check_output(f0)
    forward, reverse = [], []
    for e in eps:
        shifted, offset = {}, 0
        for name, p in base.items():
            shifted[name] = p + e * delta[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        with torch.no_grad():
            f1 = functional_call(model, shifted, (inputs,))
        forward.append(float(_output_kl(lik, f0, f1)))
        reverse.append(float(_output_kl(lik, f1, f0)))

    t = lambda xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
    epsilons_t = t(eps)
    quadratic = 0.5 * epsilons_t**2 * fq
    kl_f, kl_r = t(forward), t(reverse)
    return KLCurvatureCheck(
        epsilons=epsilons_t,
        kl_forward=kl_f,
        kl_reverse=kl_r,
        quadratic=quadratic,
        ratio_forward=kl_f / quadratic,
        ratio_reverse=kl_r / quadratic,
        fisher_quadratic=fq,
    )


# ---------------------------------------------------------------------------------------------
# Cramér–Rao
# ---------------------------------------------------------------------------------------------
def cramer_rao_bound(family, theta: torch.Tensor, n: int, *, mc_samples: int | None = None, generator=None):
    """Cramér–Rao lower bound F(θ)⁻¹ / n on the covariance of an unbiased estimator of θ.

    For n i.i.d. observations of p_θ the Fisher information is n·F(θ), so every
    unbiased estimator θ̂ has Cov(θ̂) ⪰ F(θ)⁻¹ / n (in the Loewner order).

    Args:
        family: maps θ (..., k) to a ``torch.distributions.Distribution`` with
            batch shape (...) (as for ``sg.FisherRaoMetric``), e.g.
            ``lambda t: Normal(t[..., 0], t[..., 1])``.
        theta: (k,) or (..., k) parameter values.
        n: number of observations, an integer >= 1.
        mc_samples, generator: passed to ``sg.FisherRaoMetric`` for families
            without a closed-form KL divergence (Monte Carlo Fisher).

    Returns:
        (..., k, k): F(θ)⁻¹ / n, with F(θ) = ``FisherRaoMetric(family, k).matrix(theta)``
        (the Hessian of the closed-form KL divergence).

    Raises:
        ValueError: n not an integer >= 1, theta not a floating (..., k) tensor,
        or a singular Fisher information (θ not identifiable there).
    """
    from ..metrics.fisher_rao import FisherRaoMetric

    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (the number of i.i.d. observations), got {n!r}")
    if not isinstance(theta, torch.Tensor) or theta.ndim == 0 or not theta.is_floating_point():
        raise ValueError("theta must be a floating-point tensor of shape (k,) or (..., k)")
    metric = FisherRaoMetric(family, theta.shape[-1], mc_samples=mc_samples, generator=generator)
    G = metric.matrix(theta)
    G = (G + G.mT) / 2
    chol, info = torch.linalg.cholesky_ex(G)
    if bool((info != 0).any()):
        raise ValueError("the Fisher information is singular at theta (the parameters are not identifiable there)")
    return torch.cholesky_inverse(chol) / int(n)
