"""The Fisher information of PyTorch models against independent exact oracles (float64).

Oracles, none of which goes through scoregeo.fisher's Jacobian code:
- linear-Gaussian regression: F = X̃ᵀX̃/σ² (X̃ = [X, 1]; parameters weight then bias);
- logistic regression: F = X̃ᵀ diag(p(1−p)) X̃;
- softmax regression on one example: F = (diag(p) − ppᵀ) ⊗ x̃x̃ᵀ, permuted from the
  [W | b] row-major order to the (weight, bias) parameter order;
- the likelihoods' Λ = E_y[∇f log p ∇f log pᵀ] by exact enumeration of y, and their
  log-densities against torch.distributions;
- reparametrisation θ = θ(φ): F_φ = Jᵀ F_θ J with J = ∂θ/∂φ;
- empirical Fisher of linear regression: Σ r_n² x̃x̃ᵀ/σ⁴ (zero at a perfect fit,
  (s²/σ²)·F in expectation under noise of variance s²);
- a Gaussian location family: Fisher information in μ = E[s sᵀ] of the Stein score
  = Σ⁻¹ (the Fisher score of μ is minus the Stein score);
- per-example gradients of hand-written log-likelihoods with torch.autograd.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import scoregeo as sg
import scoregeo.fisher as sf
from scoregeo.fisher import operators

DT = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=_gen(seed), dtype=DT)


def _linear(d_in, d_out, seed=0, scale=1.0):
    torch.manual_seed(seed)
    layer = nn.Linear(d_in, d_out).to(DT)
    with torch.no_grad():
        layer.weight.mul_(scale)
        layer.bias.mul_(scale)
    return layer


def _mlp(d_in=4, hidden=6, c=3, seed=0, last_scale=1.0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, c)).to(DT)
    with torch.no_grad():
        model[2].weight.mul_(last_scale)
        model[2].bias.mul_(last_scale)
    return model


def _tilde(x):
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)


def _assert_close(a, b, tol=1e-12, what=""):
    err = float((a - b).abs().max())
    ref = max(1.0, float(b.abs().max()))
    assert err <= tol * ref, f"{what}: max abs error {err:.3e} > {tol:.0e} × {ref:.3e}"


# ------------------------------------------------------------------------------------------------
# Exact oracles for the true Fisher
# ------------------------------------------------------------------------------------------------


def test_linear_gaussian_regression_every_structure():
    n, d, var = 25, 3, 0.3
    x = _randn(n, d)
    model = _linear(d, 1)
    xt = _tilde(x)
    exact = xt.T @ xt / var  # weight (1, d) then bias (1,): the order of X̃'s columns

    dense = sf.fim(model, x, "gaussian", variance=var)
    _assert_close(dense.dense(), exact, what="dense")
    diag = sf.fim(model, x, "gaussian", variance=var, structure="diag")
    _assert_close(diag.diag(), exact.diagonal(), what="diag")
    _assert_close(diag.dense(), torch.diag(exact.diagonal()), what="diag.dense")
    implicit = sf.fim(model, x, "gaussian", variance=var, structure="implicit")
    v = _randn(d + 1, seed=1)
    _assert_close(implicit.mv(v), exact @ v, what="implicit mv")
    _assert_close(implicit @ v, exact @ v, what="implicit @")
    _assert_close(implicit.dense(), exact, what="implicit dense")
    _assert_close(implicit.diag(), exact.diagonal(), what="implicit diag")
    _assert_close(dense.trace(), exact.trace(), what="trace")
    for structure in ("dense", "diag", "implicit"):
        mean = sf.fim(model, x, sf.Gaussian(var), structure=structure, reduction="mean")
        ref = exact / n if structure != "diag" else torch.diag(exact.diagonal() / n)
        _assert_close(mean.dense(), ref, what=f"mean {structure}")
    assert dense.shape == (d + 1, d + 1) and dense.size == d + 1 == sf.parameter_vector_size(model)


def test_gaussian_per_output_variance():
    """Two outputs with σ² = (0.3, 2.0): the block of output c is X̃ᵀX̃/σ_c², in (W row c, b_c) positions."""
    n, d = 17, 3
    var = torch.tensor([0.3, 2.0], dtype=DT)
    x = _randn(n, d)
    model = _linear(d, 2)
    xt = _tilde(x)
    exact = torch.zeros(2 * d + 2, 2 * d + 2, dtype=DT)
    for c in range(2):
        idx = list(range(c * d, (c + 1) * d)) + [2 * d + c]
        exact[torch.tensor(idx)[:, None], torch.tensor(idx)[None, :]] = xt.T @ xt / var[c]
    for structure in ("dense", "implicit"):
        _assert_close(sf.fim(model, x, "gaussian", variance=var, structure=structure).dense(), exact, what=structure)
    _assert_close(sf.fim(model, x, "gaussian", variance=var, structure="diag").diag(), exact.diagonal())


def test_logistic_regression():
    n, d = 30, 4
    x = _randn(n, d)
    model = _linear(d, 1, scale=2.0)
    with torch.no_grad():
        p = torch.sigmoid(model(x))[:, 0]
    xt = _tilde(x)
    exact = xt.T @ ((p * (1 - p))[:, None] * xt)
    _assert_close(sf.fim(model, x, "bernoulli").dense(), exact, what="dense")
    _assert_close(sf.fim(model, x, "bernoulli", structure="diag").diag(), exact.diagonal(), what="diag")
    _assert_close(sf.fim(model, x, "bernoulli", structure="implicit").dense(), exact, what="implicit")


def test_softmax_regression_one_example_kronecker():
    d, c = 3, 4
    x = _randn(1, d, seed=3)
    model = _linear(d, c, seed=1, scale=2.0)
    with torch.no_grad():
        p = torch.softmax(model(x), -1)[0]
    lam = torch.diag(p) - torch.outer(p, p)
    xt = _tilde(x)[0]
    kron = torch.kron(lam, torch.outer(xt, xt))  # order (class c, input j) over [W | b] row-major
    # our order: weight (c, d) row-major, then bias (c,)
    perm = [k * (d + 1) + j for k in range(c) for j in range(d)] + [k * (d + 1) + d for k in range(c)]
    perm = torch.tensor(perm)
    exact = kron[perm][:, perm]
    _assert_close(sf.fim(model, x, "categorical").dense(), exact, what="dense")
    _assert_close(sf.fim(model, x, "categorical", structure="diag").diag(), exact.diagonal(), what="diag")
    _assert_close(sf.fim(model, x, "categorical", structure="implicit").dense(), exact, what="implicit")


def test_reparametrisation_pulls_back():
    """θ = θ(φ): F_φ = Jᵀ F_θ J, for a linear and a nonlinear map from φ (5) to a Linear(2, 3)'s θ (9)."""
    d, c, k, n = 2, 3, 5, 12
    a = _randn(d * c + c, k, seed=4)
    phi0 = _randn(k, seed=5) * 0.5
    x = _randn(n, d, seed=6)

    for transform in (lambda phi: a @ phi, lambda phi: a @ phi + 0.3 * torch.sin(phi).repeat(2)[: d * c + c]):

        class Reparam(nn.Module):
            def __init__(self):
                super().__init__()
                self.phi = nn.Parameter(phi0.clone())

            def forward(self, inp):
                theta = transform(self.phi)
                return inp @ theta[: d * c].view(c, d).T + theta[d * c :]

        model = Reparam()
        theta = transform(phi0)
        linear = _linear(d, c)
        with torch.no_grad():
            linear.weight.copy_(theta[: d * c].view(c, d))
            linear.bias.copy_(theta[d * c :])
        jac = torch.func.jacrev(transform)(phi0)
        for lik in ("categorical", "bernoulli"):
            f_theta = sf.fim(linear, x, lik).dense()
            f_phi = sf.fim(model, x, lik).dense()
            _assert_close(f_phi, jac.T @ f_theta @ jac, tol=1e-11, what=lik)


# ------------------------------------------------------------------------------------------------
# Likelihoods: normalised log-densities and Λ by enumeration
# ------------------------------------------------------------------------------------------------


def test_likelihood_log_probs_are_normalised_log_densities():
    f = _randn(5, 3, seed=7) * 3
    y_cat = torch.tensor([0, 2, 1, 1, 0])
    ref = torch.distributions.Categorical(logits=f).log_prob(y_cat)
    _assert_close(sf.Categorical().log_prob(f, y_cat), ref)
    y_ber = (torch.rand(5, 3, generator=_gen(1), dtype=DT) > 0.5).to(DT)
    ref = torch.distributions.Bernoulli(logits=f).log_prob(y_ber).sum(-1)
    _assert_close(sf.Bernoulli().log_prob(f, y_ber), ref)
    var = torch.tensor([0.3, 1.0, 4.0], dtype=DT)
    y = _randn(5, 3, seed=8)
    ref = torch.distributions.Normal(f, var.sqrt()).log_prob(y).sum(-1)
    _assert_close(sf.Gaussian(var).log_prob(f, y), ref)
    _assert_close(sf.Gaussian(0.3).log_prob(f, y), torch.distributions.Normal(f, math.sqrt(0.3)).log_prob(y).sum(-1))


@pytest.mark.parametrize("name", ["categorical", "bernoulli", "gaussian"])
def test_precision_is_expected_outer_product_of_output_scores(name):
    """Λ = E_y[r rᵀ], r = ∇f log p(y|f): exact enumeration (categorical, Bernoulli) or Gaussian moments."""
    f = _randn(4, 3, seed=9) * 2
    lik = sf.get_likelihood(name, variance=0.3 if name == "gaussian" else None)
    lam = lik.precision(f)
    if name == "gaussian":
        _assert_close(lam, torch.diag_embed(torch.full_like(f, 1 / 0.3)))
    else:
        outcomes = (
            [torch.full((4,), k) for k in range(3)]
            if name == "categorical"
            else [torch.tensor(bits, dtype=DT).expand(4, 3) for bits in itertools.product([0, 1], repeat=3)]
        )
        expect = torch.zeros(4, 3, 3, dtype=DT)
        for y in outcomes:
            prob = lik.log_prob(f, y).exp()
            r = torch.func.vmap(torch.func.grad(lambda fi, yi: lik.log_prob(fi[None], yi[None])[0]))(f, y)
            expect += prob[:, None, None] * r[:, :, None] * r[:, None, :]
        _assert_close(lam, expect)
    # the closed-form output scores, products and square roots agree with the generic definitions
    y = lik.sample(f, 2, _gen(2))
    _assert_close(lik.output_score(f, y), sf.Likelihood.output_score(lik, f, y))
    b = lik.precision_factor(f)
    _assert_close(b.mT @ b, lam)
    m = _randn(4, 3, 5, seed=10)
    _assert_close(lik.precision_mm(f, m), lam @ m)
    _assert_close(sf.Likelihood.precision_factor(lik, f).mT @ sf.Likelihood.precision_factor(lik, f), lam)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_categorical_precision_factor_has_c_minus_1_rows_and_stays_finite(dtype):
    """Λ = diag(p) − ppᵀ has rank C − 1: the factor has C − 1 rows with BᵀB = Λ, for every most-probable
    class, for near-uniform and for confident logits (p_max = 1 − 1e-30: no 0/0), and Λ = 0 when C = 1."""
    lik = sf.get_likelihood("categorical")
    eps = torch.finfo(dtype).eps
    logits = torch.cat([
        _randn(5, 5, seed=31) * 3,  # the most probable class varies over the rows
        torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0], [70.0, 0.0, 1.0, -2.0, 3.0], [0.0, -5.0, -5.0, -5.0, 69.0]], dtype=DT),
    ]).to(dtype)
    b = lik.precision_factor(logits)
    assert b.shape == (8, 4, 5) and b.dtype == dtype and bool(torch.isfinite(b).all())
    lam = lik.precision(logits)
    # relative to each example's ‖Λ_n‖ (≈ 1e-30 in the confident rows): a few roundings of O(C) terms
    err = (b.mT @ b - lam).abs().amax((1, 2)) / lam.abs().amax((1, 2))
    assert float(err.max()) < 20 * eps
    one = lik.precision_factor(_randn(3, 1, seed=32).to(dtype))
    assert one.shape == (3, 1, 1) and not one.any()


def _categorical_oracle(f: torch.Tensor):
    """p, Λ and 1 − p from log-space formulas only: log(1 − p_i) = logsumexp_{j≠i} f_j − logsumexp f."""
    lse = torch.logsumexp(f, -1, keepdim=True)
    c = f.shape[-1]
    others = f.unsqueeze(-2).expand(*f.shape, c).masked_fill(torch.eye(c, dtype=torch.bool), -math.inf)
    log_p, log_not_p = f - lse, torch.logsumexp(others, -1) - lse
    lam = -(log_p.unsqueeze(-1) + log_p.unsqueeze(-2)).exp()
    lam.diagonal(dim1=-2, dim2=-1).copy_((log_p + log_not_p).exp())
    return log_p.exp(), lam, log_not_p.exp()


def test_categorical_precision_products_and_scores_are_accurate_on_confident_logits():
    """When p_max rounds to 1, 1 − p_max must not be taken as a difference: Λ, Λm and e_y − p keep their
    relative accuracy per example (checked against log-space formulas) instead of losing the top class."""
    f = torch.cat([_randn(4, 5, seed=33) * 2, torch.tensor([[45.0, 0.0, 1.0, -2.0, 3.0], [0.0, -1.0, -1.0, 60.0, 2.0]],
                                                           dtype=DT)])
    lik = sf.get_likelihood("categorical")
    p, lam, not_p = _categorical_oracle(f)
    assert float(p.max()) == 1.0  # the confident rows do round to 1 in float64
    per_example = lambda a, b: ((a - b).abs().flatten(1).amax(1) / b.abs().flatten(1).amax(1)).max()  # noqa: E731
    assert per_example(lik.precision(f), lam) < 1e-14
    m = _randn(6, 5, 3, seed=34)
    assert per_example(lik.precision_mm(f, m), lam @ m) < 1e-13
    y = torch.tensor([[0, 1, 2, 3, 0, 3], [4, 4, 4, 4, 1, 0]])  # (M, N): the top class and others
    expect = -p.expand(2, -1, -1).clone()
    expect.scatter_(-1, y.unsqueeze(-1), not_p.expand(2, -1, -1).gather(-1, y.unsqueeze(-1)))
    score = lik.output_score(f, y)
    assert ((score - expect).abs() / expect.abs()).max() < 1e-14  # every entry, relatively
    torch.testing.assert_close(score, sf.Likelihood.output_score(lik, f, y), rtol=0, atol=1e-15)


def test_score_matches_hand_written_log_likelihood_gradients():
    model = _mlp(seed=2)
    x = _randn(6, 4, seed=11)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    g = sf.score(model, x, y, "categorical")
    assert g.shape == (6, sf.parameter_vector_size(model))
    for i in range(6):
        model.zero_grad()
        logp = -nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1], reduction="sum")
        grads = torch.autograd.grad(logp, list(model.parameters()))
        _assert_close(g[i], torch.cat([t.reshape(-1) for t in grads]), what=f"example {i}")
    # Gaussian: ∇θ log N(y; f, σ²) = J_nᵀ (y − f)/σ², i.e. −(1/(2σ²)) ∇ of the squared error
    yg = _randn(6, 3, seed=12)
    g = sf.score(model, x, yg, "gaussian", variance=0.3)
    sq = ((model(x) - yg) ** 2).sum(-1)
    for i in range(6):
        grads = torch.autograd.grad(-sq[i] / (2 * 0.3), list(model.parameters()), retain_graph=True)
        _assert_close(g[i], torch.cat([t.reshape(-1) for t in grads]), what=f"gaussian example {i}")
    j = sf.jacobians(model, x)
    assert j.shape == (6, 3, sf.parameter_vector_size(model))


# ------------------------------------------------------------------------------------------------
# Monte Carlo and empirical Fisher
# ------------------------------------------------------------------------------------------------


def test_mc_converges_at_root_m_rate_and_is_deterministic():
    model = _mlp(d_in=3, hidden=4, c=3, seed=3)
    x = _randn(10, 3, seed=13)
    exact = sf.fim(model, x, "categorical").dense()

    def rel_err(m, seed):
        est = sf.fim(model, x, "categorical", kind="mc", n_samples=m, generator=_gen(seed)).dense()
        return float((est - exact).norm() / exact.norm())

    seeds = range(32)
    small = torch.tensor([rel_err(8, s) for s in seeds])
    large = torch.tensor([rel_err(128, 100 + s) for s in seeds])
    ratio = float(small.pow(2).mean().sqrt() / large.pow(2).mean().sqrt())
    assert 3.0 < ratio < 5.3, f"RMS error ratio between M=8 and M=128 is {ratio:.2f}, expected ≈ 4"

    a = sf.fim(model, x, "categorical", kind="mc", n_samples=5, generator=_gen(7)).dense()
    b = sf.fim(model, x, "categorical", kind="mc", n_samples=5, generator=_gen(7)).dense()
    c = sf.fim(model, x, "categorical", kind="mc", n_samples=5, generator=_gen(8)).dense()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_mc_equals_average_of_score_outer_products():
    """kind="mc" is (1/M) Σ g gᵀ over the model's own samples, for every structure."""
    model = _mlp(seed=4)
    x = _randn(7, 4, seed=14)
    m = 3
    lik = sf.Categorical()
    with torch.no_grad():
        samples = lik.sample(model(x), m, _gen(5))
    g = torch.stack([sf.score(model, x, samples[k], lik) for k in range(m)])  # (M, N, P)
    ref = torch.einsum("mnp,mnq->pq", g, g) / m
    for structure in ("dense", "diag", "implicit"):
        est = sf.fim(model, x, lik, kind="mc", n_samples=m, generator=_gen(5), structure=structure)
        if structure == "diag":
            _assert_close(est.diag(), ref.diagonal(), what=structure)
        else:
            _assert_close(est.dense(), ref, what=structure)


def test_empirical_fisher_is_score_outer_products_and_zero_at_perfect_fit():
    n, d, var = 20, 3, 0.3
    x = _randn(n, d, seed=15)
    model = _linear(d, 1, seed=2)
    with torch.no_grad():
        perfect = model(x)
    for structure in ("dense", "diag", "implicit"):
        emp = sf.fim(model, x, "gaussian", kind="empirical", targets=perfect, variance=var, structure=structure)
        assert float(emp.dense().abs().max()) == 0.0, structure
    true = sf.fim(model, x, "gaussian", variance=var).dense()
    xt = _tilde(x)
    _assert_close(true, xt.T @ xt / var)
    assert float(true.abs().max()) > 1

    # away from the fit: Σ r_n² x̃ x̃ᵀ / σ⁴ with r = y − f, and Σ g gᵀ with the scores
    y = perfect + _randn(n, 1, seed=16)
    r = (y - perfect)[:, 0]
    emp = sf.fim(model, x, "gaussian", kind="empirical", targets=y, variance=var).dense()
    _assert_close(emp, xt.T @ (r[:, None] ** 2 * xt) / var**2)
    g = sf.score(model, x, y, "gaussian", variance=var)
    _assert_close(emp, g.T @ g)
    ymask = torch.tensor([0, 2, 1, 0, 1, 2, 2])
    mlp = _mlp(seed=5)
    xm = _randn(7, 4, seed=17)
    gm = sf.score(mlp, xm, ymask, "categorical")
    for structure in ("dense", "implicit"):
        _assert_close(sf.fim(mlp, xm, "categorical", "empirical", structure, targets=ymask).dense(), gm.T @ gm)
    _assert_close(sf.fim(mlp, xm, "categorical", "empirical", "diag", targets=ymask).diag(), (gm**2).sum(0))


def test_empirical_fisher_under_misspecified_heavy_tailed_noise():
    """Gaussian likelihood σ² but Student-t noise of variance s²: E[empirical] = (s²/σ²)·true."""
    n, d, var, s2, nu = 20000, 2, 0.5, 2.0, 6
    gen = _gen(21)
    x = torch.randn(n, d, generator=gen, dtype=DT)
    model = _linear(d, 1, seed=3)
    # Student-t with ν = 6 (finite fourth moment), scaled to variance s²
    t = torch.randn(n, generator=gen, dtype=DT) / (torch.randn(n, nu, generator=gen, dtype=DT).pow(2).sum(1) / nu).sqrt()
    eps = t * math.sqrt(s2 * (nu - 2) / nu)
    with torch.no_grad():
        y = model(x) + eps[:, None]
    emp = sf.fim(model, x, "gaussian", kind="empirical", targets=y, variance=var).dense()
    true = sf.fim(model, x, "gaussian", variance=var).dense()
    xt = _tilde(x)
    # Var(ε²) = E ε⁴ − s⁴ = s⁴ (3(ν−2)/(ν−4) − 1) = 5 s⁴ for ν = 6
    var_eps2 = s2**2 * (3 * (nu - 2) / (nu - 4) - 1)
    std = (xt[:, :, None] ** 2 * xt[:, None, :] ** 2).sum(0).sqrt() * math.sqrt(var_eps2) / var**2
    dev = (emp - (s2 / var) * true).abs() / std
    assert float(dev.max()) < 5, f"deviation {float(dev.max()):.2f} standard errors"
    # and the two matrices are really different: their ratio is s²/σ² = 4, not 1
    ratio = float(emp.trace() / true.trace())
    assert abs(ratio - s2 / var) < 0.2, ratio


# ------------------------------------------------------------------------------------------------
# Structures agree with dense; sum vs mean
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["true", "mc", "empirical"])
def test_structures_agree_with_dense_on_mlp(kind):
    model = _mlp(seed=6)
    x = _randn(15, 4, seed=18)
    y = torch.randint(0, 3, (15,), generator=_gen(3))
    kw = dict(kind=kind, targets=y if kind == "empirical" else None, n_samples=4)
    dense = sf.fim(model, x, "categorical", structure="dense", generator=_gen(9), **kw)
    diag = sf.fim(model, x, "categorical", structure="diag", generator=_gen(9), **kw)
    implicit = sf.fim(model, x, "categorical", structure="implicit", generator=_gen(9), **kw)
    f = dense.dense()
    p = f.shape[0]
    assert p == sf.parameter_vector_size(model) == implicit.size == diag.size
    assert torch.equal(f, f.T)
    _assert_close(diag.diag(), f.diagonal(), what="diag")
    _assert_close(implicit.diag(), f.diagonal(), what="implicit diag")
    v = _randn(p, seed=19)
    vs = _randn(p, 3, seed=20)
    _assert_close(implicit.mv(v), f @ v, what="implicit mv")
    _assert_close(implicit @ vs, f @ vs, what="implicit mm")
    _assert_close(implicit.dense(), f, what="implicit dense")
    _assert_close(implicit.trace(), f.trace(), what="trace")
    _assert_close(diag.trace(), f.trace(), what="diag trace")
    for damping in (1e-2, 1.0):
        a = f + damping * torch.eye(p, dtype=DT)
        _assert_close(dense.solve(v, damping), torch.linalg.solve(a, v), tol=1e-10, what="dense solve")
        _assert_close(dense.solve(vs, damping), torch.linalg.solve(a, vs), tol=1e-10, what="dense solve mm")
        _assert_close(implicit.solve(vs, damping, rtol=1e-12), torch.linalg.solve(a, vs), tol=1e-8, what="cg")
        d = torch.diag(diag.diag()) + damping * torch.eye(p, dtype=DT)
        _assert_close(diag.solve(vs, damping), torch.linalg.solve(d, vs), what="diag solve")


@pytest.mark.parametrize("size", [5, 255, 256, 383, 700])  # 1, 1, 2, 2 and 4 column blocks
def test_gram_by_lower_blocks_is_the_exactly_symmetric_full_product(size):
    chunks = [_randn(n, size, seed=40 + n) for n in (3, 200, 1)]
    gram = operators._gram(iter(chunks), size, DT, torch.device("cpu"))
    rows = torch.cat(chunks)
    torch.testing.assert_close(gram, rows.T @ rows, rtol=1e-13, atol=1e-12)
    assert torch.equal(gram, gram.T)


@pytest.mark.parametrize("lik", ["categorical", "gaussian"])
def test_dense_and_diag_do_not_depend_on_chunking(monkeypatch, lik):
    """P = 421 (3 column blocks); CHUNK_ELEMENTS small enough for one example per chunk."""
    model = _mlp(d_in=20, hidden=16, c=5, seed=12)
    x = _randn(9, 20, seed=41)
    kw = dict(variance=0.3) if lik == "gaussian" else {}
    whole = sf.fim(model, x, lik, **kw).dense()
    implicit = sf.fim(model, x, lik, structure="implicit", **kw)
    from scoregeo.fisher import scores

    monkeypatch.setattr(scores, "CHUNK_ELEMENTS", 5 * 421)
    chunked = sf.fim(model, x, lik, **kw).dense()
    _assert_close(chunked, whole, what="dense")
    _assert_close(implicit.diag(), whole.diagonal(), what="diag")
    _assert_close(implicit.dense(), whole, what="implicit dense")


@pytest.mark.parametrize("structure", ["dense", "diag", "implicit", "kfac"])
@pytest.mark.parametrize("lik", ["categorical", "bernoulli", "gaussian"])
def test_sum_is_n_times_mean(structure, lik):
    if structure == "kfac":
        pytest.importorskip("scoregeo.fisher.kfac")
    model = _mlp(seed=7)
    n = 11
    x = _randn(n, 4, seed=22)
    var = 0.7 if lik == "gaussian" else None
    total = sf.fim(model, x, lik, structure=structure, variance=var)
    mean = sf.fim(model, x, lik, structure=structure, variance=var, reduction="mean")
    _assert_close(mean.dense() * n, total.dense(), tol=1e-13)
    _assert_close(mean.diag() * n, total.diag(), tol=1e-13)
    _assert_close(mean.trace() * n, total.trace(), tol=1e-13)


# ------------------------------------------------------------------------------------------------
# The Fisher score meets the Stein score
# ------------------------------------------------------------------------------------------------


def test_location_family_fisher_equals_stein_score_covariance():
    """For p(y | μ) = N(μ, Σ), Σ diagonal: ∇μ log p = −∇y log p, and F(μ) = E[s sᵀ] = Σ⁻¹."""
    sig2 = torch.tensor([0.3, 1.0, 2.5], dtype=DT)
    mu0 = torch.tensor([0.5, -1.0, 2.0], dtype=DT)

    class Location(nn.Module):
        def __init__(self):
            super().__init__()
            self.mu = nn.Parameter(mu0.clone())

        def forward(self, inp):
            return self.mu.expand(inp.shape[0], -1)

    model = Location()
    fisher = sf.fim(model, torch.zeros(1, 1, dtype=DT), "gaussian", variance=sig2).dense()
    _assert_close(fisher, torch.diag(1 / sig2), what="F = Σ⁻¹")

    density = sg.Gaussian(mu0, torch.diag(sig2))
    n = 40000
    ys = density.sample(n, generator=_gen(23))
    stein = density.score(ys)  # (n, 3)
    fisher_scores = sf.score(model, torch.zeros(n, 1, dtype=DT), ys, "gaussian", variance=sig2)
    _assert_close(fisher_scores, -stein, what="Fisher score = −Stein score")
    mc = stein.T @ stein / n
    lam = 1 / sig2
    # Var(s_i s_j) = λ_i λ_j (i ≠ j), 2 λ_i² (i = j) for s ~ N(0, Σ⁻¹) with diagonal Σ
    std = (torch.outer(lam, lam) * (1 + torch.eye(3, dtype=DT))).sqrt() / math.sqrt(n)
    assert float(((mc - fisher).abs() / std).max()) < 5


# ------------------------------------------------------------------------------------------------
# Numerical robustness and input validation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lik", ["categorical", "bernoulli"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_confident_model_has_no_nan(lik, dtype):
    model = _mlp(seed=8, last_scale=100.0).to(dtype)
    x = _randn(20, 4, seed=24).to(dtype)
    with torch.no_grad():
        assert float(model(x).abs().max()) > 50
    dense = sf.fim(model, x, lik).dense()
    diag = sf.fim(model, x, lik, structure="diag").diag()
    implicit = sf.fim(model, x, lik, structure="implicit").diag()
    mc = sf.fim(model, x, lik, kind="mc", n_samples=3, generator=_gen(1)).dense()
    for t in (dense, diag, implicit, mc):
        assert bool(torch.isfinite(t).all())
    assert float(diag.min()) >= 0
    scale = float(dense.abs().max())
    assert float((diag - dense.diagonal()).abs().max()) <= (1e-12 if dtype == DT else 1e-5) * scale


def test_solvers_refuse_or_warn_instead_of_being_wrong():
    dense = sf.DenseCurvature(torch.diag(torch.tensor([1.0, -5.0], dtype=DT)))
    with pytest.raises(ValueError, match="positive definite"):
        dense.solve(torch.ones(2, dtype=DT), 1.0)
    model = _mlp(seed=9)
    x = _randn(10, 4, seed=25)
    implicit = sf.fim(model, x, "categorical", structure="implicit")
    v = _randn(implicit.size, seed=26)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        implicit.solve(v, 1e-6, max_iter=2)
    for bad in (0, -1.0, float("nan"), float("inf")):
        for op in (implicit, dense, sf.DiagCurvature(torch.ones(2, dtype=DT))):
            with pytest.raises(ValueError, match="damping"):
                op.solve(torch.ones(op.size, dtype=DT), bad)
    with pytest.raises(ValueError, match="shape"):
        implicit.mv(torch.ones(3, dtype=DT))


def test_bad_arguments_raise():
    model = _mlp(seed=10)
    x = _randn(5, 4, seed=27)
    y = torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match="unknown likelihood.*'categorical'"):
        sf.fim(model, x, "poisson")
    with pytest.raises(ValueError, match="unknown kind.*'true'.*'mc'.*'empirical'"):
        sf.fim(model, x, "categorical", kind="fisher")
    with pytest.raises(ValueError, match="unknown structure.*'kfac'"):
        sf.fim(model, x, "categorical", structure="block")
    with pytest.raises(ValueError, match="unknown reduction.*'mean'"):
        sf.fim(model, x, "categorical", reduction="avg")
    with pytest.raises(ValueError, match="empirical Fisher needs targets"):
        sf.fim(model, x, "categorical", kind="empirical")
    with pytest.raises(ValueError, match="targets.*shape"):
        sf.fim(model, x, "categorical", kind="empirical", targets=y[:4])
    with pytest.raises(ValueError, match=r"targets.*\[0, 3\)"):
        sf.fim(model, x, "categorical", kind="empirical", targets=y + 1)
    with pytest.raises(ValueError, match="targets.*integer"):
        sf.fim(model, x, "categorical", kind="empirical", targets=y.to(DT))
    with pytest.raises(ValueError, match="targets.*0 or 1"):
        sf.fim(model, x, "bernoulli", kind="empirical", targets=torch.full((5, 3), 0.5, dtype=DT))
    with pytest.raises(ValueError, match="targets.*shape"):
        sf.fim(model, x, "bernoulli", kind="empirical", targets=torch.zeros(5, dtype=DT))
    with pytest.raises(ValueError, match="targets.*shape"):
        sf.fim(model, x, "gaussian", kind="empirical", targets=torch.zeros(5, dtype=DT), variance=1.0)
    with pytest.raises(ValueError, match="targets.*shape"):
        sf.score(model, x, torch.zeros(5, 2, dtype=DT), "gaussian", variance=1.0)
    with pytest.raises(ValueError, match="variance"):
        sf.fim(model, x, "gaussian")
    for bad in (0.0, -1.0, float("nan"), torch.tensor([1.0, -1.0, 1.0])):
        with pytest.raises(ValueError, match="variance"):
            sf.fim(model, x, "gaussian", variance=bad)
    with pytest.raises(ValueError, match="variance.*2 entries.*3 outputs"):
        sf.fim(model, x, "gaussian", variance=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="variance only applies"):
        sf.fim(model, x, "categorical", variance=1.0)
    with pytest.raises(ValueError, match="n_samples"):
        sf.fim(model, x, "categorical", kind="mc", n_samples=0)
    xbad = x.clone()
    xbad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="inputs"):
        sf.fim(model, xbad, "categorical")
    with pytest.raises(ValueError, match="inputs"):
        sf.fim(model, x[:0], "categorical")
    with pytest.raises(ValueError, match=r"output must have shape \(N, C\)"):
        sf.fim(nn.Sequential(model, nn.Flatten(0)), x, "categorical")
    bn = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).to(DT)
    with pytest.raises(ValueError, match="BatchNorm.*eval"):
        sf.fim(bn, x, "categorical")
    sf.fim(bn.eval(), x, "categorical")  # fine once in eval mode
    with pytest.raises(ValueError, match="no parameter"):
        sf.fim(nn.Identity(), x, "categorical")


def test_dense_size_limit(monkeypatch):
    model = _mlp(seed=11)
    x = _randn(4, 4, seed=28)
    p = sf.parameter_vector_size(model)
    monkeypatch.setattr(operators, "MAX_DENSE_SIZE", p - 1)
    with pytest.raises(ValueError, match="dense.*'diag', 'kfac' or 'implicit'"):
        sf.fim(model, x, "categorical")
    assert sf.fim(model, x, "categorical", structure="diag").size == p
    monkeypatch.setattr(operators, "MAX_DENSE_SIZE", p)
    assert sf.fim(model, x, "categorical").shape == (p, p)


def test_implicit_curvature_is_a_snapshot_of_the_parameters():
    model = _mlp(seed=12)
    x = _randn(8, 4, seed=29)
    implicit = sf.fim(model, x, "categorical", structure="implicit")
    before = sf.fim(model, x, "categorical").dense()
    v = _randn(implicit.size, seed=30)
    first = implicit @ v
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    _assert_close(implicit @ v, first, what="after an in-place update")
    _assert_close(implicit.dense(), before, what="dense after an in-place update")


# ------------------------------------------------ exact diagonal through layer hooks
def _diag_models():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3))
    cnn = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Tanh(), nn.Conv2d(3, 4, 2, stride=1, padding=0),
        nn.Flatten(), nn.Linear(4 * 2 * 2, 3),
    )
    no_bias = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4, bias=False),
        nn.Tanh(), nn.Linear(4, 3),
    )
    inplace = nn.Sequential(
        nn.Linear(5, 7), nn.ReLU(inplace=True), nn.Linear(7, 6), nn.ReLU(inplace=True), nn.Linear(6, 3)
    )
    return {m: m_.to(DT) for m, m_ in {"mlp": mlp, "cnn": cnn, "no_bias": no_bias, "inplace": inplace}.items()}


@pytest.mark.parametrize("name", ["mlp", "cnn", "no_bias", "inplace"])
@pytest.mark.parametrize("lik", ["categorical", "bernoulli", "gaussian"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_hook_diagonal_equals_dense_diagonal(name, lik, reduction):
    from scoregeo.fisher import kfac

    model = _diag_models()[name]
    x = _randn(7, 5, seed=1) if name in ("mlp", "inplace") else _randn(7, 2, 6, 6, seed=1)
    variance = torch.tensor([0.5, 2.0, 1.5], dtype=DT) if lik == "gaussian" else None
    kw = dict(reduction=reduction, variance=variance)
    assert kfac._exact_diag(model, x, sf.likelihoods.get_likelihood(lik, variance)) is not None
    d = sf.fim(model, x, lik, structure="diag", **kw).diag()
    ref = torch.diagonal(sf.fim(model, x, lik, structure="dense", **kw).dense())
    _assert_close(d, ref, 1e-12, f"{name} {lik} {reduction}")


@pytest.mark.parametrize("kind", ["mc", "empirical"])
def test_hook_diagonal_sampled_kinds_equal_dense_diagonal(kind):
    model = _diag_models()["cnn"]
    x = _randn(7, 2, 6, 6, seed=1)
    kw = dict(kind=kind, targets=torch.tensor([0, 1, 2, 0, 1, 2, 0]), n_samples=3)
    d = sf.fim(model, x, "categorical", structure="diag", generator=_gen(3), **kw).diag()
    ref = torch.diagonal(sf.fim(model, x, "categorical", structure="dense", generator=_gen(3), **kw).dense())
    _assert_close(d, ref, 1e-12, kind)


def test_diagonal_falls_back_to_jacobians_for_other_layers():
    from scoregeo.fisher import kfac

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3)).to(DT)
    x = _randn(7, 5, seed=1)
    assert kfac._exact_diag(model, x, sf.likelihoods.get_likelihood("categorical")) is None
    d = sf.fim(model, x, "categorical", structure="diag").diag()
    _assert_close(d, torch.diagonal(sf.fim(model, x, "categorical", structure="dense").dense()), 1e-12, "layernorm")
    # a layer applied twice is also left to the Jacobian path
    lin = nn.Linear(3, 3).to(DT)
    twice = nn.Sequential(nn.Linear(5, 3), nn.Tanh(), lin, nn.Tanh(), lin).to(DT)
    assert kfac._exact_diag(twice, x, sf.likelihoods.get_likelihood("categorical")) is None
    d = sf.fim(twice, x, "categorical", structure="diag").diag()
    _assert_close(d, torch.diagonal(sf.fim(twice, x, "categorical", structure="dense").dense()), 1e-12, "twice")


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("kind", ["true", "mc"])
def test_implicit_product_paths_agree(arch, kind):
    # ImplicitCurvature computes J v either by the cached double vjp ("vjp") or by
    # forward mode ("jvp"); both must give the same F v and F V, and "auto" picks
    # "jvp" exactly when the model has a convolution.
    torch.manual_seed(0)
    if arch == "mlp":
        model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).to(DT)
        x = _randn(7, 6, seed=1)
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(2, 3, 3), nn.Tanh(),
            nn.Flatten(), nn.Linear(3 * 2 * 2, 3),
        ).to(DT)
        x = _randn(7, 1, 8, 8, seed=1)
    F = sf.fim(model, x, "categorical", kind=kind, structure="implicit", generator=_gen(2))
    assert F.product == ("jvp" if arch == "cnn" else "vjp")
    ops = {p: operators.ImplicitCurvature(model, x, F.metric, scale=F.scale, product=p) for p in ("vjp", "jvp")}
    for op in ops.values():
        assert op.product in ("vjp", "jvp")
    v = _randn(F.size, seed=3)
    V = _randn(F.size, 5, seed=4)
    a, b = ops["vjp"].mv(v), ops["jvp"].mv(v)
    assert torch.allclose(a, b, rtol=0, atol=1e-12 * b.abs().max())
    A, B = ops["vjp"].mv(V), ops["jvp"].mv(V)
    assert torch.allclose(A, B, rtol=0, atol=1e-12 * B.abs().max())
    assert torch.allclose(F.mv(v), a if arch == "mlp" else b, rtol=0, atol=1e-12 * b.abs().max())
    with pytest.raises(ValueError, match="product"):
        operators.ImplicitCurvature(model, x, F.metric, product="bogus")


def test_all_finite_decides_by_one_sum_and_survives_its_overflow():
    from scoregeo._checks import all_finite

    big = torch.full((4,), 3e38, dtype=torch.float32)  # finite entries whose sum overflows to inf
    assert not bool(torch.isfinite(big.sum())) and all_finite(big)
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = _randn(3, 5, seed=42)
        x[1, 2] = bad
        assert not all_finite(x)
    pair = torch.tensor([float("inf"), -float("inf")])  # sums to NaN
    assert not all_finite(pair) and all_finite(torch.zeros(0)) and all_finite(torch.arange(5))


class _Recurrent(nn.Module):
    """A sequence classifier: a recurrent layer over (N, T, 3), then a linear head on the last state."""

    def __init__(self, cell: type[nn.RNNBase]):
        super().__init__()
        self.rnn = cell(3, 6, batch_first=True)
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_recurrent_models_against_per_example_autograd(cell):
    """nn.LSTM / nn.GRU cannot run under a vmap over examples; dense, diag, implicit and score must still agree
    with Σ_n J_nᵀ (diag(p_n) − p_n p_nᵀ) J_n, J_n by plain backward passes, one example at a time."""
    torch.manual_seed(0)
    model = _Recurrent(cell).to(DT)
    x = _randn(7, 5, 3, seed=12)
    params = [p for p in model.parameters()]
    P = sum(p.numel() for p in params)
    oracle = torch.zeros(P, P, dtype=DT)
    for n in range(x.shape[0]):
        out = model(x[n : n + 1])[0]
        J = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(out[c], params, retain_graph=True)])
                         for c in range(4)])  # (C, P), one backward pass per output
        p = torch.softmax(out, -1).detach()
        oracle += J.T @ (torch.diag(p) - torch.outer(p, p)) @ J
    torch.testing.assert_close(sf.fim(model, x, "categorical", structure="dense").dense(), oracle, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sf.fim(model, x, "categorical", structure="diag").diag(), oracle.diagonal(),
                               rtol=1e-10, atol=1e-12)
    v = _randn(P, seed=13)
    torch.testing.assert_close(sf.fim(model, x, "categorical", structure="implicit").mv(v), oracle @ v,
                               rtol=1e-10, atol=1e-12)
    y = torch.randint(4, (7,), generator=_gen(14))
    per_example = []
    for n in range(7):
        loss = torch.log_softmax(model(x[n : n + 1])[0], -1)[y[n]]
        per_example.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    torch.testing.assert_close(sf.score(model, x, y, "categorical"), torch.stack(per_example), rtol=1e-10, atol=1e-12)
