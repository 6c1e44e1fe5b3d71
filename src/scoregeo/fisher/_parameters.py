"""Parameter vectors of a model for the uses of the Fisher information: trainable parameters, flat vectors, checks.

Parameter order everywhere: ``[p for p in model.parameters() if p.requires_grad]``,
flattened row-major and concatenated (length P).
"""

from __future__ import annotations

import math

import torch
from torch import nn


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
