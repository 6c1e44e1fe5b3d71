"""The matrix-free metric protocol: apply, solve, inner, norm, acceleration, _low_rank, check_domain.

Oracles, all independent of the metric code under test:
- a dense reference G(x) written out in the test for every metric (the score
  metric's αI + λ s sᵀ built here from the score, the normal family's textbook
  Fisher information, the user function of a MatrixMetric, ...);
- torch.linalg for G v, G⁻¹ b and uᵀ G v;
- the geodesic acceleration −G⁻¹ Γ♭(v, v) from the textbook Christoffel formula
  with ∂G by ``torch.func.jacfwd`` of that dense reference, one point at a time.
Float64 and fixed seeds throughout. Tolerances: the quantities are O(1) and
computed in a few dozen float64 operations, so 1e-10 leaves ~10⁵ ulps of room;
conjugate gradient stops at a relative residual of 1e-10 (its default in
float64) on systems with condition number < 100, hence 1e-8 where CG is used.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.distributions import Normal
from torch.func import jacfwd, jacrev, jvp

import scoregeo as sg
from scoregeo.linalg import CGResult, NotPositiveDefiniteError, conjugate_gradient
from scoregeo.metrics import base as metric_base

F64 = torch.float64


def randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ------------------------------------------------------------------------------------ fields
def mixture(d: int) -> sg.GaussianMixture:
    g = torch.Generator().manual_seed(0)
    means = 1.5 * torch.randn(3, d, generator=g, dtype=F64)
    a = torch.randn(3, d, d, generator=g, dtype=F64)
    covs = a @ a.mT / d + 0.5 * torch.eye(d, dtype=F64)
    return sg.GaussianMixture(means, covs, torch.tensor([0.5, 0.3, 0.2], dtype=F64))


def rotational_field(d: int):
    """s(x) = tanh(W x + b) with non-symmetric W: not a gradient (J ≠ Jᵀ)."""
    g = torch.Generator().manual_seed(1)
    W = torch.randn(d, d, generator=g, dtype=F64) / math.sqrt(d)
    b = torch.randn(d, generator=g, dtype=F64)
    return lambda x: torch.tanh(x @ W.T + b)


def warped(x: torch.Tensor) -> torch.Tensor:
    """An SPD field on R^3: A(x) A(x)ᵀ + (1 + |x|²) I with A nonlinear in x."""
    one, zero = torch.ones_like(x[..., 0]), torch.zeros_like(x[..., 0])
    A = torch.stack(
        [
            torch.stack([torch.sin(x[..., 0]), x[..., 1] * x[..., 2], one], -1),
            torch.stack([x[..., 0] ** 2, torch.cos(x[..., 1]), x[..., 2]], -1),
            torch.stack([zero, torch.exp(0.3 * x[..., 0]), x[..., 1]], -1),
        ],
        -2,
    )
    return A @ A.mT + (1 + (x**2).sum(-1))[..., None, None] * torch.eye(3, dtype=x.dtype)


class ProductOnly(sg.Metric):
    """G(x) = (1 + |x|²) I + a(x) a(x)ᵀ + C with a(x) = sin(W x), given only as the product G(x) v."""

    def __init__(self, d: int = 4):
        super().__init__(d)
        g = torch.Generator().manual_seed(2)
        self.W = torch.randn(d, d, generator=g, dtype=F64)
        B = torch.randn(d, d, generator=g, dtype=F64)
        self.C = B @ B.T / d

    def _apply(self, x, v):
        a = torch.sin(x @ self.W.T)
        return (1 + (x * x).sum(-1, keepdim=True)) * v + (a * v).sum(-1, keepdim=True) * a + v @ self.C

    def dense(self, x):
        a = torch.sin(x @ self.W.T)
        eye = torch.eye(self.dim, dtype=x.dtype)
        return (1 + (x * x).sum(-1))[..., None, None] * eye + a.unsqueeze(-1) * a.unsqueeze(-2) + self.C


class StrictlyMatrixFree(ProductOnly):
    """ProductOnly that fails if anything asks for the d×d matrix."""

    def _matrix(self, x):
        raise AssertionError("the d×d matrix was formed")


def score_reference(score, alpha, lam, d):
    def G(x):
        s = score(x)
        return alpha * torch.eye(d, dtype=x.dtype) + lam * s.unsqueeze(-1) * s.unsqueeze(-2)

    return G


def normal_fisher(theta):
    sigma = theta[..., 1]
    return torch.diag_embed(torch.stack([1 / sigma**2, 2 / sigma**2], -1))


def case(name):
    """(metric, dense reference x ↦ G(x), a batch of points in the domain)."""
    if name == "euclidean":
        return sg.Euclidean(4), lambda x: torch.eye(4, dtype=x.dtype).expand(*x.shape[:-1], 4, 4), randn(5, 4, seed=3)
    if name == "matrix":
        return sg.MatrixMetric(warped, 3), warped, randn(5, 3, seed=4)
    if name.startswith("score"):
        d, alpha, lam = 5, 0.7, 2.5
        if name == "score-exact":
            score = mixture(d).score
        elif name == "score-symmetric":
            score = mixture(d).score
        else:
            score = rotational_field(d)
        metric = sg.ScoreMetric(score, d, lam=lam, alpha=alpha, symmetric_jacobian=name == "score-symmetric")
        return metric, score_reference(score, alpha, lam, d), randn(5, d, seed=5, scale=1.5)
    if name == "fisher-normal":
        metric = sg.FisherRaoMetric(lambda t: Normal(t[..., 0], t[..., 1]), 2)
        theta = torch.stack([randn(5, seed=6), 0.3 + randn(5, seed=7).abs()], -1)
        return metric, normal_fisher, theta
    if name == "product-only":
        metric = ProductOnly()
        return metric, metric.dense, randn(5, 4, seed=8)
    raise KeyError(name)


CASES = ["euclidean", "matrix", "score-exact", "score-symmetric", "score-field", "fisher-normal", "product-only"]


def reference_acceleration(G_fn, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """−Γ^k_ij v^i v^j with Γ = ½ G⁻¹ (∂_i G_lj + ∂_j G_li − ∂_l G_ij), ∂G by jacfwd, point by point."""
    out = []
    for xi, vi in zip(x, v):
        G = G_fn(xi)
        dG = jacfwd(G_fn)(xi)  # dG[l, j, i] = ∂_i G_lj
        lowered = 0.5 * (dG.permute(0, 2, 1) + dG - dG.permute(2, 1, 0))  # [l, i, j]
        gamma = torch.linalg.solve(G, lowered.reshape(len(xi), -1)).reshape(lowered.shape)
        out.append(-torch.einsum("kij,i,j->k", gamma, vi, vi))
    return torch.stack(out)


# ------------------------------------------------------------------ every metric vs dense
@pytest.mark.parametrize("name", CASES)
def test_operators_match_the_dense_reference(name):
    metric, G_fn, x = case(name)
    d = metric.dim
    u, v = randn(*x.shape, seed=10), randn(*x.shape, seed=11)
    G = G_fn(x)
    torch.testing.assert_close(metric.matrix(x), G, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(metric.apply(x, v), (G @ v.unsqueeze(-1)).squeeze(-1), rtol=1e-12, atol=1e-12)
    solve_tol = 1e-8 if name == "product-only" else 1e-10  # CG (see the module docstring) or a direct solve
    torch.testing.assert_close(metric.solve(x, v), torch.linalg.solve(G, v), rtol=solve_tol, atol=solve_tol)
    quadratic = torch.einsum("bi,bij,bj->b", u, G, v)
    torch.testing.assert_close(metric.inner(x, u, v), quadratic, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(metric.norm(x, v), torch.einsum("bi,bij,bj->b", v, G, v).sqrt(), rtol=1e-12, atol=1e-12)
    expected = reference_acceleration(G_fn, x, v)
    if name != "euclidean":
        assert float(expected.abs().max()) > 1e-2  # not a comparison of two near-zero vectors
    torch.testing.assert_close(metric.acceleration(x, v), expected, rtol=solve_tol, atol=solve_tol)
    assert metric.acceleration(x, v).shape == (*x.shape[:-1], d)


@pytest.mark.parametrize("name", CASES)
def test_operators_broadcast_one_point_against_many_vectors(name):
    metric, G_fn, x = case(name)
    v = randn(4, metric.dim, seed=12)
    G = G_fn(x[0])
    torch.testing.assert_close(metric.apply(x[0], v), v @ G.T, rtol=1e-12, atol=1e-12)
    tol = 1e-8 if name == "product-only" else 1e-10
    torch.testing.assert_close(metric.solve(x[0], v), torch.linalg.solve(G, v.T).T, rtol=tol, atol=tol)
    torch.testing.assert_close(metric.acceleration(x[0], v), reference_acceleration(G_fn, x[0].expand_as(v), v),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("name", CASES)
def test_forward_mode_derivative_of_the_acceleration(name):
    """Solvers take JVPs of ``_acceleration``: compare with the JVP of the dense reference acceleration."""
    metric, G_fn, x = case(name)
    v, tx, tv = (randn(*x.shape, seed=s) for s in (13, 14, 15))

    def reference(y, w):
        return reference_acceleration(G_fn, y, w)

    _, expected = jvp(reference, (x, v), (tx, tv))
    _, actual = jvp(metric._acceleration, (x, v), (tx, tv))
    tol = 1e-7 if name == "product-only" else 1e-9  # CG differentiated through its iterations
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


def test_score_acceleration_is_differentiable_by_autograd_and_torch_func():
    """The plain-autograd path (x requiring grad) and the torch.func path give the same Jacobian."""
    metric, G_fn, x = case("score-field")
    v = randn(*x.shape, seed=16)
    by_autograd = torch.autograd.functional.jacobian(lambda y: metric._acceleration(y, v), x[0])
    by_func = jacfwd(lambda y: metric._acceleration(y, v[0]))(x[0])
    by_reference = jacrev(lambda y: reference_acceleration(G_fn, y[None], v[:1])[0])(x[0])
    torch.testing.assert_close(by_autograd[0], by_reference, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(by_func, by_reference, rtol=1e-9, atol=1e-9)


def test_float32_in_float32_out():
    metric = sg.ScoreMetric(lambda x: torch.tanh(x) - x, 5, lam=2.0, symmetric_jacobian=False)
    x32 = randn(3, 5, seed=17).float()
    for out in (metric.apply(x32, x32), metric.solve(x32, x32), metric.acceleration(x32, x32)):
        assert out.dtype == torch.float32


# ----------------------------------------------------------------------- matrix-free defaults
def test_a_metric_given_only_by_products_never_forms_the_matrix():
    metric = StrictlyMatrixFree()
    x, u, v = randn(6, 4, seed=20), randn(6, 4, seed=21), randn(6, 4, seed=22)
    G = metric.dense(x)
    torch.testing.assert_close(metric.inner(x, u, v), torch.einsum("bi,bij,bj->b", u, G, v), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(metric.solve(x, v), torch.linalg.solve(G, v), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(metric.acceleration(x, v), reference_acceleration(metric.dense, x, v), rtol=1e-8,
                               atol=1e-8)


def test_a_metric_must_provide_matrix_or_products():
    class Nothing(sg.Metric):
        pass

    with pytest.raises(TypeError, match="_matrix.*_apply"):
        Nothing(2)


def test_default_matrix_from_products_is_the_dense_matrix():
    metric = ProductOnly()
    x = randn(2, 3, 4, seed=23)
    torch.testing.assert_close(metric.matrix(x), metric.dense(x), rtol=1e-14, atol=1e-14)


def test_product_only_metric_that_is_not_positive_definite_raises_naming_the_point():
    class Indefinite(sg.Metric):
        def _apply(self, x, v):  # diag(1, x_0): indefinite where x_0 < 0
            return torch.stack([v[..., 0], x[..., 0] * v[..., 1]], -1)

    metric = Indefinite(2)
    x = torch.tensor([[1.0, 0.0], [-2.0, 5.0]], dtype=F64)
    with pytest.raises(ValueError, match=r"not positive-definite at x = \[-2.0, 5.0\]"):
        metric.solve(x, torch.ones(2, 2, dtype=F64))


# ---------------------------------------------------------------------------- low rank
@pytest.mark.parametrize("name", ["euclidean", "score-exact", "score-field"])
def test_low_rank_form_reconstructs_the_matrix(name):
    metric, G_fn, x = case(name)
    alpha, U = metric._low_rank(x)
    assert isinstance(alpha, float)
    assert U.shape[:-2] == x.shape[:-1] and U.shape[-1] == metric.dim
    eye = torch.eye(metric.dim, dtype=F64)
    torch.testing.assert_close(alpha * eye + U.mT @ U, G_fn(x), rtol=1e-13, atol=1e-13)


def test_low_rank_shapes_and_absence():
    _, U = sg.Euclidean(3)._low_rank(torch.zeros(2, 5, 3, dtype=F64))
    assert U.shape == (2, 5, 0, 3)
    metric, _, x = case("score-field")
    assert metric._low_rank(x)[1].shape == (5, 1, 5)
    for name in ("matrix", "fisher-normal", "product-only"):
        metric, _, x = case(name)
        assert metric._low_rank(x) is None


# ---------------------------------------------------------------------------- MatrixMetric
NEGATIVE = sg.MatrixMetric(lambda p: -(1 + (p * p).sum(-1))[..., None, None] * torch.eye(2, dtype=p.dtype), 2)
ASYMMETRIC = sg.MatrixMetric(
    lambda p: torch.tensor([[2.0, 0.5], [0.0, 2.0]], dtype=p.dtype) * (1 + (p * p).sum(-1))[..., None, None], 2
)


@pytest.mark.parametrize(
    ("metric", "match"), [(NEGATIVE, "not positive-definite"), (ASYMMETRIC, "not symmetric")], ids=["negative", "asym"]
)
def test_matrix_metric_checks_g_wherever_it_is_used(metric, match):
    x, v = randn(3, 2, seed=30), randn(3, 2, seed=31)
    for call in (
        lambda: metric.matrix(x),
        lambda: metric.apply(x, v),
        lambda: metric.solve(x, v),
        lambda: metric.inner(x, v, v),
        lambda: metric.norm(x, v),
        lambda: metric.acceleration(x, v),
        lambda: metric.christoffel(x),
        lambda: metric.check_domain(x, "x0"),
        lambda: metric._inner(x, v, v),  # the solvers' inner loops too
        lambda: metric._acceleration(x, v),
    ):
        with pytest.raises(ValueError, match=rf"G\(x\) is {match} at x"):
            call()


@pytest.mark.parametrize("metric", [NEGATIVE, ASYMMETRIC], ids=["negative", "asym"])
def test_geodesic_refuses_a_matrix_metric_that_is_not_spd(metric):
    x0, x1 = torch.tensor([0.0, 0.0], dtype=F64), torch.tensor([1.0, 0.5], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"not (positive-definite|symmetric)"):
            sg.geodesic(metric, x0, x1)


# ---------------------------------------------------------------------------- check_domain
def test_check_domain_accepts_points_inside():
    for name in CASES:
        metric, _, x = case(name)
        metric.check_domain(x, "x0")


def test_check_domain_names_the_argument_and_the_point():
    metric = sg.MatrixMetric(lambda p: p[..., 1, None, None] * torch.eye(2, dtype=p.dtype), 2)  # G = y I: y > 0 only
    x = torch.tensor([[0.5, 1.0], [0.25, -3.0]], dtype=F64)
    with pytest.raises(ValueError, match=r"not positive-definite at x1 = \[0.25, -3.0\] \(batch index \(1,\)\)"):
        metric.check_domain(x, "x1")
    with pytest.raises(ValueError, match="x1 contains NaN"):
        metric.check_domain(torch.tensor([0.0, float("nan")], dtype=F64), "x1")
    nonfinite = sg.MatrixMetric(lambda p: torch.eye(2, dtype=p.dtype) / p[..., 0, None, None], 2)
    with pytest.raises(ValueError, match=r"contains NaN or Inf at x0 = \[0.0, 1.0\]"):
        nonfinite.check_domain(torch.tensor([0.0, 1.0], dtype=F64), "x0")


def test_check_domain_reports_a_family_that_raises():
    def family(t):
        if bool((t[..., 1] <= 0).any()):
            raise RuntimeError("scale must be positive")
        return Normal(t[..., 0], t[..., 1])

    metric = sg.FisherRaoMetric(family, 2)
    metric.check_domain(torch.tensor([0.0, 1.0], dtype=F64))
    with pytest.raises(ValueError, match=r"x0 is outside the domain.*x0 = \[0.0, -1.0\].*RuntimeError: scale must"):
        metric.check_domain(torch.tensor([0.0, -1.0], dtype=F64), "x0")


def test_check_domain_without_a_dense_matrix_above_the_size_limit(monkeypatch):
    class Negative(ProductOnly):
        def _apply(self, x, v):
            return -super()._apply(x, v)

    monkeypatch.setattr(metric_base, "MAX_DENSE_DOMAIN_CHECK", 2)
    ProductOnly().check_domain(randn(3, 4, seed=40))
    with pytest.raises(ValueError, match=r"x0 = .* is outside the domain"):
        Negative().check_domain(randn(3, 4, seed=40), "x0")


def test_euclidean_domain_is_everything_finite():
    sg.Euclidean(3).check_domain(torch.full((2, 3), 1e300, dtype=F64))
    with pytest.raises(ValueError, match="x1 contains NaN"):
        sg.Euclidean(3).check_domain(torch.tensor([0.0, float("inf"), 0.0], dtype=F64), "x1")


# ------------------------------------------------------------------------- bad scores
def nan_beyond_two(x):
    """A score that returns NaN where x_0 > 2 (a learned field evaluated far from its data, say)."""
    return torch.where(x[..., :1] > 2, torch.nan, -x)


def wrong_shape(x):
    return -x[..., :-1]


SCORE_CALLS = {
    "matrix": lambda m, x, v: m.matrix(x),
    "apply": lambda m, x, v: m.apply(x, v),
    "solve": lambda m, x, v: m.solve(x, v),
    "inner": lambda m, x, v: m.inner(x, v, v),
    "norm": lambda m, x, v: m.norm(x, v),
    "acceleration": lambda m, x, v: m.acceleration(x, v),
    "check_domain": lambda m, x, v: m.check_domain(x, "x"),
}


@pytest.mark.parametrize("method", list(SCORE_CALLS))
def test_a_score_returning_nan_raises_naming_the_score_and_the_point(method):
    metric = sg.ScoreMetric(nan_beyond_two, 3, lam=1.0, alpha=1.0)
    x = torch.tensor([[0.0, 1.0, 0.0], [3.0, 1.0, -1.0]], dtype=F64)
    with pytest.raises(ValueError, match=r"score nan_beyond_two returned NaN or Inf at x = \[3.0, 1.0, -1.0\]"):
        SCORE_CALLS[method](metric, x, torch.ones_like(x))


@pytest.mark.parametrize("method", list(SCORE_CALLS))
def test_a_score_of_the_wrong_shape_raises_naming_the_score(method):
    metric = sg.ScoreMetric(wrong_shape, 3)
    x = torch.zeros(2, 3, dtype=F64)
    with pytest.raises(ValueError, match=r"score wrong_shape must map x of shape \(2, 3\) .* got \(2, 2\)"):
        SCORE_CALLS[method](metric, x, torch.ones_like(x))


def test_a_network_score_is_named_by_its_class():
    net = torch.nn.Linear(3, 2).double()
    with pytest.raises(ValueError, match=r"score Linear"):
        sg.ScoreMetric(net, 3).norm(torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64))


# ------------------------------------------------------------------- symmetric Jacobian
def test_symmetric_jacobian_is_read_from_the_score_and_never_guessed():
    field = rotational_field(5)
    assert not sg.ScoreMetric(field, 5).symmetric_jacobian

    def declared(x):
        return field(x)

    declared.symmetric_jacobian = True
    assert sg.ScoreMetric(declared, 5).symmetric_jacobian
    assert not sg.ScoreMetric(declared, 5, symmetric_jacobian=False).symmetric_jacobian
    with pytest.raises(ValueError, match="symmetric_jacobian"):
        sg.ScoreMetric(field, 5, symmetric_jacobian="yes")
    # declared wrongly on a field that is no gradient, the shortcut drops the (J − Jᵀ) v term
    x, v = randn(4, 5, seed=50), randn(4, 5, seed=51)
    exact = sg.ScoreMetric(field, 5, lam=2.0).acceleration(x, v)
    shortcut = sg.ScoreMetric(field, 5, lam=2.0, symmetric_jacobian=True).acceleration(x, v)
    assert float((exact - shortcut).abs().max()) > 1e-2


def test_pure_score_metric_refuses_solve():
    metric = sg.ScoreMetric(mixture(3).score, 3, alpha=0.0)
    with pytest.raises(ValueError, match="alpha=0"):
        metric.solve(torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="alpha=0"):
        metric.check_domain(torch.zeros(3, dtype=F64))


# ------------------------------------------------------------------- conjugate gradient
def spd_batch(n: int, d: int, seed: int, condition: float = 50.0) -> torch.Tensor:
    """n SPD matrices d×d with eigenvalues log-spaced in [1, condition]."""
    Q, _ = torch.linalg.qr(randn(n, d, d, seed=seed))
    eigenvalues = torch.logspace(0, math.log10(condition), d, dtype=F64)
    return Q @ torch.diag_embed(eigenvalues.expand(n, d)) @ Q.mT


def test_conjugate_gradient_solves_batches_in_either_layout():
    A = spd_batch(6, 20, seed=60)
    b = randn(6, 20, seed=61)
    expected = torch.linalg.solve(A, b)
    rows = conjugate_gradient(lambda p: (A @ p.unsqueeze(-1)).squeeze(-1), b, dim=-1)
    assert isinstance(rows, CGResult)
    assert bool(rows.converged.all()) and float(rows.residual.max()) <= 1e-9
    torch.testing.assert_close(rows.solution, expected, rtol=1e-8, atol=1e-8)
    # one matrix, right-hand sides as columns (the Fisher layout)
    columns = conjugate_gradient(lambda p: A[0] @ p, b.T, dim=0)
    torch.testing.assert_close(columns.solution, torch.linalg.solve(A[0], b.T), rtol=1e-8, atol=1e-8)


def test_conjugate_gradient_answer_does_not_depend_on_the_batch():
    easy, hard = spd_batch(1, 20, seed=62, condition=2.0), spd_batch(1, 20, seed=63, condition=1e4)
    b = randn(2, 20, seed=64)

    def solve(A, rhs):
        return conjugate_gradient(lambda p: (A @ p.unsqueeze(-1)).squeeze(-1), rhs).solution

    alone = solve(easy, b[:1])
    together = solve(torch.cat([easy, hard]), b)
    # the easy system stopped on its own: equal up to the rounding of a batched matrix product
    torch.testing.assert_close(together[:1], alone, rtol=1e-14, atol=1e-14)


def test_conjugate_gradient_reports_failures():
    A = spd_batch(2, 30, seed=65, condition=1e3)
    b = randn(2, 30, seed=66)

    def apply(p):
        return (A @ p.unsqueeze(-1)).squeeze(-1)

    with pytest.warns(RuntimeWarning, match="did not converge.*try this"):
        conjugate_gradient(apply, b, max_iter=2, hint="try this")
    with pytest.raises(RuntimeError, match="did not converge"):
        conjugate_gradient(apply, b, max_iter=2, on_failure="raise")
    result = conjugate_gradient(apply, b, max_iter=2, on_failure="ignore")
    assert not bool(result.converged.any()) and result.iterations == 2
    indefinite = A.clone()
    indefinite[1] = -indefinite[1]
    with pytest.raises(NotPositiveDefiniteError, match="not positive definite") as info:
        conjugate_gradient(lambda p: (indefinite @ p.unsqueeze(-1)).squeeze(-1), b)
    assert info.value.index == (1,)
    for kwargs, match in [({"rtol": 0.0}, "rtol"), ({"max_iter": 0}, "max_iter"), ({"on_failure": "x"}, "on_failure")]:
        with pytest.raises(ValueError, match=match):
            conjugate_gradient(apply, b, **kwargs)


def test_conjugate_gradient_of_a_zero_right_hand_side_is_zero():
    A = spd_batch(2, 5, seed=67)
    b = torch.zeros(2, 5, dtype=F64)
    result = conjugate_gradient(lambda p: (A @ p.unsqueeze(-1)).squeeze(-1), b)
    assert torch.equal(result.solution, b) and result.iterations == 0 and bool(result.converged.all())


@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_positive_definite_test_agrees_with_cholesky(d):
    """The small-d shortcut (Sylvester's criterion) against LAPACK Cholesky on definite, indefinite and singular G."""
    from scoregeo.metrics.base import _positive_definite

    gen = torch.Generator().manual_seed(d)
    A = torch.randn(4000, d, d, generator=gen, dtype=torch.float64)
    shift = torch.randn(4000, 1, 1, generator=gen, dtype=torch.float64) * d
    G = A @ A.mT + shift * torch.eye(d, dtype=torch.float64)  # about half of them indefinite
    G[:50] = 0.0  # singular
    expected = torch.linalg.cholesky_ex(G)[1] == 0
    assert 0 < int(expected.sum()) < G.shape[0]
    assert torch.equal(_positive_definite(G), expected)
