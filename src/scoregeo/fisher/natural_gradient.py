"""Natural-gradient descent: θ ← θ − lr (F + λI)⁻¹ ∇L with F any ``Curvature``.

Typically F is the matrix-free Fisher of ``fim(..., structure="implicit")``,
solved by conjugate gradient through ``Curvature.solve``.

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
from typing import Callable

import torch
from torch import nn

from ._parameters import _check_positive_number, _trainable
from .fim import fim
from .likelihoods import get_likelihood
from .operators import Curvature

__all__ = ["NaturalGradient", "SolveInfo"]


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
        reduction_ratio: with ``adaptive_damping``, ρ = (L(θ + δ) − L(θ)) / (∇Lᵀδ + ½ δᵀ(F + λI)δ),
            the actual over the predicted change of the loss for the step δ; NaN otherwise.
        accepted: False when ``adaptive_damping`` rejected the step (ρ ≤ 0 or a
            non-finite loss: the parameters were restored).
    """

    converged: bool
    relative_residual: float
    method: str
    damping: float
    grad_norm: float
    step_norm: float
    curvature: str
    messages: list[str] = field(default_factory=list)
    reduction_ratio: float = math.nan
    accepted: bool = True


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
        lr: step size > 0. With lr=1 and F the exact Hessian of a convex loss the
            step is Newton's (exact for linear-Gaussian regression; for logistic
            and softmax regression F equals the Hessian of the NLL). For a
            network F is only the Gauss–Newton part of the Hessian and a full
            step can overshoot and diverge: use lr=1 there with
            ``adaptive_damping=True``.
        damping: λ > 0, added to F (F is usually singular; λ also bounds the step
            by ‖∇L‖/λ). With ``adaptive_damping`` this is the initial value.
        adaptive_damping: Levenberg–Marquardt control of λ, as in K-FAC (Martens
            & Grosse, 2015, §6.5): after each step the closure is evaluated again
            and ρ = actual / predicted change of the loss computed; ρ < ¼ doubles
            λ, ρ > ¾ multiplies it by ⅔ (never below ``min_damping``), and a step
            with ρ ≤ 0 or a non-finite loss is undone. Needs a closure; costs one
            extra loss evaluation and one product F δ per step (the second closure call
            leaves ``.grad`` at the stepped point, even when the step is undone:
            the next ``step(closure)`` recomputes it).
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
        adaptive_damping: bool = False,
        min_damping: float = 1e-8,
    ):
        lr = _check_positive_number(lr, "lr")
        if not isinstance(adaptive_damping, bool):
            raise ValueError(f"adaptive_damping must be True or False, got {adaptive_damping!r}")
        self.adaptive_damping = adaptive_damping
        self.min_damping = _check_positive_number(min_damping, "min_damping")
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
        if self.adaptive_damping and closure is None:
            raise ValueError("adaptive_damping=True needs step(closure): the loss is evaluated again after the step")
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

        step = torch.cat([-lr * x[offset : offset + p.numel()] for (p, lr), offset in
                          zip(entries, _offsets(entries))])  # δ, in F's dtype
        if self.adaptive_damping:  # the model's prediction, while F still describes the current θ
            with torch.enable_grad():
                predicted = float(g @ step + 0.5 * step @ (F.mv(step).detach() + damping * step))
        _add_to_parameters(entries, step)
        if self.adaptive_damping:
            self._adapt_damping(closure, loss, predicted, step, damping, entries, info)
        return loss

    def _adapt_damping(self, closure, loss, predicted: float, step: torch.Tensor, damping: float, entries,
                       info: SolveInfo) -> None:
        """Levenberg–Marquardt: compare the loss after the step with the damped quadratic model; adapt λ."""
        with torch.enable_grad():
            new_loss = _scalar(closure())
        actual = new_loss - _scalar(loss)
        rho = actual / predicted if predicted < 0 else math.nan
        info.reduction_ratio = rho
        info.accepted = math.isfinite(new_loss) and rho > 0
        if not info.accepted:
            _add_to_parameters(entries, -step)
        if not rho >= 0.25:  # also NaN
            damping *= 2.0
        elif rho > 0.75:
            damping = max(damping * 2.0 / 3.0, self.min_damping)
        for group in self.param_groups:
            group["damping"] = damping


def _scalar(loss) -> float:
    """A closure's loss (a tensor with one element, or a number) as a float."""
    return float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)


def _offsets(entries) -> list[int]:
    """Start of each parameter's block in the flat vector."""
    starts, offset = [], 0
    for p, _ in entries:
        starts.append(offset)
        offset += p.numel()
    return starts


@torch.no_grad()
def _add_to_parameters(entries, flat: torch.Tensor) -> None:
    """p += the block of ``flat`` that belongs to p, for each (p, lr) in order."""
    for (p, _), offset in zip(entries, _offsets(entries)):
        p.add_(flat[offset : offset + p.numel()].view_as(p).to(dtype=p.dtype, device=p.device))
