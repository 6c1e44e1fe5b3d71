"""The score metric g(x) = α I + λ s(x) s(x)ᵀ of a Stein score field s."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.func import vjp

from .._checks import _is_plain, check_nonnegative
from .base import Metric, OutsideDomainError, _first_bad, describe_point

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


class ScoreMetric(Metric):
    """Metric g(x) = α I + λ s(x) s(x)ᵀ built from a score field s: (..., d) → (..., d).

    The score may be analytic (``Gaussian.score``), come from a log-density
    (``sg.score_of``) or be a learned network; it must be differentiable (by
    ``torch.autograd`` and ``torch.func``) and act on each point independently.
    A score source (:mod:`scoregeo.scores.sources`: a ``ScoreModel.score_fn(σ)``,
    a diffusers UNet, a denoiser) brings its dimension and data shape, so ``dim``
    may then be left out; ``event_shape`` is the source's (for example
    (C, H, W)), else (dim,).

    Every operation is in closed form and never forms a d×d matrix (except
    ``matrix``): G v = α v + λ s (s·v); G⁻¹ b = (b − λ s (s·b)/(α + λ|s|²))/α
    (Sherman–Morrison); ``_low_rank`` gives (α, √λ sᵀ). The acceleration, with
    J = ∂s/∂x not assumed symmetric (exact for learned non-conservative fields)::

        Γ♭(v, v) = λ [ (vᵀ J v) s + (s·v) (J − Jᵀ) v ]
        ẍ = −G⁻¹ Γ♭,   G⁻¹ = (1/α) (I − λ s sᵀ / (α + λ |s|²))

    s, Jᵀv and Jv come from one forward pass, its backward pass with a graph
    (Jᵀv as a function of v) and one backward pass of that (J v = the VJP of the
    linear map v ↦ Jᵀv): about three forwards' worth of matrix products. Under
    ``torch.func`` transforms (geodesic solvers take JVPs of the acceleration)
    the same products come from ``torch.func.vjp`` of a ``vjp``.

    ``symmetric_jacobian=True`` declares J = Jᵀ (an exact score ∇log p, such as
    ``Gaussian.score`` or ``sg.score_of(log_prob)``): then
    ẍ = −λ (vᵀJv)/(α + λ|s|²) · s, from one forward and one backward pass
    (measured 2.1–2.7× one forward instead of 3.3–4.6×). It is wrong for a field
    that is not a gradient, so it is never guessed: the default (None) reads the
    score's own ``symmetric_jacobian`` attribute, which a score source sets to
    declare itself exact, and is False without it.

    The public methods check the score's output: a wrong shape or a NaN/Inf
    raises a ``ValueError`` naming the score and a point where it happened. The
    underscored methods (solver inner loops) check the shape only (no host
    synchronisation).

    ``alpha=0`` is the pure rank-one metric s sᵀ: ``inner`` and ``norm`` work
    (the length of a curve is then the total variation of log p along it), but
    ``solve``, ``acceleration`` and the geodesic solvers refuse it because G is
    singular.
    """

    def __init__(
        self,
        score: ScoreFn,
        dim: int | None = None,
        lam: float = 1.0,
        alpha: float = 1.0,
        symmetric_jacobian: bool | None = None,
    ):
        if not callable(score):
            raise ValueError(f"score must be callable, got {type(score).__name__}")
        source_dim = getattr(score, "dim", None) if isinstance(getattr(score, "event_shape", None), tuple) else None
        if dim is None:
            if source_dim is None:
                raise ValueError("dim is required for a plain score callable (only a score source knows its dimension)")
            dim = source_dim
        elif source_dim is not None and dim != source_dim:
            raise ValueError(f"dim={dim!r} does not match the score source's dimension {source_dim}")
        super().__init__(dim)
        self._event_shape = tuple(score.event_shape) if source_dim is not None else (dim,)
        self.score = score
        self.lam = check_nonnegative(lam, "lam")
        self.alpha = check_nonnegative(alpha, "alpha")
        if self.alpha == 0 and self.lam == 0:
            raise ValueError("alpha and lam cannot both be 0: the metric would vanish")
        if symmetric_jacobian is None:
            symmetric_jacobian = getattr(score, "symmetric_jacobian", False)
        if not isinstance(symmetric_jacobian, bool):
            raise ValueError(f"symmetric_jacobian must be True, False or None, got {symmetric_jacobian!r}")
        self.symmetric_jacobian = symmetric_jacobian

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one data point: the score source's (for example (C, H, W)), else (dim,)."""
        return self._event_shape

    def check_solvable(self) -> None:
        if self.alpha == 0:
            raise ValueError(
                "alpha=0 gives the degenerate metric λ s sᵀ (rank one, singular): the length of any curve is "
                "the total variation of log p along it, so geodesics are not unique and the geodesic equation "
                "has no solution; use alpha > 0 (for example alpha=1.0) for geodesics, distances and curvature"
            )

    # ------------------------------------------------------------------ the score
    @property
    def score_name(self) -> str:
        """A readable name of the score function, for error messages."""
        fn = self.score
        name = getattr(fn, "__qualname__", None) or type(fn).__name__
        return f"{name} ({type(fn).__name__})" if isinstance(fn, torch.nn.Module) else name

    def _s(self, x: torch.Tensor) -> torch.Tensor:
        """s(x) with its shape checked (no host synchronisation)."""
        return self._checked_shape(self.score(x), x)

    def _checked_shape(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(s, torch.Tensor) or s.shape != x.shape:
            got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise OutsideDomainError(
                f"score {self.score_name} must map x of shape {tuple(x.shape)} to a score of the same shape, "
                f"got {got} (at x = {describe_point(x)})"
            )
        return s

    def _check_domain(self, x: torch.Tensor, name: str) -> None:
        """The score at x must have x's shape and be finite; then G = αI + λ s sᵀ is positive-definite if α > 0."""
        s = self._checked_shape(self.score(x), x)
        finite = torch.isfinite(s).all(-1)
        if not bool(finite.all()):
            index = _first_bad(~finite)
            point = x.expand_as(s)[index] if index else x
            raise OutsideDomainError(
                f"score {self.score_name} returned NaN or Inf at {name} = {describe_point(point)} (batch index "
                f"{index}): {name} is outside the domain of the score metric"
            )
        if self.alpha == 0 and self.dim > 1:
            raise OutsideDomainError(
                f"{name}: with alpha=0, G(x) = λ s sᵀ has rank one and is positive-definite nowhere"
            )

    # ------------------------------------------------------------------ operators
    def _matrix(self, x: torch.Tensor) -> torch.Tensor:
        s = self._s(x)
        eye = torch.eye(self.dim, dtype=s.dtype, device=s.device)
        return self.alpha * eye + self.lam * (s.unsqueeze(-1) * s.unsqueeze(-2))  # exactly symmetric

    def _apply(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        s = self._s(x)
        return self.alpha * v + self.lam * (s * v).sum(-1, keepdim=True) * s

    def _solve(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self._sherman_morrison(self._s(x), b)

    def _sherman_morrison(self, s: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """G⁻¹ b = (b − λ s (s·b) / (α + λ|s|²)) / α (α > 0)."""
        s_dot_b = (s * b).sum(-1, keepdim=True)
        denom = self.alpha + self.lam * (s * s).sum(-1, keepdim=True)
        return (b - self.lam * s * s_dot_b / denom) / self.alpha

    def _inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        s = self._s(x)
        return self.alpha * (u * v).sum(-1) + self.lam * (s * u).sum(-1) * (s * v).sum(-1)

    def _low_rank(self, x: torch.Tensor) -> tuple[float, torch.Tensor]:
        return self.alpha, math.sqrt(self.lam) * self._s(x).unsqueeze(-2)

    def _acceleration(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """−G⁻¹ Γ♭(v, v) in closed form; the Sherman–Morrison solve folded into per-point scalars.

        With w = Jv − Jᵀv, a = vᵀJv, c = s·v: Γ♭ = λ (a s + c w), and
        G⁻¹ Γ♭ = (λ/α) [c w + (a − λ (a|s|² + c s·w)/(α + λ|s|²)) s]: four dot
        products and two passes over (..., d), no temporary per term.
        """
        x, v = torch.broadcast_tensors(x, v)
        lam, alpha = self.lam, self.alpha
        if self.symmetric_jacobian:
            s, Jt_v = self._score_and_vjp(x, v)
            s_sq = _dot(s, s)
            return (-lam * _dot(v, Jt_v) / (alpha + lam * s_sq)) * s
        s, J_v, Jt_v = self._score_jvp_vjp(x, v)
        w = J_v - Jt_v
        a, c, s_sq, s_w = _dot(v, J_v), _dot(s, v), _dot(s, s), _dot(s, w)
        coef_s = (lam / alpha) * (lam * (a * s_sq + c * s_w) / (alpha + lam * s_sq) - a)
        return torch.addcmul(coef_s * s, w, c, value=-lam / alpha)

    def _score_and_vjp(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s(x) and Jᵀv: one forward and one backward pass."""
        if not (_is_plain(x) and _is_plain(v)):
            s, pullback = vjp(self._s, x)
            return s, pullback(v)[0]
        keep = torch.is_grad_enabled() and (x.requires_grad or v.requires_grad)
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_()
            s = self._s(xg)
            if not s.requires_grad:  # s does not depend on x
                return s, torch.zeros_like(v)
            (Jt_v,) = torch.autograd.grad(s, xg, v, create_graph=keep, materialize_grads=True)
        return (s, Jt_v) if keep else (s.detach(), Jt_v)

    def _score_jvp_vjp(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """s(x), J v and Jᵀ v.

        Plain tensors: a forward pass, its backward pass with a graph (u ↦ Jᵀu,
        linear in u) and the backward pass of that graph at v, which is J v
        (measured faster than ``torch.func``: see benchmarks/geodesic_step.py).
        Under ``torch.func`` transforms: ``vjp`` of the score and ``vjp`` of its
        pullback, the same three passes.
        """
        if not (_is_plain(x) and _is_plain(v)):
            s, pullback = vjp(self._s, x)
            Jt_v, transpose_of_pullback = vjp(lambda u: pullback(u)[0], v)
            return s, transpose_of_pullback(v)[0], Jt_v
        keep = torch.is_grad_enabled() and (x.requires_grad or v.requires_grad)
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_()
            vg = v if v.requires_grad else v.detach().requires_grad_()
            s = self._s(xg)
            if not s.requires_grad:  # s does not depend on x: J = 0
                return s, torch.zeros_like(v), torch.zeros_like(v)
            (Jt_v,) = torch.autograd.grad(s, xg, vg, create_graph=True, materialize_grads=True)
            if Jt_v.requires_grad:
                (J_v,) = torch.autograd.grad(Jt_v, vg, v, create_graph=keep, materialize_grads=True)
            else:  # s does not depend on x (only on parameters): J = 0
                J_v = torch.zeros_like(v)
        return (s, J_v, Jt_v) if keep else (s.detach(), J_v, Jt_v.detach())

    def __repr__(self) -> str:
        return f"ScoreMetric(dim={self.dim}, lam={self.lam}, alpha={self.alpha})"


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise a·b over the last dimension, kept as (..., 1)."""
    return (a * b).sum(-1, keepdim=True)
