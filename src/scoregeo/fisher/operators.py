"""Curvature matrices as linear operators on parameter vectors.

A ``Curvature`` is a symmetric positive semi-definite P×P matrix F over the
package's parameter vector (``model.parameters()`` that require grad, flattened
and concatenated). Every structure offers the same interface:

- ``F.dense()`` → (P, P); ``F.diag()`` → (P,); ``F.trace()`` → scalar;
- ``F.mv(v)`` and ``F @ v`` for v of shape (P,) or (P, K);
- ``F.solve(v, damping)`` → (F + damping·I)⁻¹ v, damping > 0;
- ``F.shape`` = (P, P), ``F.size`` = P, ``F.dtype``, ``F.device``.

Subclasses: ``DenseCurvature`` (a stored matrix; Cholesky solves),
``DiagCurvature`` (a stored diagonal), ``ImplicitCurvature`` (matrix-free
products with a model's generalised Gauss–Newton form Σ_n J_nᵀ M_n J_n; conjugate
gradient solves). A subclass needs only ``mv`` (via ``_matmat``) and the
constructor's size; ``dense``, ``diag``, ``trace`` and ``solve`` have generic
(slower) defaults.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from torch.func import functional_call, jvp, vmap

from ..linalg import conjugate_gradient
from .likelihoods import Likelihood
from .scores import _flatten, _iter_factor_rows, _unflatten

__all__ = ["Curvature", "DenseCurvature", "DiagCurvature", "ImplicitCurvature", "OutputMetric", "MAX_DENSE_SIZE"]

# Largest P for which ``fim(..., structure="dense")`` builds a P×P matrix
# (20000² float64 entries are 3.2 GB). Module constant: tests monkeypatch it.
MAX_DENSE_SIZE = 20000

# Columns handled at once by the generic dense() and by vmapped implicit products.
_COLUMN_CHUNK = 64


def _check_damping(damping) -> float:
    if isinstance(damping, torch.Tensor) and damping.numel() == 1:
        damping = damping.item()
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not math.isfinite(damping) or damping <= 0:
        raise ValueError(
            f"damping must be a finite number > 0 (the solve is (F + damping·I)⁻¹ v; F alone is usually "
            f"singular), got {damping!r}"
        )
    return float(damping)


class Curvature:
    """A symmetric PSD P×P curvature matrix F acting on parameter vectors (see module docstring)."""

    def __init__(self, size: int, dtype: torch.dtype, device: torch.device | str | None = None):
        self._size = int(size)
        self._dtype = dtype
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self.layout: tuple[tuple[str, tuple[int, ...]], ...] | None = None
        """(name, shape) of each parameter block in the vector's order, as ``fim`` records it; None when
        unknown (a curvature built by hand). Uses that pair F with a model check it (``ewc_penalty``)."""

    # -- metadata -----------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """P, the number of parameters."""
        return self._size

    @property
    def shape(self) -> tuple[int, int]:
        return (self._size, self._size)

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, dtype={self.dtype})"

    # -- products -----------------------------------------------------------------------------
    def _check_vector(self, v, name: str = "v") -> tuple[torch.Tensor, bool]:
        """Return v as (P, K) and whether it was a vector (P,)."""
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape ({self.size},) or ({self.size}, K)")
        if v.ndim not in (1, 2) or v.shape[0] != self.size:
            raise ValueError(f"{name} must have shape ({self.size},) or ({self.size}, K), got {tuple(v.shape)}")
        if not v.is_floating_point():
            raise ValueError(f"{name} must be floating point, got dtype {v.dtype}")
        return (v.unsqueeze(1), True) if v.ndim == 1 else (v, False)

    def _matmat(self, m: torch.Tensor) -> torch.Tensor:
        """F m for m (P, K) → (P, K). Subclasses implement this."""
        raise NotImplementedError

    def mv(self, v: torch.Tensor) -> torch.Tensor:
        """F v for v (P,) → (P,), or F V for V (P, K) → (P, K)."""
        m, was_vector = self._check_vector(v)
        out = self._matmat(m.to(dtype=self.dtype, device=self.device))
        return out.squeeze(1) if was_vector else out

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        return self.mv(v)

    # -- generic defaults ---------------------------------------------------------------------
    def dense(self) -> torch.Tensor:
        """The P×P matrix, built from P products F e_i (P·K columns at a time)."""
        eye = torch.eye(self.size, dtype=self.dtype, device=self.device)
        cols = [self._matmat(eye[:, i : i + _COLUMN_CHUNK]) for i in range(0, self.size, _COLUMN_CHUNK)]
        dense = torch.cat(cols, dim=1)
        return (dense + dense.T) / 2

    def diag(self) -> torch.Tensor:
        """The diagonal (P,) (default: from ``dense()``)."""
        return self.dense().diagonal().clone()

    def trace(self) -> torch.Tensor:
        """tr F (default: the sum of ``diag()``)."""
        return self.diag().sum()

    def solve(self, v: torch.Tensor, damping: float, *, rtol: float | None = None, max_iter: int | None = None):
        """(F + damping·I)⁻¹ v for v (P,) or (P, K), by conjugate gradient (default).

        Args:
            v: right-hand side(s).
            damping: λ > 0 (F itself is typically singular).
            rtol: stop when ‖v − (F + λI) x‖ ≤ rtol·‖v‖ for every column
                (default 1e-10 in float64, 1e-5 in float32).
            max_iter: iteration cap (default min(2P + 100, 10000)).

        Emits a ``RuntimeWarning`` (with the residual reached) when the tolerance
        is not met, so an inexact answer is never returned silently.
        """
        damping = _check_damping(damping)
        b, was_vector = self._check_vector(v)
        b = b.to(dtype=self.dtype, device=self.device)
        x = conjugate_gradient(
            lambda m: self._matmat(m) + damping * m, b, dim=0, rtol=rtol, max_iter=max_iter,
            hint="raise max_iter or damping, or use structure='dense'",
        ).solution
        return x.squeeze(1) if was_vector else x


class DenseCurvature(Curvature):
    """A stored symmetric P×P matrix. ``solve`` uses a Cholesky factorisation of F + λI."""

    def __init__(self, matrix: torch.Tensor):
        if not isinstance(matrix, torch.Tensor) or matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            shape = tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__
            raise ValueError(f"matrix must be a square (P, P) tensor, got {shape}")
        super().__init__(matrix.shape[0], matrix.dtype, matrix.device)
        self.matrix = matrix

    def _matmat(self, m):
        return self.matrix @ m

    def dense(self):
        return self.matrix

    def diag(self):
        return self.matrix.diagonal().clone()

    def trace(self):
        return self.matrix.diagonal().sum()

    def solve(self, v, damping, **_ignored):
        """(F + damping·I)⁻¹ v by Cholesky (exact up to round-off); damping > 0."""
        damping = _check_damping(damping)
        b, was_vector = self._check_vector(v)
        a = self.matrix + damping * torch.eye(self.size, dtype=self.dtype, device=self.device)
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info) != 0:
            raise ValueError(
                "F + damping·I is not positive definite (Cholesky failed): the matrix is not PSD or damping is "
                "too small for its round-off"
            )
        x = torch.cholesky_solve(b.to(dtype=self.dtype, device=self.device), chol)
        return x.squeeze(1) if was_vector else x


class DiagCurvature(Curvature):
    """A diagonal matrix diag(d): ``mv`` is elementwise, ``dense`` is ``torch.diag(d)``."""

    def __init__(self, diagonal: torch.Tensor):
        if not isinstance(diagonal, torch.Tensor) or diagonal.ndim != 1:
            shape = tuple(diagonal.shape) if isinstance(diagonal, torch.Tensor) else type(diagonal).__name__
            raise ValueError(f"diagonal must be a (P,) tensor, got {shape}")
        super().__init__(diagonal.shape[0], diagonal.dtype, diagonal.device)
        self.diagonal = diagonal

    def _matmat(self, m):
        return self.diagonal.unsqueeze(1) * m

    def dense(self):
        return torch.diag(self.diagonal)

    def diag(self):
        return self.diagonal.clone()

    def trace(self):
        return self.diagonal.sum()

    def solve(self, v, damping, **_ignored):
        """(diag(d) + damping·I)⁻¹ v, elementwise; damping > 0."""
        damping = _check_damping(damping)
        b, was_vector = self._check_vector(v)
        x = b.to(dtype=self.dtype, device=self.device) / (self.diagonal.unsqueeze(1) + damping)
        return x.squeeze(1) if was_vector else x


class OutputMetric:
    """The per-example output-space matrices M_n (C×C) of a Gauss–Newton form F = Σ_n J_nᵀ M_n J_n.

    Two kinds:

    - ``OutputMetric.true(likelihood, output)``: M_n = Λ(f_n), the likelihood's
      Fisher information in its output (exact expectation over y ~ p(y|f_n)).
    - ``OutputMetric.sampled(residuals)``: M_n = R_nᵀ R_n from rows R_n (K, C),
      e.g. R_nk = ∇_f log p(y_nk | f_n)/√K for K targets per example; then
      J_nᵀ M_n J_n = (1/K) Σ_k g_nk g_nkᵀ with the Fisher scores g_nk = J_nᵀ ∇_f log p(y_nk|f_n).

    ``mm`` multiplies by M_n (matrix-free products); ``factor`` gives B_n with
    B_nᵀ B_n = M_n (dense and diagonal builds, from the rows B_n J_n).
    """

    def __init__(self, output: torch.Tensor, likelihood: Likelihood | None = None, residuals: torch.Tensor | None = None):
        self.output = output
        self.likelihood = likelihood
        self.residuals = residuals

    @classmethod
    def true(cls, likelihood: Likelihood, output: torch.Tensor) -> "OutputMetric":
        return cls(output.detach(), likelihood=likelihood)

    @classmethod
    def sampled(cls, residuals: torch.Tensor) -> "OutputMetric":
        if residuals.ndim != 3:
            raise ValueError(f"residuals must have shape (N, K, C), got {tuple(residuals.shape)}")
        return cls(None, residuals=residuals.detach())

    def mm(self, m: torch.Tensor) -> torch.Tensor:
        """M_n m_n for every example: (N, C, ...) → (N, C, ...)."""
        if self.likelihood is not None:
            return self.likelihood.precision_mm(self.output, m)
        r = self.residuals  # (N, K, C)
        rm = torch.einsum("nkc,nc...->nk...", r, m)
        return torch.einsum("nkc,nk...->nc...", r, rm)

    def factor(self) -> torch.Tensor:
        """B (N, K, C) with B_nᵀ B_n = M_n: the likelihood's ``precision_factor`` or the residual rows."""
        if self.likelihood is not None:
            return self.likelihood.precision_factor(self.output)
        return self.residuals


def _gram(chunks, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Σ rowsᵀ rows (P, P), exactly symmetric, over an iterable of row blocks (R, P).

    torch has no symmetric rank-k update (BLAS syrk), so the columns are split into
    k ≤ 4 blocks (≥ 128 columns each) and only the block products on and below the
    diagonal are computed: (k + 1)/2k of a full product's flops (5/8 for k = 4; measured
    0.65× the time of one rowsᵀ rows at P = 2922). The upper blocks are then copied
    from the lower ones. (SciPy's BLAS syrk was faster alone, but half as fast when
    interleaved with torch ops, whose OpenMP threads keep spinning on the same cores.)
    """
    k = max(1, min(4, size // 128))
    bounds = [round(i * size / k) for i in range(k + 1)]
    spans = list(zip(bounds, bounds[1:]))
    out = torch.zeros(size, size, dtype=dtype, device=device)
    for rows in chunks:
        for i, (r0, r1) in enumerate(spans):
            for c0, c1 in spans[: i + 1]:
                out[r0:r1, c0:c1].addmm_(rows[:, r0:r1].T, rows[:, c0:c1])
    for i, (r0, r1) in enumerate(spans):
        block = out[r0:r1, r0:r1]
        block.copy_(block.tril() + block.tril(-1).mT)
        for c0, c1 in spans[:i]:
            out[c0:c1, r0:r1] = out[r0:r1, c0:c1].mT
    return out


def _ggn_dense(model: nn.Module, params, inputs: torch.Tensor, metric: OutputMetric) -> torch.Tensor:
    """Σ_n J_nᵀ M_n J_n = Σ_n (B_n J_n)ᵀ (B_n J_n) (P, P), from chunks of factor rows B_n J_n."""
    size = sum(p.numel() for p in params.values())
    first = next(iter(params.values()))
    chunks = (rows.reshape(-1, size) for _, rows in _iter_factor_rows(model, params, inputs, metric.factor()))
    return _gram(chunks, size, first.dtype, first.device)


def _ggn_diag(model: nn.Module, params, inputs: torch.Tensor, metric: OutputMetric) -> torch.Tensor:
    """diag Σ_n J_nᵀ B_nᵀ B_n J_n = Σ_n Σ_k ((B_n J_n)[k, :])² (P,), never forming P×P."""
    size = sum(p.numel() for p in params.values())
    first = next(iter(params.values()))
    out = torch.zeros(size, dtype=first.dtype, device=first.device)
    for _, rows in _iter_factor_rows(model, params, inputs, metric.factor()):
        out += (rows**2).sum((0, 1))
    return out


class ImplicitCurvature(Curvature):
    """Matrix-free F = scale · Σ_n J_nᵀ M_n J_n for a model on a batch of inputs.

    ``F v`` costs one product u = J v, the output-space product M u, and one
    reverse-mode product Jᵀ(M u) (``torch.autograd.grad`` through the graph of one
    forward pass, built once and kept). Nothing of size P×P or N×P is stored. J v
    is computed one of two ways (``product``), which give the same result up to
    float rounding:

    - ``"vjp"`` (the "transpose trick"): J v is the vector-Jacobian product of
      u ↦ Jᵀu (linear, with Jacobian J) at the cotangent v. The graph of Jᵀu is
      built once with the operator (one backward pass with ``create_graph``) and
      reused, so no product re-runs the forward pass: about twice as fast as
      ``"jvp"`` on MLPs.
    - ``"jvp"``: forward-mode ``torch.func.jvp`` through the whole batch, which
      re-runs the forward pass on every product. Used for models with
      convolutions, whose double backward is slow (measured 3.0 → 5.2 ms per
      product with ``"vjp"`` on a small CNN).

    The default ``product="auto"`` picks ``"jvp"`` if the model contains any
    ``nn.Conv1d/2d/3d`` or ``nn.ConvTranspose*`` module (``torch.nn.modules.conv._ConvNd``)
    and ``"vjp"`` otherwise — a fixed rule, not a timing, so the choice is
    deterministic.

    For the true Fisher M_n = Λ(f_n) (exact expectation). For the Monte Carlo and
    the empirical Fisher, M_n = (1/K) Σ_k r_nk r_nkᵀ with r_nk = ∇_f log p(y_nk|f_n),
    so that F v = Σ_n (1/K) Σ_k g_nk (g_nkᵀ v) = Gᵀ(G v) for the per-example score
    matrix G (rows g_nk = J_nᵀ r_nk): the same matrix, computed through the
    output space.

    Several columns (``F @ V``) go through the same graphs at once
    (``is_grads_batched``), ``_COLUMN_CHUNK`` columns at a time.

    ``diag()`` is exact, from the rows B_n J_n of a factor of M_n, in chunks (K
    backward passes per example, no P×P). ``dense()`` applies F to the P unit vectors (P/64
    batched products): only for moderate P. ``solve`` is conjugate gradient.

    The parameters are copied at construction, so F is the curvature at those
    values even if the model is updated afterwards.

    Args:
        model: maps inputs (N, ...) to outputs (N, C), examples independent.
        inputs: (N, ...).
        metric: the ``OutputMetric`` M_n.
        scale: multiplies F (1/N for ``reduction="mean"``).
        product: how J v is computed: "auto" (default), "vjp" or "jvp" (see above).
    """

    PRODUCTS = ("auto", "vjp", "jvp")

    def __init__(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        metric: OutputMetric,
        scale: float = 1.0,
        product: str = "auto",
    ):
        if product not in self.PRODUCTS:
            raise ValueError(f"product must be one of {self.PRODUCTS}, got {product!r}")
        if product == "auto":
            has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
            product = "jvp" if has_conv else "vjp"
        # a snapshot: F stays the curvature at the parameters it was built at, even if the
        # model is trained in place afterwards (buffers are read live from the model)
        params = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        if not params:
            raise ValueError("the model has no parameter that requires grad")
        first = next(iter(params.values()))
        super().__init__(sum(p.numel() for p in params.values()), first.dtype, first.device)
        self.model = model
        self.inputs = inputs
        self.metric = metric
        self.scale = float(scale)
        self._params = params
        self.product = product
        self._leaves = None  # the parameters as leaves of the kept graph
        self._output = None  # the model output on that graph
        self._cotangent = None  # u, and Jᵀu = ∂(uᵀ f)/∂θ as a graph in u (product="vjp")
        self._transposed = None

    def _f(self, params):
        return functional_call(self.model, params, (self.inputs,))

    def _prepare(self):
        """Build (once) the graph of the forward pass, and for product="vjp" the graph of u ↦ Jᵀu on it.

        Returns the model output of that forward pass, detached (``fim`` reuses it
        instead of a separate forward), or None if the graphs were already built.
        """
        if self._output is not None:
            return None
        leaves = {name: p.detach().requires_grad_() for name, p in self._params.items()}
        with torch.enable_grad():
            out = self._f(leaves)
            if self.product == "vjp":
                cotangent = torch.zeros_like(out, requires_grad=True)
                grads = torch.autograd.grad(out, list(leaves.values()), cotangent, create_graph=True, allow_unused=True)
                # parameters the output does not depend on contribute nothing to J v
                self._transposed = [(g, name) for g, name in zip(grads, leaves) if g is not None and g.requires_grad]
                self._cotangent = cotangent
        self._leaves, self._output = leaves, out
        return out.detach()

    def _jacobian_product(self, v: dict[str, torch.Tensor], batched: bool) -> torch.Tensor:
        """J v (N, C), or (k, N, C) for ``batched`` tangents v (k, *shape)."""
        if self.product == "jvp":
            single = lambda t: jvp(self._f, (self._params,), (t,))[1]  # noqa: E731
            return vmap(single)(v) if batched else single(v)
        if not self._transposed:
            shape = (next(iter(v.values())).shape[0],) if batched else ()
            return self._output.new_zeros(*shape, *self._output.shape)
        (jv,) = torch.autograd.grad(
            [g for g, _ in self._transposed], self._cotangent, [v[name] for _, name in self._transposed],
            retain_graph=True, is_grads_batched=batched,
        )
        return jv

    def _products(self, columns: torch.Tensor) -> torch.Tensor:
        """F V for V (P, k) with k ≥ 1 columns: (P, k)."""
        self._prepare()
        batched = columns.shape[1] > 1
        v = _unflatten(columns.T if batched else columns[:, 0], self._params)  # (k, *shape) if batched
        jv = self._jacobian_product(v, batched)
        u = self.metric.mm(jv.movedim(0, -1) if batched else jv.unsqueeze(-1))  # (N, C, k)
        grads = torch.autograd.grad(
            self._output, list(self._leaves.values()), u.movedim(-1, 0) if batched else u.squeeze(-1),
            retain_graph=True, is_grads_batched=batched, materialize_grads=True,
        )
        flat = _flatten(dict(zip(self._leaves, grads)), self._params, lead=int(batched))
        return (flat.T if batched else flat.unsqueeze(1)) * self.scale

    def _matmat(self, m):
        return torch.cat([self._products(m[:, i : i + _COLUMN_CHUNK]) for i in range(0, m.shape[1], _COLUMN_CHUNK)],
                         dim=1)

    def dense(self):
        """F as a P×P matrix from P matrix-free products (cost ≈ P/64 batched forward+backward passes)."""
        if self.size > MAX_DENSE_SIZE:
            warnings.warn(
                f"building a dense {self.size}×{self.size} matrix from an implicit curvature "
                f"(more than MAX_DENSE_SIZE={MAX_DENSE_SIZE} parameters): slow and memory-hungry",
                UserWarning,
                stacklevel=2,
            )
        return super().dense()

    def diag(self):
        """The exact diagonal, from per-example Jacobians (chunked; never P×P)."""
        return _ggn_diag(self.model, self._params, self.inputs, self.metric) * self.scale
