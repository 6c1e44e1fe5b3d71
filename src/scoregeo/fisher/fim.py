"""The Fisher information matrix of a PyTorch model, true, Monte Carlo or empirical, with structure."""

from __future__ import annotations

import torch
from torch import nn

from . import operators
from .likelihoods import get_likelihood
from .operators import Curvature, DenseCurvature, DiagCurvature, ImplicitCurvature, OutputMetric, _ggn_dense, _ggn_diag
from .scores import _check_inputs, _check_model, _check_output, _forward, _param_dict

__all__ = ["fim", "KINDS", "STRUCTURES", "REDUCTIONS"]

KINDS = ("true", "mc", "empirical")
STRUCTURES = ("dense", "diag", "kfac", "implicit")
REDUCTIONS = ("sum", "mean")


def _choice(value, choices, name):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
    return value


def fim(
    model: nn.Module,
    inputs,
    likelihood,
    kind: str = "true",
    structure: str = "dense",
    targets=None,
    reduction: str = "sum",
    n_samples: int = 1,
    generator=None,
    variance=None,
):
    """Fisher information of ``model``'s parameters on a batch of inputs, as a ``Curvature``.

    The (true) Fisher information is ::

        F = Σ_n E_{y ~ p_θ(y | x_n)} [∇θ log p_θ(y | x_n) ∇θ log p_θ(y | x_n)ᵀ]

    with y drawn from the MODEL's predictive distribution, on the log-likelihood
    scale (not a loss's scale: no factor 2 from an MSE, no 1/N from a mean loss,
    and the Gaussian variance σ² explicit), summed over the N examples by default.

    Args:
        model: maps inputs (N, ...) to outputs (N, C) (logits for "categorical",
            one logit per output for "bernoulli", means for "gaussian"), acting on
            each example independently (``model.eval()`` for BatchNorm/dropout).
        inputs: (N, ...) finite inputs.
        likelihood: a ``Likelihood`` or "categorical" | "bernoulli" | "gaussian".
        kind:
            - "true" (default): the exact expectation over y, in closed form
              F = Σ_n J_nᵀ Λ(f_n) J_n with J_n = ∂f_n/∂θ (N, C, P) and Λ the
              likelihood's Fisher information in its output (``precision``). For
              these likelihoods (exponential families in their natural
              parameter f) this is also the generalised Gauss–Newton matrix.
            - "mc": y_nm ~ p_θ(y | x_n), ``n_samples`` = M per example, drawn with
              ``generator`` (the same generator state gives the same matrix):
              F = Σ_n (1/M) Σ_m g_nm g_nmᵀ, g_nm = ∇θ log p_θ(y_nm | x_n). An
              unbiased estimate of "true", error O(1/√M).
            - "empirical": the data's labels ``targets`` in place of model samples:
              Σ_n g_n g_nᵀ with g_n = ∇θ log p_θ(targets_n | x_n). This is a
              DIFFERENT matrix from the Fisher information (zero at a perfect fit;
              scaled by the noise misspecification), never the default.
        structure:
            - "dense": a ``DenseCurvature`` (P×P; refused above
              ``operators.MAX_DENSE_SIZE`` parameters);
            - "diag": a ``DiagCurvature`` holding the exact diagonal; when every
              trainable parameter belongs to an ``nn.Linear`` or ``nn.Conv2d``
              (groups=1) it is accumulated by layer hooks over one backward pass
              per row of B (``scoregeo.fisher.kfac``), otherwise computed
              from the rows B_n J_n of a square root Λ = BᵀB (for "categorical"
              C − 1 rows, Λ having rank C − 1) as Σ_n Σ_k ((B_n J_n)[k, i])²,
              one vjp per row, without forming J_n or P×P;
            - "kfac": Kronecker-factored blocks (``scoregeo.fisher.kfac``);
            - "implicit": an ``ImplicitCurvature``: matrix-free products by
              reverse-mode autodiff (J v through a kept graph of u ↦ Jᵀu, or by
              forward mode for models with convolutions; see its docstring). Its graph is
              built here, from the one forward pass ``fim`` needs.
        targets: labels, required for (and only used by) kind="empirical";
            class indices (N,) for "categorical", (N, C) for "bernoulli" and "gaussian".
        reduction: "sum" (default) over examples, or "mean" (the sum divided by N).
        n_samples: M, model samples per example for kind="mc".
        generator: ``torch.Generator`` for kind="mc".
        variance: σ² > 0 (a number or (C,)) for "gaussian"; Λ = diag(1/σ²).

    Returns:
        A ``Curvature`` over θ = ``model.parameters()`` that require grad, in that
        order, flattened and concatenated (length P).

    Raises:
        ValueError: unknown likelihood/kind/structure/reduction, empirical Fisher
        without targets, targets not matching the likelihood, non-finite inputs,
        model output not (N, C), gaussian without variance, P too large for dense.
    """
    kind = _choice(kind, KINDS, "kind")
    structure = _choice(structure, STRUCTURES, "structure")
    reduction = _choice(reduction, REDUCTIONS, "reduction")
    lik = get_likelihood(likelihood, variance)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    if kind == "empirical" and targets is None:
        raise ValueError(
            "empirical Fisher needs targets (the data's labels); for the Fisher information use kind='true' "
            "or kind='mc'"
        )
    _check_model(model)
    inputs = _check_inputs(inputs)
    params = _param_dict(model)
    size = sum(p.numel() for p in params.values())
    if structure == "dense" and size > operators.MAX_DENSE_SIZE:
        raise ValueError(
            f"structure='dense' would build a {size}×{size} matrix (more than MAX_DENSE_SIZE="
            f"{operators.MAX_DENSE_SIZE} parameters); use structure='diag', 'kfac' or 'implicit'"
        )
    n = inputs.shape[0] if reduction == "mean" else 1
    implicit = None
    if structure == "implicit":
        # the output comes from the forward pass that builds the operator's vjp graph (no separate
        # forward); if that pass fails, the plain forward below raises the explanatory error
        implicit = ImplicitCurvature(model, inputs, None, scale=1.0 / n)
        try:
            output = _check_output(implicit._prepare(), inputs)
        except Exception:
            output = _forward(model, inputs)
    else:
        output = _forward(model, inputs)
    lik.check_output(output)
    if kind == "empirical":
        targets = lik.check_targets(output, targets)

    if structure == "kfac":
        from .kfac import kfac_fisher

        kfac = kfac_fisher(
            model,
            inputs,
            lik,
            kind=kind,
            targets=targets,
            reduction=reduction,
            n_samples=n_samples,
            generator=generator,
        )
        return _with_layout(kfac, params)

    if structure == "diag":
        from .kfac import _exact_diag

        # Models built from nn.Linear / nn.Conv2d: layer hooks, no per-example Jacobians.
        diag = _exact_diag(model, inputs, lik, kind=kind, targets=targets, n_samples=n_samples, generator=generator)
        if diag is not None:
            return _with_layout(DiagCurvature(diag / n), params)

    if kind == "true":
        metric = OutputMetric.true(lik, output)
    else:
        if kind == "mc":
            samples = lik.sample(output, n_samples, generator)  # (M, N, ...)
            residuals = lik.output_score(output, samples).movedim(0, 1) / n_samples**0.5  # (N, M, C)
        else:
            residuals = lik.output_score(output, targets).unsqueeze(1)  # (N, 1, C)
        metric = OutputMetric.sampled(residuals)

    if structure == "dense":
        return _with_layout(DenseCurvature(_ggn_dense(model, params, inputs, metric) / n), params)
    if structure == "diag":
        return _with_layout(DiagCurvature(_ggn_diag(model, params, inputs, metric) / n), params)
    implicit.metric = metric
    return _with_layout(implicit, params)


def _with_layout(curvature: Curvature, params: dict[str, torch.Tensor]) -> Curvature:
    """Record the (name, shape) of each parameter block on the curvature (``Curvature.layout``)."""
    curvature.layout = tuple((name, tuple(p.shape)) for name, p in params.items())
    return curvature
