"""Per-example Fisher scores ∇θ log p(y_n | x_n) and output Jacobians ∂f_n/∂θ.

Parameter convention (shared by the whole ``scoregeo.fisher`` package):
θ is ``[p for p in model.parameters() if p.requires_grad]`` in that order, each
flattened row-major and concatenated into a vector of length
P = ``parameter_vector_size(model)``. Buffers (e.g. BatchNorm running statistics)
are used as they are and are not parameters.

Both functions evaluate the model one example at a time with
``torch.func.functional_call`` under ``torch.func.vmap``, so the model must act on
each example independently: no BatchNorm in training mode (call
``model.eval()``), no dropout in training mode, no layer that mixes the batch.
Such layers are refused with a ``ValueError``. Recurrent layers (``nn.LSTM``,
``nn.GRU``, ``nn.RNN``) cannot run under a vmap over examples (their forward
writes into unbatched state tensors): models holding one are evaluated by a
Python loop over the examples instead, with the same results, N times the call
overhead.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, vjp, vmap

from .._checks import _is_plain, all_finite
from .likelihoods import get_likelihood

__all__ = ["score", "jacobians", "parameter_vector_size"]

# Jacobian blocks (examples × outputs × parameters) are built in chunks of at most
# this many entries, so memory stays bounded for large N.
CHUNK_ELEMENTS = 2**24


def parameter_vector_size(model: nn.Module) -> int:
    """P, the number of scalar parameters of ``model`` that require grad."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _param_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached trainable parameters, in ``model.parameters()`` order, by name."""
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the model has no parameter that requires grad: there is no Fisher information to compute")
    return params


def _flatten(tensors: dict[str, torch.Tensor], params: dict[str, torch.Tensor], lead: int) -> torch.Tensor:
    """Concatenate per-parameter tensors (lead dims, *shape) into (lead dims, P)."""
    parts = []
    for name, p in params.items():
        t = tensors[name]
        parts.append(t.reshape(*t.shape[:lead], p.numel()))
    return torch.cat(parts, dim=-1)


def _unflatten(vec: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Split vectors (..., P) into a dict of tensors (..., *shape) shaped like the parameters."""
    out, i = {}, 0
    for name, p in params.items():
        out[name] = vec[..., i : i + p.numel()].reshape(*vec.shape[:-1], *p.shape)
        i += p.numel()
    return out


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(
                f"model contains BatchNorm {name or type(module).__name__!r} in training mode, which mixes the "
                "examples of a batch; the Fisher information treats examples independently: call model.eval()"
            )
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.training and module.p > 0:
            raise ValueError(
                f"model contains dropout {name or type(module).__name__!r} in training mode, which makes the "
                "likelihood random; call model.eval()"
            )


def _check_inputs(inputs) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor):
        raise ValueError(f"inputs must be a torch.Tensor of shape (N, ...), got {type(inputs).__name__}")
    if inputs.ndim == 0 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must have shape (N, ...) with N >= 1 examples, got {tuple(inputs.shape)}")
    if (inputs.is_floating_point() or inputs.is_complex()) and _is_plain(inputs):
        if not all_finite(inputs):
            raise ValueError("inputs contain NaN or Inf")
    return inputs


def _forward(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """model(inputs) without graph, checked to be (N, C) and finite."""
    with torch.no_grad():
        return _check_output(model(inputs), inputs)


def _check_output(output, inputs: torch.Tensor) -> torch.Tensor:
    """Check that a model output is a finite floating (N, C) tensor for inputs (N, ...)."""
    if not isinstance(output, torch.Tensor) or output.ndim != 2 or output.shape[0] != inputs.shape[0]:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(
            f"the model output must have shape (N, C) = ({inputs.shape[0]}, C) for inputs of shape "
            f"{tuple(inputs.shape)}, got {shape}"
        )
    if not output.is_floating_point():
        raise ValueError(f"the model output must be floating point, got dtype {output.dtype}")
    if not all_finite(output):
        raise ValueError("the model output contains NaN or Inf")
    return output


def _chunks(n: int, per_example: int):
    size = max(1, CHUNK_ELEMENTS // max(1, per_example))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _over_examples(model: nn.Module, fn, in_dims: tuple[int | None, ...]):
    """``vmap(fn, in_dims)`` over examples, or an equivalent loop for models with recurrent layers.

    fn returns a tensor or a dict of tensors; the loop stacks them along a new
    first dimension, as vmap does.
    """
    if not any(isinstance(module, nn.RNNBase) for module in model.modules()):
        return vmap(fn, in_dims=in_dims)

    def looped(*args):
        n = next(a.shape[0] for a, dim in zip(args, in_dims) if dim == 0)
        outs = [fn(*(a[i] if dim == 0 else a for a, dim in zip(args, in_dims))) for i in range(n)]
        if isinstance(outs[0], dict):
            return {key: torch.stack([o[key] for o in outs]) for key in outs[0]}
        return torch.stack(outs)

    return looped


def _jacobian_chunk(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    def f(p, xi):
        return functional_call(model, p, (xi.unsqueeze(0),)).squeeze(0)

    jac = _over_examples(model, jacrev(f), (None, 0))(params, x)
    return _flatten(jac, params, lead=2)


def jacobians(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """J_n = ∂f_n/∂θ for every example: shape (N, C, P).

    Args:
        model: maps x (N, ...) to outputs (N, C), each example independently.
        x: inputs (N, ...).

    Returns:
        J with J[n, c, i] = ∂ model(x)[n, c] / ∂θ_i, θ in the package's parameter
        order (``model.parameters()`` that require grad, flattened and concatenated).
        Memory is N·C·P entries.
    """
    _check_model(model)
    x = _check_inputs(x)
    params = _param_dict(model)
    _forward(model, x[:1])
    return _jacobian_chunk(model, params, x)


def _iter_factor_rows(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, factor: torch.Tensor):
    """Yield (slice, R chunk (n, K, P)) with R_n = B_n J_n, over x in memory-bounded chunks.

    ``factor`` is B (N, K, C), an output-space factor per example. Each row of R_n is one
    vector-Jacobian product Bₙₖᵀ J_n, so the cost is K (not C) backward passes per
    example and J_n itself is never formed.
    """
    size = sum(p.numel() for p in params.values())

    def rows(xi, bi):
        _, pullback = vjp(lambda p: functional_call(model, p, (xi.unsqueeze(0),)).squeeze(0), params)
        (g,) = vmap(pullback)(bi)
        return g

    for sl in _chunks(x.shape[0], factor.shape[1] * size):
        yield sl, _flatten(_over_examples(model, rows, (0, 0))(x[sl], factor[sl]), params, lead=2)


def score(model: nn.Module, x: torch.Tensor, y: torch.Tensor, likelihood, variance=None) -> torch.Tensor:
    """Per-example Fisher scores g_n = ∇θ log p(y_n | x_n): shape (N, P).

    Args:
        model: maps x (N, ...) to outputs (N, C) (see ``scoregeo.fisher.likelihoods``
            for what the outputs mean), acting on each example independently.
        x: inputs (N, ...).
        y: targets, shaped as the likelihood expects ((N,) class indices for
            "categorical", (N, C) for "bernoulli" and "gaussian").
        likelihood: a ``Likelihood`` or "categorical" | "bernoulli" | "gaussian".
        variance: σ² for "gaussian" (required there).

    Returns:
        Gradients of the exact log-likelihood (not of a loss: no sign flip, no
        1/N), one row per example, in the package's parameter order.
        Σ_n g_n g_nᵀ with the data's labels is the empirical Fisher; with y drawn
        from the model it is a Monte Carlo estimate of the (true) Fisher.
    """
    _check_model(model)
    lik = get_likelihood(likelihood, variance)
    x = _check_inputs(x)
    params = _param_dict(model)
    output = _forward(model, x)
    lik.check_output(output)
    y = lik.check_targets(output, y)

    def log_lik(p, xi, yi):
        out = functional_call(model, p, (xi.unsqueeze(0),))
        return lik.log_prob(out, yi.unsqueeze(0))[0]

    n_per = 2 * output.shape[1] * sum(p.numel() for p in params.values())
    rows = []
    for sl in _chunks(x.shape[0], n_per):
        g = _over_examples(model, grad(log_lik), (None, 0, 0))(params, x[sl], y[sl])
        rows.append(_flatten(g, params, lead=1))
    return torch.cat(rows, 0)

