"""What every sampler returns next to its samples, and the checks they share."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm

from .._checks import check_finite


@dataclass(frozen=True)
class SampleInfo:
    """Summary of one sampling run.

    Attributes:
        sampler: which sampler produced the samples (``"langevin"``, ``"mala"``,
            ``"annealed_langevin"``, ``"pc/reverse_diffusion"``, ``"pc/euler_maruyama"``,
            ``"probability_flow"``).
        steps: number of update steps: Langevin/MALA steps, all Langevin steps of
            annealed Langevin, predictor steps of the PC sampler, accepted solver
            steps of the probability-flow ODE.
        score_evals: number of evaluations of the score (one batched call counts
            once), including the initial evaluation of MALA and the final
            denoising step. For the ODE it is the number of function evaluations.
        acceptance_rate: mean Metropolis acceptance over chains and steps (MALA);
            None where there is no accept/reject step.
        n_nonfinite: number of samples that hold a NaN or Inf at the end
            (a warning is issued when it is > 0).
        solver: for the probability-flow ODE, the integrator and its tolerances;
            None otherwise.
    """

    sampler: str
    steps: int
    score_evals: int
    acceptance_rate: float | None = None
    n_nonfinite: int = 0
    solver: str | None = None


def check_positive(value: float, name: str) -> float:
    """Check a real hyperparameter is a finite number > 0."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_start(x: torch.Tensor, name: str = "x0") -> torch.Tensor:
    """Check a batch of starting points (B, ...): a finite floating tensor with a batch axis."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, ...), got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor (float32 or float64), got dtype {x.dtype}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (B, ...) with B >= 1, got {tuple(x.shape)}")
    check_finite(x, name)
    return x


def check_callable(fn: object, name: str) -> None:
    if not callable(fn):
        raise ValueError(f"{name} must be callable, got {type(fn).__name__}")


def call_score(score: Callable[..., torch.Tensor], x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
    """Evaluate ``score(x, *args)`` and check that it returned a tensor shaped like x."""
    out = score(x, *args)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"score must return a tensor of the shape of x {tuple(x.shape)}, got {got}")
    return out


def sample_norms(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each sample over all its non-batch dimensions, (B,)."""
    return x.reshape(x.shape[0], -1).norm(dim=1)


def finite_rows(x: torch.Tensor) -> torch.Tensor:
    """(B,) boolean mask of the samples without NaN or Inf."""
    return torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)


def report_nonfinite(x: torch.Tensor, sampler: str) -> int:
    """Count the samples holding NaN/Inf and warn (RuntimeWarning) when there are any."""
    bad = int((~finite_rows(x)).sum())
    if bad:
        warnings.warn(
            f"{sampler}: {bad} of {x.shape[0]} samples are not finite (NaN or Inf); the chains diverged: "
            "reduce the step size or check the score",
            RuntimeWarning,
            stacklevel=3,
        )
    return bad


def progress_bar(iterable: Iterable | None, enabled: bool, desc: str, total: float | None = None):
    """A tqdm bar over ``iterable`` (or a manual one when it is None), silent when ``enabled`` is False."""
    return tqdm(iterable, desc=desc, total=total, disable=not enabled, leave=False)


def per_example(x: torch.Tensor, value: float) -> torch.Tensor:
    """A (B,) tensor of ``value`` in the dtype and device of x (a noise level for every example)."""
    return torch.full((x.shape[0],), value, dtype=x.dtype, device=x.device)


def rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View a per-example (B,) mask as (B, 1, ..., 1) to broadcast against ``like``."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1))
