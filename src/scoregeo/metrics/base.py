"""The base class every metric derives from, and the matrix-free protocol solvers use.

A metric tensor field g on R^d is a symmetric positive-definite G(x) at every
point x of its domain. Solvers never need the d×d matrix: they use G as an
operator. Points and vectors are (..., d) and broadcast over leading dimensions.

Public methods (validate their arguments, then call the underscored ones):

============================  =====================================  ================
method                        meaning                                shape
============================  =====================================  ================
``apply(x, v)``               G(x) v                                 (..., d)
``solve(x, b)``               G(x)⁻¹ b                               (..., d)
``inner(x, u, v)``            ⟨u, v⟩_x = uᵀ G(x) v                   (...)
``norm(x, v)``                ‖v‖_x                                  (...)
``acceleration(x, v)``        ẍ = −Γ(v, v), the geodesic equation    (..., d)
``matrix(x)``                 G(x), dense (small d)                  (..., d, d)
``christoffel(x)``            Γ^k_ij, dense (small d)                (..., d, d, d)
``check_domain(x, name)``     ``ValueError`` if x is outside the     —
                              domain (G non-finite, not positive-
                              definite, or the metric raising)
============================  =====================================  ================

Underscored methods do the work without validation; solvers call them in their
inner loops after validating their inputs once. A subclass implements at least
one of

* ``_matrix(x)`` → G(x) (dense metrics; ``_apply`` then defaults to G v), or
* ``_apply(x, v)`` → G(x) v (matrix-free metrics; ``_matrix`` then defaults to
  d products with the basis vectors, for small d only),

and overrides what it can do faster or more exactly:

* ``_solve(x, b)``: default conjugate gradient on ``_apply``
  (:func:`scoregeo.linalg.conjugate_gradient`), each point converging on its own;
  it raises a ``ValueError`` naming the point where G is not positive-definite
  and warns when a point misses the tolerance. Dense metrics use Cholesky
  (:func:`solve_spd`).
* ``_inner(x, u, v)``: default u · ``_apply(x, v)``.
* ``_acceleration(x, v)``: default −G⁻¹ Γ♭(v, v) with the lowered contraction
  Γ♭(v, v) = ∂_v(G v) − ½ ∇(vᵀ G v) from one JVP and one VJP of x ↦ G(x) v
  (v held fixed), then ``_solve``: no d×d matrix unless ``_apply`` itself uses
  one. Dense metrics use :func:`dense_acceleration` instead (one Cholesky).
* ``_low_rank(x)`` → ``(alpha, U)`` with alpha a float and U (..., r, d) such
  that G(x) = alpha·I + Uᵀ U, or ``None`` (default) when the metric has no such
  form. Boundary-value solvers build Woodbury preconditioners from it.
* ``_check_domain(x, name)``: raise :class:`OutsideDomainError` (a
  ``ValueError``) naming ``name`` and the point. Default: G(x) built densely is
  finite, symmetric and positive-definite (d ≤ ``MAX_DENSE_DOMAIN_CHECK``; above,
  only G·1 finite and 1ᵀG1 > 0). Euclidean accepts every finite point;
  ScoreMetric checks the score's shape and finiteness (G is then positive-definite
  for α > 0); MatrixMetric checks the user's G.

The public methods check their result too: if it holds NaN or Inf they run
``check_domain`` at x, so a point outside the domain gets its named
``ValueError`` (otherwise a ``RuntimeWarning`` says the result overflowed).

Geodesic solvers take JVPs of ``_acceleration`` (and vmap them over tangents),
so ``_apply``, ``_solve`` and ``_acceleration`` must compose with ``torch.func``
(the defaults and every built-in metric do; conjugate gradient is then
differentiated through its iterations).
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch.func import jvp, vjp

from .._checks import check_points, check_same_shape
from ..linalg import NotPositiveDefiniteError, conjugate_gradient

# Above this dimension ``check_domain``'s default does not build G(x) densely.
MAX_DENSE_DOMAIN_CHECK = 1024


class OutsideDomainError(ValueError):
    """A point is outside a metric's domain; the message names the argument and the point."""


class Metric:
    """A Riemannian metric on R^d (see the module docstring for the protocol).

    Conventions: points and tangent vectors are (..., d) and broadcast over
    leading dimensions; Christoffel symbols are ``Γ[..., k, i, j] = Γ^k_ij``;
    ``acceleration(x, v)`` is ẍ = −Γ^k_ij v^i v^j, the right-hand side of the
    geodesic equation.
    """

    def __init__(self, dim: int):
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        cls = type(self)
        if cls._matrix is Metric._matrix and cls._apply is Metric._apply:
            raise TypeError(f"{cls.__name__} must implement _matrix(x) or _apply(x, v)")
        self._dim = dim

    @property
    def dim(self) -> int:
        """Dimension d of the manifold."""
        return self._dim

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one point as users hold it: (d,), or for example (C, H, W) for a score source's images.

        The geodesic functions accept points of shape (..., *event_shape) as well
        as flat (..., d), and return the shape they were given.
        """
        return (self._dim,)

    def flatten_points(self, x, name: str = "x") -> tuple[torch.Tensor, bool]:
        """Points (..., *event_shape) as flat (..., d), and whether they were shaped; flat points pass as they are."""
        event = self.event_shape
        k = len(event)
        if k > 1 and isinstance(x, torch.Tensor) and x.ndim >= k and tuple(x.shape[x.ndim - k:]) == event:
            return x.reshape(*x.shape[: x.ndim - k], self._dim), True
        return x, False

    # ----------------------------------------------------------------- public API
    def matrix(self, x: torch.Tensor) -> torch.Tensor:
        """Metric matrix G(x), shape (..., d, d)."""
        self._check(x=x)
        return self._finite(self._matrix(x), x, "G(x)")

    def apply(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """G(x) v, shape (..., d)."""
        self._check(x=x, v=v)
        return self._finite(self._apply(x, v), x, "G(x) v")

    def solve(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """G(x)⁻¹ b, shape (..., d)."""
        self._check(x=x, b=b)
        self.check_solvable()
        return self._finite(self._solve(x, b), x, "G(x)⁻¹ b")

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """⟨u, v⟩_x = uᵀ G(x) v, shape (...)."""
        self._check(x=x, u=u, v=v)
        return self._finite(self._inner(x, u, v), x, "⟨u, v⟩_x")

    def norm(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """‖v‖_x = √⟨v, v⟩_x, shape (...)."""
        self._check(x=x, v=v)
        return self._finite(self._inner(x, v, v), x, "⟨v, v⟩_x").clamp_min(0).sqrt()

    def acceleration(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Geodesic acceleration ẍ = −Γ(v, v) at x with velocity v, shape (..., d)."""
        self._check(x=x, v=v)
        self.check_solvable()
        return self._finite(self._acceleration(x, v), x, "the acceleration")

    def christoffel(self, x: torch.Tensor) -> torch.Tensor:
        """Dense Christoffel symbols Γ^k_ij, shape (..., d, d, d) (small d only)."""
        self._check(x=x)
        self.check_solvable()
        return self._christoffel(x)

    def check_solvable(self) -> None:
        """Raise ``ValueError`` if geodesics of this metric are not well defined."""

    def check_domain(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise a ``ValueError`` naming ``name`` and the point if x (..., d) is outside the metric's domain.

        Outside means: G(x) is not finite or not positive-definite, or
        evaluating the metric raises. Solvers call this on end points.
        """
        self._check(**{name: x})
        try:
            self._check_domain(x, name)
        except OutsideDomainError:
            raise
        except Exception as error:  # the user's field failed: report where, keep the cause
            where = (f"{name} = {describe_point(x)}" if x.ndim == 1 else
                     f"{name} (a batch of shape {tuple(x.shape[:-1])}; first point {describe_point(x)})")
            raise OutsideDomainError(
                f"{name} is outside the domain of {self!r}: evaluating the metric at {where} raised "
                f"{type(error).__name__}: {error}"
            ) from error

    # ------------------------------------------------------------ implementation
    def _matrix(self, x: torch.Tensor) -> torch.Tensor:
        """G(x) (..., d, d) from d products with the basis vectors; no validation."""
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        columns = self._apply(x.unsqueeze(-2).expand(*x.shape[:-1], self.dim, self.dim), eye)  # [..., j, :] = G e_j
        return columns.mT

    def _apply(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """G(x) v (..., d) from the dense matrix; no validation."""
        return (self._matrix(x) @ v.unsqueeze(-1)).squeeze(-1)

    def _solve(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """G(x)⁻¹ b (..., d) by conjugate gradient on ``_apply``; no argument validation."""
        x, b = torch.broadcast_tensors(x, b)
        try:
            result = conjugate_gradient(
                lambda p: self._apply(x, p), b, dim=-1, on_failure="warn",
                hint=f"{type(self).__name__}._solve: G(x) may be ill-conditioned there; override _solve with a "
                "direct method",
            )
        except NotPositiveDefiniteError as error:
            raise OutsideDomainError(
                f"metric G(x) is not positive-definite at x = {describe_point(x[error.index])} "
                f"(batch index {error.index}; conjugate gradient met vᵀ G v ≤ 0)"
            ) from None
        return result.solution

    def _inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u * self._apply(x, v)).sum(-1)

    def _acceleration(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Matrix-free −G⁻¹ Γ♭(v, v): one JVP and one VJP of y ↦ G(y) v, then ``_solve``.

        Γ♭(v, v)_l = (∂_v G v)_l − ½ ∂_l (vᵀ G v); the second term is the VJP of
        y ↦ G(y) v with cotangent v. No d×d×d tensor, and no d×d matrix unless
        ``_apply`` forms one.
        """
        # contiguous: forward-mode AD refuses the overlapping memory of expanded (stride-0) tensors
        x, v = (t.contiguous() for t in torch.broadcast_tensors(x, v))

        def apply_v(y: torch.Tensor) -> torch.Tensor:
            return self._apply(y, v)

        _, derivative = jvp(apply_v, (x,), (v,))
        _, pullback = vjp(apply_v, x)
        (grad_quadratic,) = pullback(v)
        return -self._solve(x, derivative - 0.5 * grad_quadratic)

    def _low_rank(self, x: torch.Tensor) -> tuple[float, torch.Tensor] | None:
        """``(alpha, U)`` with G(x) = alpha·I + Uᵀ U, U (..., r, d); ``None`` if the metric has no such form."""
        return None

    def _check_domain(self, x: torch.Tensor, name: str) -> None:
        """Default domain check, raising :class:`OutsideDomainError`.

        For d ≤ ``MAX_DENSE_DOMAIN_CHECK``: G(x) built densely is finite,
        symmetric and positive-definite (Cholesky). Above, without a d×d matrix,
        only necessary conditions: G(x) 1 is finite and 1ᵀ G(x) 1 > 0 (a
        subclass with a complete matrix-free test overrides this).
        """
        if self.dim <= MAX_DENSE_DOMAIN_CHECK:
            check_spd(self._matrix(x), x, name)
            return
        ones = torch.ones_like(x)
        product = self._apply(x, ones)
        bad = ~(torch.isfinite(product).all(-1) & ((ones * product).sum(-1) > 0))
        if bool(bad.any()):
            index = _first_bad(bad)
            raise OutsideDomainError(
                f"{name} = {describe_point(_point_at(x, bad.shape, index))} (batch index {index}) is outside the "
                f"domain of {self!r}: G({name}) 1 is not finite or 1ᵀ G({name}) 1 ≤ 0"
            )

    def _christoffel(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-1]
        flat = x.reshape(-1, self.dim)
        G = self._matrix(flat)
        dG = self._matrix_derivatives(flat)  # dG[b, l, j, i] = ∂_i G_lj
        lowered = 0.5 * (dG.permute(0, 1, 3, 2) + dG - dG.permute(0, 3, 2, 1))  # Γ_l,ij
        G_inv = torch.cholesky_inverse(cholesky_checked(G, flat))
        gamma = torch.einsum("bkl,blij->bkij", G_inv, lowered)
        return gamma.reshape(*batch, self.dim, self.dim, self.dim)

    def _matrix_derivatives(self, x: torch.Tensor) -> torch.Tensor:
        """∂_i G_lj at points x (B, d) as (B, d, d, d), last index i.

        One JVP per coordinate direction, each for the whole batch at once (points
        are independent). No vmap, so metrics that draw random samples work too.
        """
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        columns = [jvp(self._matrix, (x,), (eye[i].expand_as(x),))[1] for i in range(self.dim)]
        return torch.stack(columns, dim=-1)

    def _check(self, **tensors: torch.Tensor) -> None:
        names = list(tensors)
        for name in names:
            check_points(tensors[name], self.dim, name)
        for name in names[1:]:
            check_same_shape(tensors[names[0]], tensors[name], names[0], name)

    def _finite(self, result: torch.Tensor, x: torch.Tensor, what: str) -> torch.Tensor:
        """Return ``result``; if it holds NaN/Inf, raise the domain error at x if there is one, else warn."""
        if not bool(torch.isfinite(result).all()):
            self.check_domain(x)
            warnings.warn(f"{what} is not finite although x is inside the domain (overflow?)", RuntimeWarning,
                          stacklevel=3)
        return result

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"


def dense_acceleration(
    metric: Metric,
    x: torch.Tensor,
    v: torch.Tensor,
    checked: bool = False,
    again: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """−G⁻¹ Γ♭(v, v) for a dense metric: one JVP and one VJP of ``metric._matrix``, one Cholesky solve.

    Γ♭(v, v)_l = (∂_v G v)_l − ½ ∂_l (vᵀ G v); no d×d×d tensor is formed.
    ``checked``: ``metric._matrix`` already verifies that G is positive-definite.
    ``again``: G(x) without that verification, for the VJP's second evaluation
    at the same points (default ``metric._matrix``).
    """
    x, v = (t.contiguous() for t in torch.broadcast_tensors(x, v))
    G, dG_v = jvp(metric._matrix, (x,), (v,))
    _, pullback = vjp(again if again is not None else metric._matrix, x)
    (grad_quadratic,) = pullback(v.unsqueeze(-1) * v.unsqueeze(-2))
    lowered = (dG_v @ v.unsqueeze(-1)).squeeze(-1) - 0.5 * grad_quadratic
    return -solve_spd(G, lowered, x, checked)


def describe_point(x: torch.Tensor) -> str:
    """A short text for a point (d,) or the first point of a batch (..., d): all coordinates up to d = 8."""
    point = x.detach().reshape(-1, x.shape[-1])[0].cpu() if x.ndim > 1 else x.detach().cpu()
    values = point.tolist()
    if len(values) <= 8:
        return str(values)
    shown = ", ".join(f"{v:.6g}" for v in values[:4])
    return f"[{shown}, …, {values[-1]:.6g}] (d = {len(values)})"


def _first_bad(mask: torch.Tensor) -> tuple[int, ...]:
    return tuple(mask.nonzero()[0].tolist()) if mask.ndim else ()


def _point_at(x: torch.Tensor, batch_shape: torch.Size, index: tuple[int, ...]) -> torch.Tensor:
    return x.expand(*batch_shape, x.shape[-1])[index] if batch_shape else x


def check_spd(G: torch.Tensor, x: torch.Tensor, name: str = "x") -> None:
    """Check G (..., d, d) is finite, symmetric and positive-definite at every point.

    Symmetric means max |G − Gᵀ| ≤ tol · max |G| per point, with tol = 1e-8, or
    100 machine epsilons in a dtype where that is larger (1.2e-5 in float32);
    positive-definite means a Cholesky factorisation succeeds.

    The checks run on G's values only: under ``torch.func.jvp``/``vjp`` (and
    vmap over tangents) the primal is inspected outside the transforms, so a
    check costs a few plain operations and one host synchronisation whatever
    the solver differentiates. The :class:`OutsideDomainError` names ``name`` and
    the first point x (..., d) where a check fails.
    """
    values = _values(G)
    tol = max(1e-8, 100 * torch.finfo(G.dtype).eps)
    finite = torch.isfinite(values).all(-1).all(-1)
    asym = (values - values.mT).abs().amax(dim=(-1, -2))
    asymmetric = asym > tol * values.abs().amax(dim=(-1, -2)).clamp_min(torch.finfo(G.dtype).tiny)
    indefinite = ~_positive_definite(values)
    if not bool((~finite | asymmetric | indefinite).any()):
        return
    batch = G.shape[:-2]
    for bad, problem in ((~finite, "contains NaN or Inf"), (asymmetric, "is not symmetric"),
                         (indefinite, "is not positive-definite")):
        if bool(bad.any()):
            index = _first_bad(bad)
            extra = f"; max |G − Gᵀ| = {float(asym[index]):.3e}" if problem == "is not symmetric" else ""
            raise OutsideDomainError(
                f"metric matrix G(x) {problem} at {name} = {describe_point(_point_at(x, batch, index))} "
                f"(batch index {index}{extra}): {name} is outside the metric's domain (a Riemannian metric needs "
                "a finite, symmetric, positive-definite G)"
            )


def _positive_definite(G: torch.Tensor) -> torch.Tensor:
    """(...,) whether symmetric G (..., d, d) is positive-definite.

    d <= 3: Sylvester's criterion (leading principal minors > 0), a few
    elementwise operations; batched LAPACK Cholesky costs ~0.2 µs per small
    matrix, which dominated the check in the collocation solver's inner loop.
    Above: a Cholesky factorisation succeeds.
    """
    d = G.shape[-1]
    if d > 3:
        return torch.linalg.cholesky_ex(G)[1] == 0
    a = G[..., 0, 0]
    if d == 1:
        return a > 0
    minor = a * G[..., 1, 1] - G[..., 0, 1] * G[..., 1, 0]
    if d == 2:
        return (a > 0) & (minor > 0)
    return (a > 0) & (minor > 0) & (torch.linalg.det(G) > 0)


def _values(t: torch.Tensor) -> torch.Tensor:
    """The values of t outside autograd and torch.func's differentiation levels (vmap levels are kept)."""
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(t) and not functorch.is_batchedtensor(t):
        t = functorch.get_unwrapped(t)
    return t.detach()


def cholesky_checked(G: torch.Tensor, x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Cholesky factor of G (..., d, d); a ``ValueError`` naming the first point where G is not positive-definite."""
    L, info = torch.linalg.cholesky_ex(G)
    if bool((info != 0).any()):
        index = _first_bad(info != 0)
        raise OutsideDomainError(
            f"metric matrix G(x) is not positive-definite at {name} = "
            f"{describe_point(_point_at(x, info.shape, index))} (batch index {index}); a Riemannian metric needs a "
            "symmetric positive-definite G"
        )
    return L


def solve_spd(G: torch.Tensor, b: torch.Tensor, x: torch.Tensor, checked: bool = False) -> torch.Tensor:
    """Solve G y = b for symmetric positive-definite G (..., d, d), b (..., d).

    A Cholesky factorisation G = L Lᵀ, then two triangular solves; unless
    ``checked`` (G already passed :func:`check_spd`), positive-definiteness is
    verified on the way. Not ``cholesky_solve``: in torch 2.13 its forward-mode
    derivative is wrong for non-diagonal factors (pytorch#196694), and the
    geodesic solvers take JVPs through this function. Not ``torch.linalg.solve``
    either: torch 2.13's batched CPU LU corrupts its pivots for d above 128 when
    it runs on several threads.
    """
    L = torch.linalg.cholesky_ex(G)[0] if checked else cholesky_checked(G, x)
    y = torch.linalg.solve_triangular(L, b.unsqueeze(-1), upper=False)
    return torch.linalg.solve_triangular(L.mT, y, upper=True).squeeze(-1)
