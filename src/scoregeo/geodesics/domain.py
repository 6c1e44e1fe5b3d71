"""Metrics defined on a region: evaluations outside it become NaN instead of aborting a solve.

A start curve, a line-search trial or a Newton trial point can leave the region
where a metric is defined (the simplex of a categorical Fisher–Rao metric, the
cone of SPD matrices, σ > 0 of a normal family). The metric then raises (a
``ValueError`` from a torch distribution's argument check or from a Cholesky
test) for the whole batch. :class:`DomainGuard` wraps a metric for the solvers:
when an evaluation raises, the batch is split in halves until the points that
fail are isolated, and those points get NaN. Solvers treat non-finite values
as a failed trial (backtrack) or a failed start (dropped), never as an answer.
End points outside the domain are refused before any solve, by
``Metric.check_domain``.
"""

from __future__ import annotations

import torch

from ..metrics import Metric

_DOMAIN_ERRORS = (ValueError, torch.linalg.LinAlgError)


class DomainGuard(Metric):
    """The metric ``metric`` with evaluations outside its domain returned as NaN (see the module docstring)."""

    def __init__(self, metric: Metric):
        super().__init__(metric.dim)
        self.metric = metric

    def check_solvable(self) -> None:
        self.metric.check_solvable()

    def _matrix(self, x: torch.Tensor) -> torch.Tensor:
        return _guarded(self.metric._matrix, (x,), (self.dim, self.dim))

    def _apply(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return _guarded(self.metric._apply, (x, v), (self.dim,))

    def _solve(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _guarded(self.metric._solve, (x, b), (self.dim,))

    def _inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return _guarded(self.metric._inner, (x, u, v), ())

    def _acceleration(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return _guarded(self.metric._acceleration, (x, v), (self.dim,))

    def _low_rank(self, x: torch.Tensor):
        try:
            return self.metric._low_rank(x)
        except _DOMAIN_ERRORS:
            return None

    def __repr__(self) -> str:
        return f"DomainGuard({self.metric!r})"


def guard(metric: Metric) -> Metric:
    """``metric`` wrapped in a :class:`DomainGuard` (once)."""
    return metric if isinstance(metric, DomainGuard) else DomainGuard(metric)


def _guarded(fn, args: tuple[torch.Tensor, ...], trailing: tuple[int, ...]) -> torch.Tensor:
    """fn(*args) for point tensors (..., d); points where fn raises a domain error get NaN outputs (..., *trailing)."""
    try:
        return fn(*args)
    except _DOMAIN_ERRORS:
        pass
    broadcast = torch.broadcast_tensors(*args)
    batch = broadcast[0].shape[:-1]
    flat = [a.reshape(-1, a.shape[-1]) for a in broadcast]
    return _split(fn, flat, trailing).reshape(*batch, *trailing)


def _split(fn, flat: list[torch.Tensor], trailing: tuple[int, ...]) -> torch.Tensor:
    """Outputs for a flat batch on which fn raised: NaN for a single point, else each half on its own."""
    count = flat[0].shape[0]
    if count <= 1:
        return flat[0].new_full((count, *trailing), float("nan"))
    half = count // 2
    return torch.cat([_attempt(fn, [a[:half] for a in flat], trailing), _attempt(fn, [a[half:] for a in flat], trailing)])


def _attempt(fn, flat: list[torch.Tensor], trailing: tuple[int, ...]) -> torch.Tensor:
    try:
        return fn(*flat)
    except _DOMAIN_ERRORS:
        return _split(fn, flat, trailing)
