"""The base class every metric derives from.

A metric tensor field g on R^d is given by its matrix G(x), shape (..., d, d),
symmetric positive-definite. Everything else (inner products, geodesic
accelerations, Christoffel symbols) has a generic implementation here through
automatic differentiation of ``G``; subclasses override what they can do faster
or more exactly.

Public methods validate their arguments. The underscored methods (``_matrix``,
``_inner``, ``_acceleration``) do the work without validation; subclasses
implement those, and the solvers call them in their inner loops after
validating their own inputs once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch.func import jvp, vjp

from .._checks import check_points, check_same_shape


class Metric(ABC):
    """A Riemannian metric on R^d.

    Subclasses implement ``_matrix`` and may override ``_inner`` and
    ``_acceleration`` with cheaper forms. Conventions: points and tangent vectors
    are (..., d) and broadcast over leading dimensions; Christoffel symbols are
    ``Γ[..., k, i, j] = Γ^k_ij``; ``acceleration(x, v)`` is ẍ = −Γ^k_ij v^i v^j,
    the right-hand side of the geodesic equation.
    """

    def __init__(self, dim: int):
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self._dim = dim

    @property
    def dim(self) -> int:
        """Dimension d of the manifold."""
        return self._dim

    # ----------------------------------------------------------------- public API
    def matrix(self, x: torch.Tensor) -> torch.Tensor:
        """Metric matrix G(x), shape (..., d, d)."""
        self._check(x=x)
        return self._matrix(x)

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """⟨u, v⟩_x = uᵀ G(x) v, shape (...)."""
        self._check(x=x, u=u, v=v)
        return self._inner(x, u, v)

    def norm(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """‖v‖_x = √⟨v, v⟩_x, shape (...)."""
        self._check(x=x, v=v)
        return self._inner(x, v, v).clamp_min(0).sqrt()

    def acceleration(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Geodesic acceleration ẍ = −Γ(v, v) at x with velocity v, shape (..., d)."""
        self._check(x=x, v=v)
        self.check_solvable()
        return self._acceleration(x, v)

    def christoffel(self, x: torch.Tensor) -> torch.Tensor:
        """Dense Christoffel symbols Γ^k_ij, shape (..., d, d, d) (small d only)."""
        self._check(x=x)
        self.check_solvable()
        return self._christoffel(x)

    def check_solvable(self) -> None:
        """Raise ``ValueError`` if geodesics of this metric are not well defined."""

    # ------------------------------------------------------------ implementation
    @abstractmethod
    def _matrix(self, x: torch.Tensor) -> torch.Tensor:
        """G(x), shape (..., d, d); no validation."""

    def _inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        G = self._matrix(x)
        return (u.unsqueeze(-2) @ G @ v.unsqueeze(-1)).squeeze(-1).squeeze(-1)

    def _acceleration(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Generic −G⁻¹ Γ♭(v, v) from one JVP and one VJP of G.

        Γ♭(v, v)_l = (∂_v G v)_l − ½ ∂_l (vᵀ G v), the lowered Christoffel
        contraction; no d×d×d tensor is formed.
        """
        # contiguous: forward-mode AD refuses the overlapping memory of expanded (stride-0) tensors
        x, v = (t.contiguous() for t in torch.broadcast_tensors(x, v))
        G, dG_v = jvp(self._matrix, (x,), (v,))
        _, pullback = vjp(self._matrix, x)
        (grad_quadratic,) = pullback(v.unsqueeze(-1) * v.unsqueeze(-2))
        lowered = (dG_v @ v.unsqueeze(-1)).squeeze(-1) - 0.5 * grad_quadratic
        return -solve_spd(G, lowered, x)

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"


def cholesky_checked(G: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of G (..., d, d); a ``ValueError`` naming the first point where G is not positive-definite."""
    L, info = torch.linalg.cholesky_ex(G)
    if bool((info != 0).any()):
        idx = tuple((info != 0).nonzero()[0].tolist())
        point = x.reshape(*info.shape, x.shape[-1])[idx] if info.ndim else x
        raise ValueError(
            f"metric matrix G(x) is not positive-definite at x = {point.detach().cpu().tolist()} "
            f"(batch index {idx}); a Riemannian metric needs a symmetric positive-definite G"
        )
    return L


def solve_spd(G: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Solve G y = b for symmetric positive-definite G (..., d, d), b (..., d).

    Positive-definiteness is checked by a Cholesky factorisation G = L Lᵀ, then
    two triangular solves. Not ``cholesky_solve``: in torch 2.13 its
    forward-mode derivative is wrong for non-diagonal factors (pytorch#196694),
    and the geodesic solvers take JVPs through this function. Not
    ``torch.linalg.solve`` either: torch 2.13's batched CPU LU corrupts its
    pivots for d above 128 when it runs on several threads.
    """
    L = cholesky_checked(G, x)
    y = torch.linalg.solve_triangular(L, b.unsqueeze(-1), upper=False)
    return torch.linalg.solve_triangular(L.mT, y, upper=True).squeeze(-1)
