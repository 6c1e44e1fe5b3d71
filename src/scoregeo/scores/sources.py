"""Score sources: one protocol for everything that yields a Stein score s(x) at a fixed noise level.

A :class:`ScoreSource` is a callable x ↦ s(x) that also knows the shape of one
data point (``event_shape``: (d,) for vectors, (C, H, W) for images). It
accepts points either flat, (..., d) with d = C·H·W, or shaped,
(..., *event_shape), and returns the score in the shape it was given: metrics
and solvers work on flat vectors, users on images, and the reshape happens
here and nowhere else. ``symmetric_jacobian`` says whether the field is an
exact gradient ∇log p (then ``ScoreMetric`` skips a pass).

Sources:

* :class:`FunctionScore`: any score callable on (..., d) (an analytic density's
  ``score``, ``sg.score_of(log_prob)``) with an event shape;
* :class:`ModelScore`: scoregeo's own :class:`~scoregeo.ScoreModel` at a noise
  level σ (what ``ScoreModel.score_fn(σ)`` returns);
* :class:`DenoiserScore`: an EDM-style denoiser D(x, σ) ≈ E[x₀ | x], by Tweedie's
  formula s = (D(x, σ) − x) / σ²;
* :class:`~scoregeo.scores.diffusers.DiffusersScore`: a diffusers UNet with its
  scheduler at a timestep (``scoregeo.scores.diffusers``).

Every source is differentiable twice by autograd and composes with
``torch.func.vjp``, as the geometry engine needs.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from .._checks import check_positive

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


class ScoreSource:
    """A score field s at a fixed noise level over points of shape ``event_shape`` (see the module docstring).

    Subclasses implement :meth:`_score_events`, which maps a batch of shaped
    points (N, *event_shape) to their scores (same shape).
    """

    event_shape: tuple[int, ...] = ()
    symmetric_jacobian: bool = False

    def __init__(self, event_shape, symmetric_jacobian: bool = False):
        self.event_shape = check_event_shape(event_shape)
        if not isinstance(symmetric_jacobian, bool):
            raise ValueError(f"symmetric_jacobian must be True or False, got {symmetric_jacobian!r}")
        self.symmetric_jacobian = symmetric_jacobian

    @property
    def dim(self) -> int:
        """d = the number of coordinates of one point (C·H·W for images)."""
        return math.prod(self.event_shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """s(x) for points (..., d) or (..., *event_shape); returns x's shape and dtype."""
        events = self.as_events(x, "x")
        return self._score_events(events).reshape(x.shape)

    def _score_events(self, events: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ shapes
    def is_shaped(self, x: torch.Tensor) -> bool:
        """True when x is (..., *event_shape) (and not merely flat with a matching last dimension)."""
        k = len(self.event_shape)
        return x.ndim >= k and tuple(x.shape[x.ndim - k:]) == self.event_shape

    def as_events(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Points (..., d) or (..., *event_shape) as a batch (N, *event_shape); refuses other shapes and dtypes."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = f"dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a floating-point tensor, got {got} (integer points would be truncated)")
        if self.is_shaped(x) or (x.ndim >= 1 and x.shape[-1] == self.dim):
            # contiguous, tangents included: networks .view() their inputs, and torch.func tangents may be expanded
            return x.reshape(-1, *self.event_shape).contiguous()
        raise ValueError(
            f"{name} must have shape (..., {self.dim}) or (..., {', '.join(map(str, self.event_shape))}), "
            f"got {tuple(x.shape)}"
        )

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """Shaped points (..., *event_shape) → flat (..., d); flat points are returned as they are."""
        if self.is_shaped(x) and len(self.event_shape) > 1:
            return x.reshape(*x.shape[: x.ndim - len(self.event_shape)], self.dim)
        self.as_events(x)  # validates
        return x

    def unflatten(self, x: torch.Tensor) -> torch.Tensor:
        """Flat points (..., d) → shaped (..., *event_shape)."""
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"expected flat points (..., {self.dim}), got {tuple(x.shape)}")
        return x.reshape(*x.shape[:-1], *self.event_shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(event_shape={self.event_shape})"


class FunctionScore(ScoreSource):
    """A score callable on flat points (..., d) → (..., d), with the event shape of its data.

    ``symmetric_jacobian`` defaults to the callable's own attribute (set by
    ``sg.score_of``, by analytic densities and by the oracles), else False.
    """

    def __init__(self, score: ScoreFn, event_shape, symmetric_jacobian: bool | None = None):
        if not callable(score):
            raise ValueError(f"score must be callable, got {type(score).__name__}")
        if symmetric_jacobian is None:
            symmetric_jacobian = bool(getattr(score, "symmetric_jacobian", False))
        super().__init__(event_shape, symmetric_jacobian)
        self.score = score

    def _score_events(self, events: torch.Tensor) -> torch.Tensor:
        flat = events.reshape(events.shape[0], self.dim)
        return self.score(flat)


class ModelScore(ScoreSource):
    """The score of a scoregeo :class:`~scoregeo.ScoreModel` at noise level σ (None for noise-free models)."""

    def __init__(self, model, sigma: float | None = None):
        if model.conditional:
            model._require_sigma(sigma)
            sigma = check_positive(sigma, "sigma")
        elif sigma is not None:
            raise ValueError(f"sigma must be None for a {model.method!r} model (trained on clean data)")
        super().__init__(model.data_shape)
        self.model = model
        self.sigma = sigma

    def _score_events(self, events: torch.Tensor) -> torch.Tensor:
        return self.model._score_events(events, self.sigma)

    def __repr__(self) -> str:
        return f"ModelScore(event_shape={self.event_shape}, sigma={self.sigma})"


class DenoiserScore(ScoreSource):
    """The score of p_σ from an EDM-style denoiser D(x, σ) ≈ E[x₀ | x = x₀ + σ ε]: s = (D(x, σ) − x) / σ².

    Args:
        denoiser: a module or callable called as ``denoiser(x, sigma, **conditioning)``
            with x (N, *event_shape) and sigma a (N,) tensor, returning D (N, *event_shape)
            (EDM's ``VPPrecond``/``VEPrecond``/``EDMPrecond`` wrappers have this form).
        sigma: the noise level σ > 0 (in the units of x).
        event_shape: the shape of one data point.
        conditioning: extra keyword arguments of every call (for example
            ``class_labels``): tensors with a leading batch dimension of 1 are
            expanded to the batch.
    """

    def __init__(self, denoiser: Callable[..., torch.Tensor], sigma: float, event_shape, **conditioning: Any):
        if not callable(denoiser):
            raise ValueError(f"denoiser must be callable, got {type(denoiser).__name__}")
        super().__init__(event_shape)
        self.denoiser = denoiser
        self.sigma = check_positive(sigma, "sigma")
        self.conditioning = conditioning

    def _score_events(self, events: torch.Tensor) -> torch.Tensor:
        dtype = network_dtype(self.denoiser, events.dtype)
        inputs = events.to(dtype)
        sigma = torch.full((events.shape[0],), self.sigma, dtype=dtype, device=events.device)
        denoised = self.denoiser(inputs, sigma, **expand_conditioning(self.conditioning, events.shape[0]))
        check_output(denoised, inputs, "denoiser")
        return (denoised.to(events.dtype) - events) / self.sigma**2

    def __repr__(self) -> str:
        return f"DenoiserScore(event_shape={self.event_shape}, sigma={self.sigma})"


# ---------------------------------------------------------------------- helpers shared by the sources
def check_event_shape(event_shape) -> tuple[int, ...]:
    """A non-empty tuple of positive integers."""
    try:
        shape = tuple(int(n) for n in event_shape)
    except TypeError:
        raise ValueError(f"event_shape must be a tuple of positive integers, got {event_shape!r}") from None
    if not shape or any(n <= 0 for n in shape) or any(int(n) != n for n in event_shape):
        raise ValueError(f"event_shape must be a non-empty tuple of positive integers, got {event_shape!r}")
    return shape


def network_dtype(network, fallback: torch.dtype) -> torch.dtype:
    """The floating dtype of a module's parameters (the points are cast to it), else ``fallback``."""
    if isinstance(network, nn.Module):
        for parameter in network.parameters():
            if parameter.is_floating_point():
                return parameter.dtype
    return fallback


def expand_conditioning(conditioning: dict[str, Any], batch: int) -> dict[str, Any]:
    """Keyword arguments with every tensor of leading dimension 1 expanded to ``batch``."""
    out = {}
    for name, value in conditioning.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == 1 and batch != 1:
            value = value.expand(batch, *value.shape[1:])
        out[name] = value
    return out


def check_output(output, inputs: torch.Tensor, what: str) -> None:
    """A network's output must be a tensor of its input's shape."""
    if not isinstance(output, torch.Tensor) or output.shape != inputs.shape:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"the {what} must return a tensor of its input's shape {tuple(inputs.shape)}, got {got}")
