"""Curvature against independent closed forms (float64).

Oracles used, none of which goes through scoregeo's Christoffel code:
- graph surfaces: g = αI + λ∇f∇fᵀ = α(I + ∇h∇hᵀ) with h = √(λ/α) f is α times the
  metric induced on the graph z = h(x) in R³, so K = det(∇²h)/(α(1+|∇h|²)²)
  = λ det(∇²f)/(α + λ|∇f|²)² (Gauss's formula for graphs, scaled by 1/α);
- round spheres in stereographic coordinates (K = 1/r², R = d(d−1)/r²), the
  Poincaré half-plane/half-space (K = −1, R = −d(d−1)), products with a line;
- the Fisher–Rao metric of N(μ, σ), diag(1, 2)/σ², a hyperbolic plane of K = −1/2;
- Brioschi's formula for a generic non-diagonal 2-D metric, with the partial
  derivatives of E, F, G by reverse-mode autograd.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, StudentT

import scoregeo as sg
from scoregeo.curvature import gaussian_curvature, ricci_tensor, riemann_tensor, scalar_curvature

DT = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _stereographic_sphere(r: float, d: int) -> sg.MatrixMetric:
    def G(x):
        factor = 4 * r**2 / (1 + (x**2).sum(-1)) ** 2
        return factor[..., None, None] * torch.eye(d, dtype=x.dtype)

    return sg.MatrixMetric(G, d)


def _half_space(d: int) -> sg.MatrixMetric:
    return sg.MatrixMetric(lambda x: x[..., -1, None, None] ** -2 * torch.eye(d, dtype=x.dtype), d)


def _half_space_points(n: int, d: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, d, generator=_gen(seed), dtype=DT)
    x[:, -1] = 0.2 + 2 * torch.rand(n, generator=_gen(seed + 1), dtype=DT)
    return x


# ------------------------------------------------------------------ score metrics
def test_paraboloid_score_metric():
    """Standard normal, α = λ = 1: the paraboloid z = |x|²/2, K = 1/(1 + |x|²)²."""
    metric = sg.ScoreMetric(sg.Gaussian(torch.zeros(2, dtype=DT), torch.eye(2, dtype=DT)).score, 2)
    x = 1.5 * torch.randn(32, 2, generator=_gen(1), dtype=DT)
    expected = 1 / (1 + (x**2).sum(-1)) ** 2
    torch.testing.assert_close(gaussian_curvature(metric, x), expected, **TOL)
    torch.testing.assert_close(scalar_curvature(metric, x), 2 * expected, **TOL)


@pytest.mark.parametrize("alpha, lam", [(1.0, 1.0), (0.5, 2.0), (3.0, 0.25), (1.0, 0.0)])
def test_gaussian_score_metric_graph_formula(alpha, lam):
    """N(μ, Σ): K = λ det(Σ⁻¹) / (α + λ|Σ⁻¹(x − μ)|²)², positive everywhere."""
    mean = torch.tensor([0.5, -1.0], dtype=DT)
    cov = torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=DT)
    metric = sg.ScoreMetric(sg.Gaussian(mean, cov).score, 2, lam=lam, alpha=alpha)
    x = mean + torch.randn(4, 8, 2, generator=_gen(2), dtype=DT)
    precision = torch.linalg.inv(cov)
    s = -(x - mean) @ precision
    expected = lam * torch.linalg.det(precision) / (alpha + lam * (s**2).sum(-1)) ** 2
    K = gaussian_curvature(metric, x)
    assert K.shape == (4, 8)
    torch.testing.assert_close(K, expected, **TOL)


def test_mixture_score_metric_graph_formula():
    """Any exact score in 2-D: K = λ det(∇² log p) / (α + λ|∇ log p|²)²; changes sign between modes."""
    mixture = sg.GaussianMixture(
        torch.tensor([[-1.5, 0.0], [1.5, 0.5]], dtype=DT),
        torch.tensor([[[0.6, 0.2], [0.2, 0.4]], [[0.5, 0.0], [0.0, 0.9]]], dtype=DT),
        torch.tensor([0.4, 0.6], dtype=DT),
    )
    alpha, lam = 0.7, 1.3
    metric = sg.ScoreMetric(mixture.score, 2, lam=lam, alpha=alpha)
    x = torch.randn(16, 2, generator=_gen(3), dtype=DT) * torch.tensor([1.5, 1.0], dtype=DT)
    expected = []
    for point in x:  # reverse-mode Hessian of log p, point by point: independent of the code under test
        p = point.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(mixture.log_prob(p), p, create_graph=True)
        hess = torch.stack([torch.autograd.grad(grad[i], p, retain_graph=True)[0] for i in range(2)])
        grad = grad.detach()
        expected.append(lam * torch.linalg.det(hess) / (alpha + lam * grad @ grad) ** 2)
    expected = torch.stack(expected)
    K = gaussian_curvature(metric, x)
    torch.testing.assert_close(K, expected, **TOL)
    assert (expected > 0).any() and (expected < 0).any()  # the test really probes both signs


def test_score_of_matches_analytic_score():
    gaussian = sg.Gaussian(torch.zeros(2, dtype=DT), torch.tensor([[1.0, 0.3], [0.3, 2.0]], dtype=DT))
    x = torch.randn(6, 2, generator=_gen(4), dtype=DT)
    analytic = gaussian_curvature(sg.ScoreMetric(gaussian.score, 2, lam=2.0), x)
    autograd = gaussian_curvature(sg.ScoreMetric(sg.score_of(gaussian.log_prob), 2, lam=2.0), x)
    torch.testing.assert_close(autograd, analytic, **TOL)


# ------------------------------------------------------------ spheres, hyperbolic
@pytest.mark.parametrize("r", [0.5, 1.0, 2.5])
def test_sphere_gaussian_curvature(r):
    x = torch.randn(10, 2, generator=_gen(5), dtype=DT)
    K = gaussian_curvature(_stereographic_sphere(r, 2), x)
    torch.testing.assert_close(K, torch.full_like(K, 1 / r**2), **TOL)


@pytest.mark.parametrize("r", [0.5, 2.0])
def test_three_sphere_scalar_and_ricci(r):
    metric = _stereographic_sphere(r, 3)
    x = torch.randn(6, 3, generator=_gen(6), dtype=DT)
    R = scalar_curvature(metric, x)
    torch.testing.assert_close(R, torch.full_like(R, 6 / r**2), **TOL)
    # Einstein: Ric = (d − 1)/r² g
    torch.testing.assert_close(ricci_tensor(metric, x), 2 / r**2 * metric.matrix(x), **TOL)


def test_poincare_half_plane():
    x = _half_space_points(12, 2)
    K = gaussian_curvature(_half_space(2), x)
    torch.testing.assert_close(K, torch.full_like(K, -1.0), **TOL)


def test_hyperbolic_half_space_3d():
    x = _half_space_points(6, 3, seed=7)
    R = scalar_curvature(_half_space(3), x)
    torch.testing.assert_close(R, torch.full_like(R, -6.0), **TOL)


def test_sphere_times_line():
    """S²(r) × R in 3-D, a non-conformal metric: R = 2/r²."""
    r = 1.7
    sphere = _stereographic_sphere(r, 2)

    def G(x):
        out = torch.zeros(*x.shape[:-1], 3, 3, dtype=x.dtype)
        out[..., :2, :2] = sphere.fn(x[..., :2])
        out[..., 2, 2] = 1.0 + 0 * x[..., 2]
        return out

    x = torch.randn(5, 3, generator=_gen(8), dtype=DT)
    R = scalar_curvature(sg.MatrixMetric(G, 3), x)
    torch.testing.assert_close(R, torch.full_like(R, 2 / r**2), **TOL)


# ------------------------------------------------------------------- Fisher–Rao
def test_fisher_rao_normal():
    metric = sg.FisherRaoMetric(lambda t: Normal(t[..., 0], t[..., 1]), 2)
    theta = torch.stack(
        [torch.randn(8, generator=_gen(9), dtype=DT), 0.3 + 2 * torch.rand(8, generator=_gen(10), dtype=DT)], -1
    )
    K = gaussian_curvature(metric, theta)
    torch.testing.assert_close(K, torch.full_like(K, -0.5), **TOL)


def test_fisher_rao_monte_carlo_runs_and_is_close():
    """Student-t (no registered KL): Monte Carlo Fisher metric; exact K = −(ν + 3)/(2ν)."""
    nu = 5.0
    metric = sg.FisherRaoMetric(
        lambda t: StudentT(nu, t[..., 0], t[..., 1]), 2, mc_samples=2000, generator=_gen(11)
    )
    theta = torch.tensor([[0.3, 1.2]], dtype=DT)
    K = gaussian_curvature(metric, theta)
    assert torch.isfinite(K).all()
    assert abs(float(K[0]) + (nu + 3) / (2 * nu)) < 0.25
    assert torch.equal(gaussian_curvature(metric, theta), K)  # same samples: deterministic


# --------------------------------------------------------------------- flat space
@pytest.mark.parametrize("d", [1, 2, 3])
def test_euclidean_is_flat(d):
    x = torch.randn(3, 4, d, generator=_gen(12), dtype=DT)
    R = scalar_curvature(sg.Euclidean(d), x)
    assert R.shape == (3, 4)
    assert torch.equal(R, torch.zeros_like(R))


def test_constant_non_diagonal_metric_is_flat():
    A = torch.tensor([[2.0, 0.7, 0.1], [0.7, 1.0, -0.2], [0.1, -0.2, 0.5]], dtype=DT)
    metric = sg.MatrixMetric(lambda x: A.expand(*x.shape[:-1], 3, 3) + 0 * x[..., :1, None], 3)
    x = torch.randn(4, 3, generator=_gen(13), dtype=DT)
    torch.testing.assert_close(riemann_tensor(metric, x), torch.zeros(4, 3, 3, 3, 3, dtype=DT), **TOL)


# ----------------------------------------------------------- Brioschi, symmetries
def _generic_2d(x):
    u, v = x[..., 0], x[..., 1]
    E = 1.5 + torch.sin(u) ** 2 * v**2 + 0.2 * u**2  # E >= 1.5, G >= 2, |F| <= 0.4: positive-definite
    F = 0.3 * torch.cos(u * v) + 0.1 * torch.tanh(u)
    G = 2.0 + torch.exp(0.3 * u) * (1 + 0.2 * v**2)
    return torch.stack([torch.stack([E, F], -1), torch.stack([F, G], -1)], -2)


def _brioschi(point: torch.Tensor) -> torch.Tensor:
    """Brioschi's formula for K from E, F, G and their partials (reverse-mode autograd, one point)."""
    p = point.clone().requires_grad_(True)
    G_mat = _generic_2d(p)
    E, F, G = G_mat[0, 0], G_mat[0, 1], G_mat[1, 1]

    def first(f):
        return torch.autograd.grad(f, p, create_graph=True)[0]

    E_u, E_v = first(E)
    F_u, F_v = first(F)
    G_u, G_v = first(G)
    E_vv = first(E_v)[1]
    F_uv = first(F_u)[1]
    G_uu = first(G_u)[0]
    M1 = torch.stack(
        [
            torch.stack([-E_vv / 2 + F_uv - G_uu / 2, E_u / 2, F_u - E_v / 2]),
            torch.stack([F_v - G_u / 2, E, F]),
            torch.stack([G_v / 2, F, G]),
        ]
    )
    M2 = torch.stack(
        [
            torch.stack([torch.zeros_like(E), E_v / 2, G_u / 2]),
            torch.stack([E_v / 2, E, F]),
            torch.stack([G_u / 2, F, G]),
        ]
    )
    return ((torch.linalg.det(M1) - torch.linalg.det(M2)) / (E * G - F**2) ** 2).detach()


def test_generic_metric_against_brioschi():
    x = torch.randn(10, 2, generator=_gen(14), dtype=DT)
    expected = torch.stack([_brioschi(point) for point in x])
    torch.testing.assert_close(gaussian_curvature(sg.MatrixMetric(_generic_2d, 2), x), expected, **TOL)


def test_riemann_symmetries_generic_3d():
    def G(x):
        a, b, c = x[..., 0], x[..., 1], x[..., 2]
        L = torch.stack(
            [
                torch.stack([1 + 0.2 * a**2, 0 * a, 0 * a], -1),
                torch.stack([torch.sin(b), 1.2 + 0.1 * c**2, 0 * a], -1),
                torch.stack([0.3 * a * c, torch.cos(a + b) * 0.4, 0.8 + 0.1 * b**2], -1),
            ],
            -2,
        )
        return L @ L.transpose(-1, -2)

    metric = sg.MatrixMetric(G, 3)
    x = 0.7 * torch.randn(4, 3, generator=_gen(15), dtype=DT)
    R_up = riemann_tensor(metric, x)
    R = torch.einsum("bar,brsmn->basmn", metric.matrix(x), R_up)  # R_ρσμν
    assert R.abs().max() > 1e-2  # really curved
    zero = torch.zeros_like(R)
    torch.testing.assert_close(R + R.transpose(-1, -2), zero, **TOL)  # μ ↔ ν
    torch.testing.assert_close(R + R.transpose(1, 2), zero, **TOL)  # ρ ↔ σ
    torch.testing.assert_close(R, R.permute(0, 3, 4, 1, 2), **TOL)  # pair symmetry
    bianchi = R + R.permute(0, 1, 3, 4, 2) + R.permute(0, 1, 4, 2, 3)  # R_ρ[σμν] = 0
    torch.testing.assert_close(bianchi, zero, **TOL)
    ricci = ricci_tensor(metric, x)
    torch.testing.assert_close(ricci, ricci.transpose(-1, -2), **TOL)
    torch.testing.assert_close(
        scalar_curvature(metric, x), torch.einsum("bsn,bsn->b", torch.linalg.inv(metric.matrix(x)), ricci), **TOL
    )


# ------------------------------------------------------------ shapes and dtypes
def test_shapes_and_dtype():
    metric = _stereographic_sphere(1.0, 2)
    assert scalar_curvature(metric, torch.zeros(2, dtype=DT)).shape == ()
    assert scalar_curvature(metric, torch.zeros(0, 2, dtype=DT)).shape == (0,)
    assert riemann_tensor(metric, torch.zeros(5, 2, dtype=DT)).shape == (5, 2, 2, 2, 2)
    K32 = gaussian_curvature(metric, torch.randn(3, 2, generator=_gen(16)).float())
    assert K32.dtype == torch.float32
    torch.testing.assert_close(K32, torch.ones(3), rtol=1e-4, atol=1e-4)


def test_public_exports():
    assert sg.scalar_curvature is scalar_curvature
    assert sg.gaussian_curvature is gaussian_curvature
    assert {"scalar_curvature", "gaussian_curvature"} <= set(sg.__all__)


# ---------------------------------------------------------------------- bad input
def test_bad_metric():
    with pytest.raises(ValueError, match="metric must be a scoregeo Metric"):
        scalar_curvature(lambda x: x, torch.zeros(2, dtype=DT))
    with pytest.raises(ValueError, match="metric must be a scoregeo Metric"):
        gaussian_curvature("sphere", torch.zeros(2, dtype=DT))


@pytest.mark.parametrize(
    "x, message",
    [
        ([0.0, 1.0], "x must be a torch.Tensor"),
        (torch.zeros(4, 3, dtype=DT), r"x must have shape \(\.\.\., 2\)"),
        (torch.tensor(1.0, dtype=DT), r"x must have shape \(\.\.\., 2\)"),
        (torch.zeros(4, 2, dtype=torch.int64), "x must be a floating-point tensor"),
        (torch.tensor([[0.0, 1.0], [math.nan, 0.0]], dtype=DT), "x contains NaN or Inf"),
        (torch.tensor([[0.0, math.inf]], dtype=DT), "x contains NaN or Inf"),
    ],
)
def test_bad_points(x, message):
    metric = _stereographic_sphere(1.0, 2)
    for fn in (scalar_curvature, gaussian_curvature, ricci_tensor, riemann_tensor):
        with pytest.raises(ValueError, match=message):
            fn(metric, x)


def test_gaussian_curvature_needs_dim_2():
    with pytest.raises(ValueError, match="2-dimensional.*metric.dim = 3.*scalar_curvature"):
        gaussian_curvature(sg.Euclidean(3), torch.zeros(3, dtype=DT))
    with pytest.raises(ValueError, match="metric.dim = 1"):
        gaussian_curvature(sg.Euclidean(1), torch.zeros(1, dtype=DT))


def test_degenerate_score_metric_refused():
    metric = sg.ScoreMetric(sg.Gaussian(torch.zeros(2, dtype=DT), torch.eye(2, dtype=DT)).score, 2, alpha=0.0)
    with pytest.raises(ValueError, match="alpha=0"):
        scalar_curvature(metric, torch.ones(2, dtype=DT))


def test_not_positive_definite():
    metric = sg.MatrixMetric(lambda x: (1 - (x**2).sum(-1))[..., None, None] * torch.eye(2, dtype=x.dtype), 2)
    with pytest.raises(ValueError, match="not positive-definite"):
        scalar_curvature(metric, torch.tensor([[0.1, 0.2], [2.0, 0.0]], dtype=DT))
