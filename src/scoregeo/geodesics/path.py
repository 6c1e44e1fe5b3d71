"""The result type of every geodesic solver."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class Path:
    """A curve x(t), t ∈ [0, T], sampled at ``n`` times, with its diagnostics.

    Shapes use ``...`` for the batch of curves, n for samples along a curve and d
    for the dimension.

    Attributes:
        points: (..., n, d) the curve at ``times``.
        times: (n,) sample times (0 … T).
        length: (...) Riemannian length ∫ ‖ẋ‖ dt.
        energy: (...) ∫ ⟨ẋ, ẋ⟩ dt over [0, T] (for a geodesic on [0, 1], length²).
        converged: (...) bool; False means the solver did not meet its tolerance
            and the other fields are its best attempt (a warning was issued).
        initial_velocity: (..., d) ẋ(0).
        residual: (...) the solver's own error measure. Shooting: Euclidean
            distance between the end of the final shot and the target point;
            collocation: relative change of the length between the last two
            polynomial degrees; energy: relative energy gradient;
            initial-value problems: equal to ``speed_drift``.
        speed_drift: (...) how far the samples are from constant speed. Shots:
            max over the samples of |⟨ẋ, ẋ⟩ − ⟨ẋ₀, ẋ₀⟩| / ⟨ẋ₀, ẋ₀⟩ (an exact
            geodesic has constant speed, so this measures integration error);
            collocation: max relative error of the samples' arc-length positions;
            energy: spread of the segments' speeds.
        local_lengths: (..., m) lengths of the distinct local geodesics a
            boundary-value solve found between the same end points, shortest
            first, NaN-padded (``None`` for initial-value problems).
        n_local: (...) number of distinct local geodesics found (1 when no other
            was found; ``None`` for initial-value problems).
        method: name of the solver that produced the path.
        event_shape: shape of one point when the points are shaped, for example
            (C, H, W) (then ``points`` is (..., n, C, H, W) and
            ``initial_velocity`` (..., C, H, W)); None for flat (..., n, d).
        evaluations: (...) int, the number of metric evaluations the solver spent
            on each path: right-hand sides (geodesic accelerations) for shots;
            energy gradients and Hessian-vector products for boundary-value
            solvers (each a few passes through the score for a ``ScoreMetric``).
            ``None`` when the solver does not count them.
    """

    points: torch.Tensor
    times: torch.Tensor
    length: torch.Tensor
    energy: torch.Tensor
    converged: torch.Tensor
    initial_velocity: torch.Tensor
    residual: torch.Tensor
    speed_drift: torch.Tensor
    method: str
    local_lengths: torch.Tensor | None = None
    n_local: torch.Tensor | None = None
    evaluations: torch.Tensor | None = None
    event_shape: tuple[int, ...] | None = None

    @property
    def _event_rank(self) -> int:
        return 1 if self.event_shape is None else len(self.event_shape)

    @property
    def end_point(self) -> torch.Tensor:
        """(..., d) (or (..., *event_shape)) the last sample of the curve."""
        return self.points.select(self.points.ndim - 1 - self._event_rank, -1)

    def shaped(self, event_shape: tuple[int, ...]) -> "Path":
        """The same flat paths with points (..., n, *event_shape) and initial velocities (..., *event_shape)."""
        return replace(
            self,
            points=self.points.reshape(*self.points.shape[:-1], *event_shape),
            initial_velocity=self.initial_velocity.reshape(*self.initial_velocity.shape[:-1], *event_shape),
            event_shape=tuple(event_shape),
        )

    def reshape(self, batch: tuple[int, ...]) -> "Path":
        """The same paths with their batch dimensions reshaped to ``batch``."""

        def fit(t: torch.Tensor | None, trailing: int) -> torch.Tensor | None:
            return None if t is None else t.reshape(tuple(batch) + tuple(t.shape[t.ndim - trailing :]))

        rank = self._event_rank
        return Path(
            points=fit(self.points, 1 + rank),
            times=self.times,
            length=fit(self.length, 0),
            energy=fit(self.energy, 0),
            converged=fit(self.converged, 0),
            initial_velocity=fit(self.initial_velocity, rank),
            residual=fit(self.residual, 0),
            speed_drift=fit(self.speed_drift, 0),
            method=self.method,
            local_lengths=fit(self.local_lengths, 1),
            n_local=fit(self.n_local, 0),
            evaluations=fit(self.evaluations, 0),
            event_shape=self.event_shape,
        )
