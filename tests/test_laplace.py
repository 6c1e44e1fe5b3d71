"""Laplace posteriors (``scoregeo.fisher.laplace``) against closed forms (float64).

Oracles: Bayesian linear regression, where the Laplace approximation at the MAP
is exact: posterior precision X̃ᵀX̃/σ² + δI, evidence log N(y; 0, σ²I + X̃X̃ᵀ/δ),
predictive N(x̃ᵀθ*, x̃ᵀH⁻¹x̃ + σ²); the evidence formula written independently in
NumPy and maximised by SciPy; Gauss–Hermite quadrature of ∫ σ(f) N(f; m, v) df
for the Monte Carlo classification predictive; the sample covariance of draws.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import torch
from torch import nn

import scoregeo.fisher as sf

DT = torch.float64
VAR, DELTA = 0.25, 2.0


def _regression(n=30, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, dtype=DT, generator=g)
    y = (x @ torch.tensor([1.0, -0.5, 2.0], dtype=DT)[:d] + 0.3 + 0.5 * torch.randn(n, dtype=DT, generator=g))[:, None]
    return x, y


def _map_linear_model(x, y, var=VAR, delta=DELTA) -> tuple[nn.Linear, torch.Tensor]:
    """nn.Linear at the exact MAP of the Gaussian likelihood (σ² = var) and prior N(0, I/δ); returns X̃."""
    xt = torch.cat([x, torch.ones(x.shape[0], 1, dtype=DT)], 1)  # (weight, bias) order
    theta = torch.linalg.solve(xt.T @ xt / var + delta * torch.eye(xt.shape[1], dtype=DT), xt.T @ y[:, 0] / var)
    model = nn.Linear(x.shape[1], 1).to(DT)
    with torch.no_grad():
        model.weight.copy_(theta[:-1][None])
        model.bias.copy_(theta[-1:])
    return model, xt


def test_linear_regression_posterior_evidence_and_predictive_are_exact():
    x, y = _regression()
    model, xt = _map_linear_model(x, y)
    post = sf.laplace(model, (x, y), "gaussian", structure="dense", prior_precision=DELTA, variance=VAR)
    H = xt.T @ xt / VAR + DELTA * torch.eye(4, dtype=DT)
    torch.testing.assert_close(post.posterior_precision(), H, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(post.posterior_covariance(), torch.linalg.inv(H), rtol=1e-10, atol=1e-12)
    evidence = torch.distributions.MultivariateNormal(
        torch.zeros(30, dtype=DT), VAR * torch.eye(30, dtype=DT) + xt @ xt.T / DELTA).log_prob(y[:, 0])
    assert post.log_marginal_likelihood() == pytest.approx(float(evidence), rel=1e-12)

    x_new = torch.randn(5, 3, dtype=DT, generator=torch.Generator().manual_seed(1))
    xt_new = torch.cat([x_new, torch.ones(5, 1, dtype=DT)], 1)
    mean, cov = post.predictive(x_new)
    torch.testing.assert_close(mean[:, 0], xt_new @ post.mean, rtol=1e-12, atol=1e-12)
    expected = (xt_new @ torch.linalg.inv(H) * xt_new).sum(1) + VAR
    torch.testing.assert_close(cov[:, 0, 0], expected, rtol=1e-10, atol=1e-12)


def test_diagonal_structure_uses_the_diagonal_of_the_fisher():
    x, y = _regression()
    model, xt = _map_linear_model(x, y)
    post = sf.laplace(model, (x, y), "gaussian", structure="diag", prior_precision=DELTA, variance=VAR)
    h = (xt * xt).sum(0) / VAR + DELTA
    torch.testing.assert_close(post.posterior_precision(), h, rtol=1e-12, atol=1e-12)
    expected = float(post.log_likelihood - 0.5 * (h.log().sum() - 4 * math.log(DELTA) + DELTA * post.mean @ post.mean))
    assert post.log_marginal_likelihood() == pytest.approx(expected, rel=1e-12)
    x_new = x[:4]
    xt_new = xt[:4]
    _, cov = post.predictive(x_new)
    torch.testing.assert_close(cov[:, 0, 0], (xt_new**2 / h).sum(1) + VAR, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("structure", ["dense", "diag"])
def test_prior_precision_maximises_the_evidence(structure):
    """The fitted δ against SciPy maximising the same evidence written in NumPy (θ* held fixed)."""
    x, y = _regression(seed=3)
    model, xt = _map_linear_model(x, y)
    post = sf.laplace(model, (x, y), "gaussian", structure=structure, prior_precision=DELTA, variance=VAR)
    F = (xt.T @ xt / VAR).numpy()
    if structure == "diag":
        F = np.diag(np.diag(F))
    theta, loglik = post.mean.numpy(), post.log_likelihood

    def neg_evidence(log_delta):
        delta = math.exp(log_delta)
        logdet = np.linalg.slogdet(F + delta * np.eye(4))[1]
        return -(loglik - 0.5 * (logdet - 4 * log_delta + delta * theta @ theta))

    best = math.exp(scipy.optimize.minimize_scalar(neg_evidence, bounds=(-10, 10), method="bounded",
                                                   options={"xatol": 1e-12}).x)
    fitted = post.optimize_prior_precision()
    assert fitted == pytest.approx(best, rel=1e-6) and post.prior_precision == fitted
    assert post.log_marginal_likelihood() >= post.log_marginal_likelihood(DELTA)


def _logistic():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(60, 2, dtype=DT, generator=g)
    y = torch.bernoulli(torch.sigmoid(x @ torch.tensor([2.0, -1.0], dtype=DT)), generator=g)[:, None]
    torch.manual_seed(0)
    model = nn.Linear(2, 1).to(DT)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=200, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y, reduction="sum")
        loss = loss + 0.5 * DELTA * sum((p**2).sum() for p in model.parameters())
        loss.backward()
        return loss

    opt.step(closure)
    return model, x, y


def test_classification_predictives_probit_and_monte_carlo():
    """Bernoulli logistic regression: probit = σ(m/√(1 + πv/8)) with v = x̃ᵀH⁻¹x̃ from the dense H; Monte Carlo
    against Gauss–Hermite quadrature of ∫σ(f)N(f; m, v)df within 4 standard errors (std of σ(f) by quadrature)."""
    model, x, y = _logistic()
    post = sf.laplace(model, (x, y), "bernoulli", structure="dense", prior_precision=DELTA)
    xt = torch.cat([x, torch.ones(60, 1, dtype=DT)], 1)
    p = torch.sigmoid(xt @ post.mean)
    H = (xt.T * (p * (1 - p))) @ xt + DELTA * torch.eye(3, dtype=DT)
    torch.testing.assert_close(post.posterior_precision(), H, rtol=1e-10, atol=1e-10)
    x_new = torch.tensor([[0.5, 0.5], [3.0, -2.0], [-1.0, 4.0]], dtype=DT)
    xt_new = torch.cat([x_new, torch.ones(3, 1, dtype=DT)], 1)
    m = xt_new @ post.mean
    v = (xt_new @ torch.linalg.inv(H) * xt_new).sum(1)
    torch.testing.assert_close(post.predictive(x_new)[:, 0], torch.sigmoid(m / (1 + math.pi * v / 8).sqrt()),
                               rtol=1e-10, atol=1e-12)
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    sig = 1 / (1 + np.exp(-(m.numpy()[:, None] + np.sqrt(v.numpy())[:, None] * nodes)))  # (3, nodes)
    exact = (weights * sig).sum(1) / math.sqrt(2 * math.pi)
    spread = np.sqrt((weights * sig**2).sum(1) / math.sqrt(2 * math.pi) - exact**2)  # std of σ(f)
    S = 20_000
    mc = post.predictive(x_new, method="mc", n_samples=S, generator=torch.Generator().manual_seed(5))[:, 0]
    assert np.all(np.abs(mc.numpy() - exact) < 4 * spread / math.sqrt(S)), (mc, exact, spread)


def test_categorical_probit_sums_to_one_and_samples_have_the_posterior_covariance():
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(40, 3, dtype=DT, generator=g), torch.randint(3, (40,), generator=g)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).to(DT)
    post = sf.laplace(model, (x, y), "categorical", structure="dense", prior_precision=5.0)
    probs = post.predictive(x[:6])
    torch.testing.assert_close(probs.sum(-1), torch.ones(6, dtype=DT))
    draws = post.sample(40_000, generator=torch.Generator().manual_seed(7))
    cov = post.posterior_covariance()
    # each entry's sample covariance errs by about √((Σ_ii Σ_jj + Σ_ij²)/n); 5 standard errors
    se = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / 40_000).sqrt()
    assert bool(((torch.cov(draws.T) - cov).abs() < 5 * se).all())
    assert bool(((draws.mean(0) - post.mean).abs() < 5 * (cov.diagonal() / 40_000).sqrt()).all())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"structure": "full"}, "structure must be one of"),
        ({"prior_precision": 0.0}, "prior_precision"),
        ({"data": torch.zeros(3)}, "pair"),
    ],
)
def test_bad_arguments(kwargs, match):
    x, y = _regression()
    model, _ = _map_linear_model(x, y)
    args = {"data": (x, y), "structure": "dense", "prior_precision": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        sf.laplace(model, args.pop("data"), "gaussian", variance=VAR, **args)


def test_predictive_method_must_fit_the_likelihood():
    x, y = _regression()
    model, _ = _map_linear_model(x, y)
    post = sf.laplace(model, (x, y), "gaussian", variance=VAR)
    with pytest.raises(ValueError, match="does not apply"):
        post.predictive(x, method="probit")


def test_kfac_posterior_is_the_kronecker_fisher_plus_the_prior():
    """Against KFACCurvature.dense() (built from the Kronecker products directly) + δI: the precision, its log
    determinant, the function variance J H⁻¹ Jᵀ and the sample covariance."""
    g = torch.Generator().manual_seed(8)
    x, y = torch.randn(50, 3, dtype=DT, generator=g), torch.randint(3, (50,), generator=g)
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).to(DT)
    post = sf.laplace(model, (x, y), "categorical", structure="kfac", prior_precision=0.7)
    H = sf.fim(model, x, "categorical", structure="kfac").dense() + 0.7 * torch.eye(31, dtype=DT)
    torch.testing.assert_close(post.posterior_precision(), H, rtol=1e-10, atol=1e-10)
    assert post.log_det_posterior_precision() == pytest.approx(float(torch.linalg.slogdet(H)[1]), rel=1e-10)
    J = sf.jacobians(model, x[:5])
    _, variance = post.function_variance(x[:5])
    torch.testing.assert_close(variance, J @ torch.linalg.inv(H) @ J.mT, rtol=1e-8, atol=1e-12)
    draws = post.sample(40_000, generator=torch.Generator().manual_seed(9))
    cov = torch.linalg.inv(H)
    se = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / 40_000).sqrt()
    assert bool(((torch.cov(draws.T) - cov).abs() < 5 * se).all())


def test_last_layer_posterior_is_bayesian_linear_regression_on_the_features():
    """Gaussian regression: with the body fixed, the last layer is linear in its features φ̃ = [φ(x), 1], so
    H = Φ̃ᵀΦ̃/σ² + δI exactly; the model's requires_grad flags are restored afterwards."""
    x, y = _regression(seed=10)
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).to(DT)
    post = sf.laplace(model, (x, y), "gaussian", structure="last_layer", prior_precision=DELTA, variance=VAR)
    with torch.no_grad():
        features = torch.cat([torch.tanh(model[0](x)), torch.ones(30, 1, dtype=DT)], 1)
    H = features.T @ features / VAR + DELTA * torch.eye(6, dtype=DT)
    torch.testing.assert_close(post.posterior_precision(), H, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(post.mean, torch.cat([model[2].weight.reshape(-1), model[2].bias]).detach())
    _, cov = post.predictive(x[:4])
    torch.testing.assert_close(cov[:, 0, 0], (features[:4] @ torch.linalg.inv(H) * features[:4]).sum(1) + VAR,
                               rtol=1e-10, atol=1e-12)
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="nn.Linear"):
        sf.laplace(nn.Sequential(nn.Tanh()), (x, y), "gaussian", structure="last_layer", variance=VAR)


@pytest.mark.parametrize("tail", [None, nn.LogSoftmax(-1)], ids=["linear output", "layer after the last linear"])
def test_last_layer_function_variance_equals_the_differentiated_model(tail):
    """The closed-form last-layer Jacobian [I ⊗ φᵀ, I] (used when the last nn.Linear gives the output) and the
    differentiated model (used when a layer follows it) against J from ``jacobians`` with the body frozen by hand."""
    g = torch.Generator().manual_seed(11)
    x, y = torch.randn(30, 3, dtype=DT, generator=g), torch.randint(3, (30,), generator=g)
    torch.manual_seed(4)
    layers = [nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)] + ([tail] if tail is not None else [])
    model = nn.Sequential(*layers).to(DT)
    post = sf.laplace(model, (x, y), "categorical", structure="last_layer", prior_precision=1.5)
    for p in model[0].parameters():
        p.requires_grad_(False)
    J = sf.jacobians(model, x[:6])
    for p in model[0].parameters():
        p.requires_grad_(True)
    _, variance = post.function_variance(x[:6])
    torch.testing.assert_close(variance, J @ post.posterior_covariance() @ J.mT, rtol=1e-10, atol=1e-12)


def test_calibration_of_a_hand_computed_example():
    """Four predictions of class 0 with confidences 0.9 (right), 0.8 (wrong), 0.6 (right), 0.55 (wrong).
    Bins (0, ½], (½, 1]: all in the second, accuracy ½, mean confidence 0.7125, ECE 0.2125. Bins of width ¼:
    0.6, 0.55 in (½, ¾] and 0.9, 0.8 in (¾, 1], each with accuracy ½."""
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]], dtype=DT)
    labels = torch.tensor([0, 0, 0, 0])
    cal = sf.calibration(probs, labels, n_bins=2)
    assert cal.accuracy == 0.5 and cal.count.tolist() == [0, 4]
    assert cal.ece == pytest.approx(abs(0.5 - (0.9 + 0.8 + 0.6 + 0.55) / 4))
    assert cal.nll == pytest.approx(-(math.log(0.9) + math.log(0.2) + math.log(0.6) + math.log(0.45)) / 4)
    assert math.isnan(float(cal.bin_accuracy[0])) and float(cal.bin_accuracy[1]) == 0.5
    cal4 = sf.calibration(probs, labels, n_bins=4)  # bins of width ¼: 0.55, 0.6 in (½, ¾]; 0.8, 0.9 in (¾, 1]
    assert cal4.count.tolist() == [0, 0, 2, 2]
    assert cal4.ece == pytest.approx(0.5 * abs(0.5 - 0.575) + 0.5 * abs(0.5 - 0.85))
    with pytest.raises(ValueError, match="sum to 1"):
        sf.calibration(probs * 2, labels)
    with pytest.raises(ValueError, match="labels"):
        sf.calibration(probs, torch.tensor([0, 1, 2, 0]))
