"""Input validation shared by every public entry point.

Each check raises a ``ValueError`` that names the offending argument and says
what was expected, so that a user sees the mistake where they made it.
"""

from __future__ import annotations

import math

import torch


SUPPORTED_DTYPES = (torch.float32, torch.float64)


def check_points(x: torch.Tensor, dim: int, name: str = "x") -> torch.Tensor:
    """Check that ``x`` is a finite float32 or float64 tensor of shape (..., dim).

    Half precision (float16, bfloat16) is refused: its 3 significant digits
    (bfloat16: 2) are below the accuracy of every solver's error control.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (..., {dim}), got {type(x).__name__}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{name} must be a floating-point tensor of dtype float32 or float64, got dtype {x.dtype}")
    if x.ndim == 0 or x.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (..., {dim}), got {tuple(x.shape)}")
    check_finite(x, name)
    return x


def all_finite(x: torch.Tensor) -> bool:
    """Whether ``x`` holds no NaN or Inf.

    A NaN or Inf entry makes the sum NaN or Inf, so one reduction decides the common
    case; only a sum that overflows from finite entries needs the elementwise test.
    """
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Check that ``x`` holds no NaN or Inf (skipped under torch.func transforms)."""
    if _is_plain(x) and not all_finite(x):
        bad = (~torch.isfinite(x)).nonzero()
        raise ValueError(f"{name} contains NaN or Inf (first at index {tuple(bad[0].tolist())})")
    return x


def check_magnitude(x: torch.Tensor, name: str) -> torch.Tensor:
    """Check that the squared Euclidean norm of every (..., d) point of ``x`` is finite in its dtype.

    Inner products, norms and scores square the coordinates; beyond about
    √(finfo.max / d) (1e154 in float64, 1.8e19 in float32, less in high d) they
    overflow to Inf and every result becomes NaN. Run after :func:`check_points`
    (which rules out NaN and Inf themselves); skipped under torch.func transforms.
    """
    if not _is_plain(x) or x.numel() == 0:
        return x
    squares = x.square().sum(-1)
    if not all_finite(squares):
        first = tuple((~torch.isfinite(squares)).nonzero()[0].tolist())
        largest = float(x[first].abs().max())
        limit = math.sqrt(torch.finfo(x.dtype).max / x.shape[-1])
        raise ValueError(
            f"{name} has coordinates too large for {x.dtype} (largest magnitude {largest:.3g} at batch index "
            f"{first}): the sum of their squares overflows; keep coordinates below about {limit:.3g} in "
            "magnitude, for example by rescaling the data"
        )
    return x


def check_positive(value: float, name: str) -> float:
    """Check a real hyperparameter is finite and > 0."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Check that two point tensors can be broadcast against each other."""
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(
            f"{name_a} with shape {tuple(a.shape)} and {name_b} with shape {tuple(b.shape)} do not broadcast"
        ) from None


def check_nonnegative(value: float, name: str) -> float:
    """Check a real hyperparameter is finite and >= 0."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_interval(value, name: str) -> tuple[float, float]:
    """Check a pair (low, high) of finite numbers with low < high; returns it as floats."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{name} must be a finite pair with low < high, got {value!r}")
    return low, high


def check_positive_int(value: int, name: str, minimum: int = 1) -> int:
    """Check an integer hyperparameter is at least ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_dim(dim: int) -> int:
    """Check the dimension of a manifold."""
    return check_positive_int(dim, "dim")


def _is_plain(x: torch.Tensor) -> bool:
    """True for an ordinary tensor, False for a torch.func wrapper whose values cannot be inspected."""
    try:
        torch._C._functorch.is_functorch_wrapped_tensor  # noqa: B018
    except AttributeError:  # pragma: no cover - very old torch
        return True
    return not torch._C._functorch.is_functorch_wrapped_tensor(x)
