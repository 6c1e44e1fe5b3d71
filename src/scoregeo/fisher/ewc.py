"""Elastic weight consolidation: the penalty ½ s (θ − θ*)ᵀ F (θ − θ*) of a previous task's Fisher."""

from __future__ import annotations

import math

import torch
from torch import nn

from ._parameters import _as_parameter_vector, _trainable
from .operators import Curvature

__all__ = ["ewc_penalty"]


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
        size or (when ``fim.layout`` is known, as ``fim(...)`` records it) of
        other parameters or another order, or a negative strength.
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
    _check_layout(fim, model)
    theta = torch.cat([p.reshape(-1) for p in params])
    delta = theta - anchor
    return 0.5 * float(strength) * torch.dot(delta, _CurvatureProduct.apply(delta, fim))


def _check_layout(fim: Curvature, model: nn.Module) -> None:
    """Refuse a curvature whose recorded (name, shape) blocks differ from the model's trainable parameters."""
    if fim.layout is None:
        return
    mine = tuple((name, tuple(p.shape)) for name, p in model.named_parameters() if p.requires_grad)
    if fim.layout == mine:
        return
    for position, (theirs, ours) in enumerate(zip(fim.layout, mine)):
        if theirs != ours:
            break
    else:
        position, theirs, ours = min(len(fim.layout), len(mine)), None, None
    raise ValueError(
        f"fim was built for other parameters or another order: block {position} of its parameter vector is "
        f"{_block(theirs)}, the model's is {_block(ours)} (fim's blocks: {[name for name, _ in fim.layout]}, the "
        f"model's: {[name for name, _ in mine]}); build fim from this model with scoregeo.fisher.fim"
    )


def _block(block: tuple[str, tuple[int, ...]] | None) -> str:
    return "missing" if block is None else f"{block[0]!r} of shape {block[1]}"
