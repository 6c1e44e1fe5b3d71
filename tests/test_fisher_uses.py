"""Uses of the Fisher information (scoregeo.fisher: natural_gradient, ewc, kl_check, cramer_rao, jeffreys) against independent oracles (float64).

Oracles:
- natural gradient on linear-Gaussian regression with the mean NLL and F with
  reduction="mean": one step with lr=1 is Newton's step, landing on the
  least-squares solution (torch.linalg.lstsq);
- natural gradient on logistic regression: the optimum of scipy.optimize (BFGS on
  the mean NLL written with torch's binary cross-entropy), reached in far fewer
  steps than plain gradient descent;
- the EWC penalty and its gradient/Hessian against ½ δᵀFδ, s·Fδ and s·F from each
  curvature's dense matrix;
- the KL divergences of the output distributions against torch.distributions'
  closed-form kl_divergence, and their ratio to ½ε²δᵀFδ tending to 1 at rate O(ε);
- the Cramér–Rao bounds of Normal(μ, σ), Poisson(λ), Bernoulli(p) in closed form.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.optimize
import torch
import torch.nn.functional as nnf
from torch import nn
from torch.distributions import Bernoulli, Categorical, Normal, Poisson, kl_divergence
from torch.func import functional_call

import scoregeo.fisher as sf

DT = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mlp(d_in=3, hidden=5, c=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, c)).to(DT)


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _theta(model) -> torch.Tensor:
    return _flat([p.detach() for p in model.parameters()])


# ---------------------------------------------------------------------------------------------
# NaturalGradient
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("structure", ["implicit", "dense"])
def test_one_natural_gradient_step_is_least_squares_for_linear_gaussian(structure):
    g = _gen(0)
    n, d, var = 60, 3, 0.3
    x = torch.randn(n, d, dtype=DT, generator=g)
    y = (x @ torch.tensor([1.0, -2.0, 0.5], dtype=DT) + 0.7 + 0.5 * torch.randn(n, dtype=DT, generator=g))[:, None]
    torch.manual_seed(1)
    model = nn.Linear(d, 1).to(DT)
    opt = sf.NaturalGradient(
        model.parameters(),
        lambda: sf.fim(model, x, "gaussian", structure=structure, reduction="mean", variance=var),
        lr=1.0,
        damping=1e-10,
    )

    def closure():
        opt.zero_grad()
        loss = ((y - model(x)) ** 2 / (2 * var)).sum(1).mean()  # mean NLL up to a constant
        loss.backward()
        return loss

    opt.step(closure)
    x1 = torch.cat([x, torch.ones(n, 1, dtype=DT)], 1)
    expected = torch.linalg.lstsq(x1, y).solution.squeeze(1)  # (weight, bias) order
    torch.testing.assert_close(_theta(model), expected, atol=1e-8, rtol=0)
    info = opt.last_solve_info
    assert info.converged and info.relative_residual < 1e-9
    assert info.method == ("cg" if structure == "implicit" else "direct")
    assert info.damping == 1e-10 and info.grad_norm > 0 and info.step_norm > 0


def _logistic_data():
    g = _gen(3)
    x = torch.randn(200, 2, dtype=DT, generator=g)
    y = torch.bernoulli(torch.sigmoid(x @ torch.tensor([1.5, -1.0], dtype=DT) + 0.3), generator=g)
    return x, y


def test_natural_gradient_beats_gradient_descent_on_logistic_regression():
    x, y = _logistic_data()

    def nll(theta):
        return nnf.binary_cross_entropy_with_logits(x @ theta[:2] + theta[2], y)

    res = scipy.optimize.minimize(
        lambda t: float(nll(torch.as_tensor(t, dtype=DT))),
        np.zeros(3),
        jac=lambda t: torch.func.grad(nll)(torch.as_tensor(t, dtype=DT)).numpy(),
        method="BFGS",
        options={"gtol": 1e-11},
    )
    optimum = torch.as_tensor(res.x, dtype=DT)
    assert float(torch.func.grad(nll)(optimum).norm()) < 1e-8

    def run(make_opt, max_steps):
        torch.manual_seed(0)
        model = nn.Linear(2, 1).to(DT)
        with torch.no_grad():
            model.weight.zero_()
            model.bias.zero_()
        opt = make_opt(model)

        def closure():
            opt.zero_grad()
            loss = nnf.binary_cross_entropy_with_logits(model(x), y[:, None])  # mean NLL
            loss.backward()
            return loss

        for step in range(1, max_steps + 1):
            opt.step(closure)
            if float((_theta(model) - optimum).norm()) < 1e-6:
                return step, opt
        return max_steps + 1, opt

    ngd_steps, ngd = run(lambda m: sf.NaturalGradient.from_model(m, x, "bernoulli", lr=1.0, damping=1e-8), 30)
    gd_steps, _ = run(lambda m: torch.optim.SGD(m.parameters(), lr=1.0), 1000)
    assert ngd_steps <= 8, ngd_steps  # F = Hessian of the NLL here: Newton's quadratic convergence
    assert gd_steps > 5 * ngd_steps, (gd_steps, ngd_steps)
    assert ngd.last_solve_info.converged


def test_natural_gradient_validates_lr_and_damping():
    model = nn.Linear(2, 1).to(DT)
    F = sf.DenseCurvature(torch.eye(3, dtype=DT))
    for bad in (0, -0.1, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="lr"):
            sf.NaturalGradient(model.parameters(), F, lr=bad)
        with pytest.raises(ValueError, match="damping"):
            sf.NaturalGradient(model.parameters(), F, damping=bad)
    with pytest.raises(ValueError, match="lr"):
        sf.NaturalGradient([{"params": [model.weight], "lr": -1.0}, {"params": [model.bias]}], F)
    with pytest.raises(ValueError, match="curvature"):
        sf.NaturalGradient(model.parameters(), "fisher")
    with pytest.raises(ValueError, match="cg_max_iter"):
        sf.NaturalGradient(model.parameters(), F, cg_max_iter=0)

    # a curvature of the wrong size is refused at the step, parameters untouched
    opt = sf.NaturalGradient(model.parameters(), sf.DenseCurvature(torch.eye(4, dtype=DT)))
    model(torch.ones(1, 2, dtype=DT)).sum().backward()
    before = _theta(model)
    with pytest.raises(ValueError, match="size"):
        opt.step()
    torch.testing.assert_close(_theta(model), before, atol=0, rtol=0)


def test_natural_gradient_reports_unconverged_cg():
    x = torch.randn(30, 3, dtype=DT, generator=_gen(4))
    labels = torch.randint(0, 3, (30,), generator=_gen(5))
    model = _mlp()

    def make(**kwargs):
        opt = sf.NaturalGradient.from_model(model, x, "categorical", lr=0.5, damping=1e-4, **kwargs)

        def closure():
            opt.zero_grad()
            loss = nnf.cross_entropy(model(x), labels)
            loss.backward()
            return loss

        return opt, closure

    # converged: the true residual is reported
    opt, closure = make()
    opt.step(closure)
    assert opt.last_solve_info.converged and opt.last_solve_info.relative_residual < 1e-9

    # one CG iteration cannot solve a 38-dimensional system: warned, reported, step taken
    opt, closure = make(cg_max_iter=1)
    before = _theta(model)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        opt.step(closure)
    info = opt.last_solve_info
    assert not info.converged and info.method == "cg" and info.relative_residual > 1e-3
    assert any("did not converge" in m for m in info.messages)
    assert not torch.equal(_theta(model), before)

    # strict: refused, parameters unchanged
    opt, closure = make(cg_max_iter=1, strict=True)
    before = _theta(model)
    with pytest.raises(RuntimeError, match="did not converge"):
        opt.step(closure)
    torch.testing.assert_close(_theta(model), before, atol=0, rtol=0)
    assert not opt.last_solve_info.converged


def test_natural_gradient_step_without_closure_and_with_fixed_curvature():
    model = nn.Linear(2, 1).to(DT)
    a = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 3.0]], dtype=DT)
    opt = sf.NaturalGradient(model.parameters(), sf.DenseCurvature(a), lr=0.5, damping=0.1)
    with pytest.raises(RuntimeError, match="gradient"):
        opt.step()
    x = torch.randn(5, 2, dtype=DT, generator=_gen(6))
    model(x).pow(2).sum().backward()
    grad = _flat([p.grad for p in model.parameters()])
    before = _theta(model)
    opt.step()
    expected = before - 0.5 * torch.linalg.solve(a + 0.1 * torch.eye(3, dtype=DT), grad)
    torch.testing.assert_close(_theta(model), expected, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------
# EWC
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("structure", ["dense", "diag", "kfac", "implicit"])
def test_ewc_penalty_gradient_and_hessian(structure):
    model = _mlp()
    x = torch.randn(25, 3, dtype=DT, generator=_gen(7))
    F = sf.fim(model, x, "categorical", structure=structure)
    # oracle matrix: the true dense Fisher for dense/implicit, the approximation's own matrix for diag/kfac
    if structure in ("dense", "implicit"):
        dense = sf.fim(model, x, "categorical", structure="dense").dense()
    else:
        dense = F.dense()
    g = _gen(8)
    anchor = [p.detach() + 0.2 * torch.randn(p.shape, dtype=DT, generator=g) for p in model.parameters()]
    delta = _theta(model) - _flat(anchor)
    strength = 2.5

    penalty = sf.ewc_penalty(model, anchor, F, strength=strength)
    torch.testing.assert_close(penalty.detach(), 0.5 * strength * delta @ dense @ delta, atol=1e-12, rtol=1e-12)
    flat_penalty = sf.ewc_penalty(model, _flat(anchor), F, strength=strength)
    torch.testing.assert_close(flat_penalty.detach(), penalty.detach(), atol=1e-14, rtol=0)

    params = list(model.parameters())
    grads = torch.autograd.grad(penalty, params, create_graph=True)
    torch.testing.assert_close(_flat(grads).detach(), strength * dense @ delta, atol=1e-12, rtol=1e-10)
    v = torch.randn(delta.numel(), dtype=DT, generator=g)
    hv = torch.autograd.grad(_flat(grads) @ v, params)
    torch.testing.assert_close(_flat(hv), strength * dense @ v, atol=1e-12, rtol=1e-10)

    assert float(sf.ewc_penalty(model, anchor, F, strength=0.0).detach()) == 0.0
    assert float(sf.ewc_penalty(model, [p.detach() for p in params], F).detach()) == 0.0


def test_ewc_penalty_rejects_bad_anchors():
    model = _mlp()
    params = list(model.parameters())
    size = sum(p.numel() for p in params)
    F = sf.DiagCurvature(torch.ones(size, dtype=DT))
    bad = [
        torch.zeros(size + 1, dtype=DT),
        torch.zeros(1, size, dtype=DT),
        [p.detach() for p in params[:-1]],
        [p.detach() for p in params[:-1]] + [torch.zeros(7, dtype=DT)],
        [p.detach().reshape(-1) for p in params],
        torch.full((size,), float("nan"), dtype=DT),
        "anchor",
    ]
    for anchor in bad:
        with pytest.raises(ValueError, match="anchor_params"):
            sf.ewc_penalty(model, anchor, F)
    with pytest.raises(ValueError, match="size"):
        sf.ewc_penalty(model, _theta(model), sf.DiagCurvature(torch.ones(size - 1, dtype=DT)))
    with pytest.raises(ValueError, match="strength"):
        sf.ewc_penalty(model, _theta(model), F, strength=-1.0)
    with pytest.raises(ValueError, match="Curvature"):
        sf.ewc_penalty(model, _theta(model), torch.eye(size, dtype=DT))


# ---------------------------------------------------------------------------------------------
# KL curvature check
# ---------------------------------------------------------------------------------------------
def _torch_kl(likelihood, f_p, f_q, var):
    if likelihood == "categorical":
        return kl_divergence(Categorical(logits=f_p), Categorical(logits=f_q)).sum()
    if likelihood == "bernoulli":
        return kl_divergence(Bernoulli(logits=f_p), Bernoulli(logits=f_q)).sum()
    sd = torch.tensor(var, dtype=DT).sqrt()
    return kl_divergence(Normal(f_p, sd), Normal(f_q, sd)).sum()


@pytest.mark.parametrize(
    "likelihood, c, variance", [("categorical", 3, None), ("bernoulli", 2, None), ("gaussian", 2, 0.5)]
)
def test_kl_curvature_ratio_tends_to_one_at_rate_eps(likelihood, c, variance):
    model = _mlp(c=c, seed=2)
    x = torch.randn(20, 3, dtype=DT, generator=_gen(9))
    size = sf.parameter_vector_size(model)
    delta = torch.randn(size, dtype=DT, generator=_gen(10))
    delta = delta / delta.norm()
    eps = (1e-1, 1e-2, 1e-3)
    check = sf.kl_curvature_check(model, x, delta, likelihood, epsilons=eps, variance=variance)

    # the KL divergences are the exact ones (torch.distributions as the oracle)
    names = [n for n, _ in model.named_parameters()]
    f0 = model(x).detach()
    for i, e in enumerate(eps):
        shifted, offset = {}, 0
        for name, p in zip(names, model.parameters()):
            shifted[name] = p.detach() + e * delta[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        f1 = functional_call(model, shifted, (x,)).detach()
        torch.testing.assert_close(check.kl_forward[i], _torch_kl(likelihood, f0, f1, variance), rtol=1e-8, atol=0)
        torch.testing.assert_close(check.kl_reverse[i], _torch_kl(likelihood, f1, f0, variance), rtol=1e-8, atol=0)

    # the quadratic form, with F as an independent dense matrix
    dense = sf.fim(model, x, likelihood, structure="dense", variance=variance).dense()
    torch.testing.assert_close(check.quadratic, 0.5 * torch.tensor(eps, dtype=DT) ** 2 * (delta @ dense @ delta))
    dense_check = sf.kl_curvature_check(model, x, delta, likelihood, epsilons=eps, variance=variance, structure="dense")
    assert abs(dense_check.fisher_quadratic - check.fisher_quadratic) < 1e-12 * check.fisher_quadratic

    for errors in (check.errors_forward, check.errors_reverse):
        assert float(errors[-1]) < 1e-3
        rates = errors[:-1] / errors[1:]
        assert bool(((rates > 6) & (rates < 16)).all()), rates  # |ratio − 1| = O(ε)
    assert "ratio fwd" in str(check)


def test_kl_curvature_exact_for_gaussian_linear_model():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).to(DT)
    x = torch.randn(10, 3, dtype=DT, generator=_gen(11))
    direction = [torch.randn(p.shape, dtype=DT, generator=_gen(12)) for p in model.parameters()]
    check = sf.kl_curvature_check(model, x, direction, "gaussian", variance=torch.tensor([0.3, 2.0]))
    torch.testing.assert_close(check.ratio_forward, torch.ones(3, dtype=DT), atol=1e-10, rtol=0)
    torch.testing.assert_close(check.ratio_reverse, torch.ones(3, dtype=DT), atol=1e-10, rtol=0)


def test_kl_curvature_check_validation():
    model = _mlp()
    x = torch.randn(5, 3, dtype=DT, generator=_gen(13))
    size = sf.parameter_vector_size(model)
    delta = torch.ones(size, dtype=DT)
    for eps in ((), (0.1, 0.0), (-1e-2,), (float("nan"),), "abc"):
        with pytest.raises(ValueError, match="epsilons"):
            sf.kl_curvature_check(model, x, delta, "categorical", epsilons=eps)
    with pytest.raises(ValueError, match="structure"):
        sf.kl_curvature_check(model, x, delta, "categorical", structure="kfac")
    with pytest.raises(ValueError, match="direction"):
        sf.kl_curvature_check(model, x, torch.ones(size + 1, dtype=DT), "categorical")
    with pytest.raises(ValueError, match="null space"):
        sf.kl_curvature_check(model, x, torch.zeros(size, dtype=DT), "categorical")
    with pytest.raises(ValueError, match="variance"):
        sf.kl_curvature_check(model, x, delta, "gaussian")


# ---------------------------------------------------------------------------------------------
# Cramér–Rao
# ---------------------------------------------------------------------------------------------
def test_cramer_rao_bound_normal():
    theta = torch.tensor([0.3, 1.7], dtype=DT)
    for n in (1, 10):
        bound = sf.cramer_rao_bound(lambda t: Normal(t[..., 0], t[..., 1]), theta, n)
        expected = torch.tensor([[1.7**2 / n, 0.0], [0.0, 1.7**2 / (2 * n)]], dtype=DT)
        torch.testing.assert_close(bound, expected, atol=1e-14, rtol=1e-13)


def test_cramer_rao_bound_poisson_and_bernoulli():
    rates = torch.tensor([[2.5], [0.4], [7.0]], dtype=DT)
    bound = sf.cramer_rao_bound(lambda t: Poisson(t[..., 0]), rates, 4)
    torch.testing.assert_close(bound, (rates / 4).unsqueeze(-1), atol=1e-14, rtol=1e-12)
    for p in (0.3, 0.05, 0.9):
        bound = sf.cramer_rao_bound(lambda t: Bernoulli(probs=t[..., 0]), torch.tensor([p], dtype=DT), 7)
        torch.testing.assert_close(bound, torch.tensor([[p * (1 - p) / 7]], dtype=DT), atol=1e-14, rtol=1e-12)


def test_cramer_rao_bound_validates_n():
    family = lambda t: Poisson(t[..., 0])  # noqa: E731
    theta = torch.tensor([1.0], dtype=DT)
    for bad in (0, -3, 2.5, True, "4", None):
        with pytest.raises(ValueError, match="n must be"):
            sf.cramer_rao_bound(family, theta, bad)
    assert sf.cramer_rao_bound(family, theta, np.int64(2)).shape == (1, 1)
    with pytest.raises(ValueError, match="theta"):
        sf.cramer_rao_bound(family, torch.tensor([1]), 2)


def test_ewc_penalty_refuses_a_curvature_of_parameters_in_another_order():
    """The same layers registered in the other order: equal size, other parameter vector; fim records its layout."""

    class Reordered(nn.Module):
        def __init__(self, source: nn.Sequential):
            super().__init__()
            self.head = copy.deepcopy(source[2])  # registered first: its parameters come first
            self.body = copy.deepcopy(source[0])

        def forward(self, x):
            return self.head(torch.tanh(self.body(x)))

    model = _mlp()
    x = torch.randn(10, 3, dtype=DT, generator=_gen(9))
    F = sf.fim(model, x, "categorical", structure="diag")
    assert F.layout == tuple((name, tuple(p.shape)) for name, p in model.named_parameters())
    reordered = Reordered(model)
    torch.testing.assert_close(reordered(x), model(x))  # the same function, another parameter order
    with pytest.raises(ValueError, match=r"fim was built for other parameters or another order: block 0 .* is "
                                         r"'0.weight' of shape \(5, 3\), the model's is 'head.weight' of shape"):
        sf.ewc_penalty(reordered, [p.detach() for p in reordered.parameters()], F)
    # a copy of the model itself (the usual anchor) is accepted, and so is a curvature built by hand
    twin = copy.deepcopy(model)
    assert float(sf.ewc_penalty(twin, [p.detach() for p in twin.parameters()], F).detach()) == 0.0
    by_hand = sf.DiagCurvature(F.diag())
    assert by_hand.layout is None and float(sf.ewc_penalty(reordered, _theta(reordered), by_hand).detach()) == 0.0


def test_adaptive_damping_reduction_ratio_is_the_closed_form_on_a_quadratic():
    """Linear-Gaussian regression: the mean NLL is quadratic with Hessian F (reduction="mean"), so for the step
    δ = −(F + λI)⁻¹ g the ratio is ρ = (gᵀδ + ½ δᵀFδ) / (gᵀδ + ½ δᵀ(F + λI)δ) exactly; ρ > ¾ lowers λ by ⅔."""
    g = _gen(10)
    n, d, var, damping = 40, 3, 0.3, 0.5
    x = torch.randn(n, d, dtype=DT, generator=g)
    y = (x @ torch.tensor([1.0, -2.0, 0.5], dtype=DT) + 0.5 * torch.randn(n, dtype=DT, generator=g))[:, None]
    torch.manual_seed(2)
    model = nn.Linear(d, 1).to(DT)
    dense = sf.fim(model, x, "gaussian", structure="dense", reduction="mean", variance=var).dense()
    opt = sf.NaturalGradient.from_model(model, x, "gaussian", variance=var, lr=1.0, damping=damping,
                                        adaptive_damping=True)

    def closure():
        opt.zero_grad()
        loss = ((y - model(x)) ** 2 / (2 * var)).sum(1).mean()
        loss.backward()
        return loss

    closure()
    grad = _flat([p.grad for p in model.parameters()])
    step = -torch.linalg.solve(dense + damping * torch.eye(d + 1, dtype=DT), grad)
    actual = grad @ step + 0.5 * step @ dense @ step
    expected = float(actual / (actual + 0.5 * damping * step @ step))
    opt.step(closure)
    info = opt.last_solve_info
    assert info.accepted and info.reduction_ratio == pytest.approx(expected, rel=1e-8)
    assert expected > 0.75 and opt.param_groups[0]["damping"] == pytest.approx(damping * 2 / 3)


def test_adaptive_damping_makes_full_natural_gradient_steps_safe_on_an_mlp():
    """lr = 1 with a fixed small damping diverges on a small MLP (the Fisher is only the Gauss–Newton part of
    the Hessian); with Levenberg–Marquardt damping the loss never increases and falls."""
    g = _gen(11)
    x, y = torch.randn(128, 4, dtype=DT, generator=g), torch.randint(3, (128,), generator=g)

    def train(adaptive):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)).to(DT)
        opt = sf.NaturalGradient.from_model(model, x, "categorical", lr=1.0, damping=1e-3, adaptive_damping=adaptive)

        def closure():
            opt.zero_grad()
            loss = nnf.cross_entropy(model(x), y)
            loss.backward()
            return loss

        losses = [float(opt.step(closure).detach()) for _ in range(12)]
        with torch.no_grad():
            return losses + [float(nnf.cross_entropy(model(x), y))], opt

    fixed, _ = train(False)
    assert max(fixed) > 100 * fixed[0], fixed  # the failure this guards against
    adaptive, opt = train(True)
    assert all(b <= a for a, b in zip(adaptive, adaptive[1:])), adaptive
    assert adaptive[-1] < 0.6 * adaptive[0], adaptive
    assert opt.param_groups[0]["damping"] > 1e-3  # raised from the start value where steps overshot


def test_adaptive_damping_needs_a_closure():
    model = _mlp()
    opt = sf.NaturalGradient(model.parameters(), sf.DiagCurvature(torch.ones(38, dtype=DT)), adaptive_damping=True)
    model(torch.randn(2, 3, dtype=DT)).sum().backward()
    with pytest.raises(ValueError, match="needs step\\(closure\\)"):
        opt.step()
