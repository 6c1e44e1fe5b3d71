"""K-FAC / KFC (scoregeo.fisher.kfac) against a dense Fisher built here with torch.func.jacrev.

The oracle is F = Σ_n J_nᵀ Λ_n J_n (J_n = ∂f(x_n)/∂θ in ``model.parameters()``
order, Λ_n from the likelihood), computed independently of the K-FAC code.
Where K-FAC is provably exact it must match to rounding:

* one example, Linear layers (and Conv2d layers with a single output position):
  F_block = (Σ_k g_k g_kᵀ) ⊗ ā āᵀ exactly;
* a deep *linear* network with a Gaussian likelihood of fixed variance, on any
  number of different examples: g_n = (∂f/∂s)ᵀ B does not depend on n (∂f/∂s is
  a product of the later weight matrices, B = σ⁻¹ I), so
  Σ_n g gᵀ ⊗ ā_n ā_nᵀ = (N g gᵀ) ⊗ (1/N Σ_n ā_n ā_nᵀ) = G ⊗ A: every diagonal
  block is exact (cross-layer blocks are dropped).
"""


import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

import scoregeo.fisher as sf
from scoregeo.fisher.kfac import KFACCurvature, kfac_fisher
from scoregeo.fisher.likelihoods import Bernoulli, Categorical, Gaussian

DT = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- oracle
def _trainable(model):
    return {k: p for k, p in model.named_parameters() if p.requires_grad}


def _jacobian(model, x):
    """Per-example Jacobians J (N, C, P) of the output w.r.t. the trainable parameters (parameters() order)."""
    params = {k: p.detach() for k, p in _trainable(model).items()}

    def f(p, xn):
        return functional_call(model, p, (xn.unsqueeze(0),)).squeeze(0)

    rows = []
    for xn in x:
        jac = jacrev(f)(params, xn)  # dict name -> (C, *shape)
        rows.append(torch.cat([jac[k].reshape(jac[k].shape[0], -1) for k in params], dim=1))
    return torch.stack(rows)


def dense_fisher(model, x, lik, kind="true", targets=None):
    J = _jacobian(model, x)
    with torch.no_grad():
        out = model(x)
    if kind == "true":
        lam = lik.precision(out)
    else:  # empirical
        s = lik.output_score(out, targets)
        lam = s.unsqueeze(-1) * s.unsqueeze(-2)
    return torch.einsum("nci,ncd,ndj->ij", J, lam, J)


def layer_mask(model):
    """Boolean (P, P) mask of the per-module diagonal blocks (each module's own trainable parameters)."""
    pos, start = {}, 0
    for p in model.parameters():
        if p.requires_grad:
            pos[id(p)] = torch.arange(start, start + p.numel())
            start += p.numel()
    mask = torch.zeros(start, start, dtype=torch.bool)
    for m in model.modules():
        idx = [pos[id(p)] for p in m._parameters.values() if p is not None and id(p) in pos]
        if idx:
            i = torch.cat(idx)
            mask[i[:, None], i[None, :]] = True
    return mask


def close(a, b, rtol=1e-10, atol=1e-12):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("bias", [True, False])
def test_softmax_regression_one_example_exact(bias):
    torch.manual_seed(0)
    model = nn.Linear(4, 3, bias=bias).to(DT)
    x = torch.randn(1, 4, dtype=DT)
    lik = Categorical()
    K = kfac_fisher(model, x, lik)
    assert isinstance(K, KFACCurvature) and K.size == 3 * 4 + 3 * bias
    oracle = dense_fisher(model, x, lik)
    close(K.dense(), oracle)

    # Closed form (diag(p) − ppᵀ) ⊗ x̃x̃ᵀ, x̃ = [x, 1], rearranged to [W row-major, b].
    p = torch.softmax(model(x), -1)[0].detach()
    lam = torch.diag(p) - torch.outer(p, p)
    xt = torch.cat([x[0], torch.ones(1, dtype=DT)]) if bias else x[0]
    kron = torch.kron(lam, torch.outer(xt, xt))  # [W | b] row-major layout
    d = xt.numel()
    perm = [i * d + j for i in range(3) for j in range(4)] + ([i * d + 4 for i in range(3)] if bias else [])
    perm = torch.tensor(perm)
    close(K.dense(), kron[perm[:, None], perm[None, :]])


class BiasFirstLinear(nn.Linear):
    """A Linear whose parameters() yields the bias before the weight."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        w = self.weight
        del self.weight
        self.weight = w


def test_parameter_order_bias_before_weight():
    torch.manual_seed(1)
    model = nn.Sequential(BiasFirstLinear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(DT)
    names = [k for k, _ in model.named_parameters()]
    assert names[:2] == ["0.bias", "0.weight"]
    x = torch.randn(1, 3, dtype=DT)
    lik = Categorical()
    oracle = dense_fisher(model, x, lik)
    close(kfac_fisher(model, x, lik).dense(), oracle * layer_mask(model))


@pytest.mark.parametrize("frozen", ["weight", "bias"])
def test_partially_frozen_layer_one_example_exact(frozen):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).to(DT)
    getattr(model[0], frozen).requires_grad_(False)
    x = torch.randn(1, 3, dtype=DT)
    lik = Categorical()
    K = kfac_fisher(model, x, lik)
    assert K.size == sum(p.numel() for p in model.parameters() if p.requires_grad)
    close(K.dense(), dense_fisher(model, x, lik) * layer_mask(model))


def test_one_example_deep_nonlinear_blocks_exact_and_empirical():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).to(DT)
    x = torch.randn(1, 3, dtype=DT)
    y = torch.tensor([2])
    lik = Categorical()
    mask = layer_mask(model)
    close(kfac_fisher(model, x, lik).dense(), dense_fisher(model, x, lik) * mask)
    emp = kfac_fisher(model, x, lik, kind="empirical", targets=y)
    close(emp.dense(), dense_fisher(model, x, lik, "empirical", y) * mask)


@pytest.mark.parametrize("n", [1, 7])
def test_deep_linear_gaussian_exact_on_diagonal_blocks(n):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5, bias=False), nn.Linear(5, 2)).to(DT)
    x = torch.randn(n, 3, dtype=DT)  # n different inputs
    lik = Gaussian(0.5)
    oracle = dense_fisher(model, x, lik)
    mask = layer_mask(model)
    K = kfac_fisher(model, x, lik)
    close(K.dense(), oracle * mask)
    assert oracle[~mask].abs().max() > 1e-3  # the cross-layer blocks K-FAC drops are really there
    # mean reduction divides by N exactly
    close(kfac_fisher(model, x, lik, reduction="mean").dense(), oracle * mask / n)


def test_nonlinear_network_on_many_examples_is_only_approximate():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(DT)
    x = torch.randn(6, 3, dtype=DT)
    lik = Gaussian(0.5)
    mask = layer_mask(model)
    err = (kfac_fisher(model, x, lik).dense() - dense_fisher(model, x, lik) * mask).abs().max()
    assert err > 1e-3  # the exactness tests above are not vacuous


def test_inplace_activation_after_layer():
    torch.manual_seed(6)
    a = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Linear(4, 3)).to(DT)
    b = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3)).to(DT)
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 3, dtype=DT)
    close(kfac_fisher(a, x, Categorical()).dense(), kfac_fisher(b, x, Categorical()).dense())
    x1 = x[:1]
    close(kfac_fisher(a, x1, Categorical()).dense(), dense_fisher(b, x1, Categorical()) * layer_mask(b))


def test_linear_on_sequence_inputs_expands_over_positions():
    """A Linear on (N, T, in): A averages ā āᵀ over the N·T rows, G sums g gᵀ over them."""
    torch.manual_seed(16)
    lin = nn.Linear(3, 4).to(DT)
    head = nn.Linear(4 * 5, 3).to(DT)
    model = nn.Sequential(lin, nn.Flatten(), head)
    x = torch.randn(2, 5, 3, dtype=DT)
    lik = Categorical()
    block = kfac_fisher(model, x, lik).blocks[0]
    rows = torch.cat([x.reshape(-1, 3), torch.ones(10, 1, dtype=DT)], 1)
    close(block.A, rows.T @ rows / 10)
    lam = lik.precision(model(x).detach())
    Wt = head.weight.detach().reshape(3, 5, 4)  # (C, T, out)
    close(block.G, torch.einsum("cto,ncd,dtp->op", Wt, lam, Wt))


def test_unused_layer_gives_zero_block_and_foreign_use_is_refused():
    class Net(nn.Module):
        def __init__(self, tie):
            super().__init__()
            self.fc = nn.Linear(3, 4)
            self.spare = nn.Linear(4, 4)
            self.out = nn.Linear(4, 2)
            self.tie = tie

        def forward(self, x):
            h = torch.tanh(self.fc(x))
            if self.tie:  # uses spare's weight without calling spare
                h = torch.nn.functional.linear(h, self.spare.weight)
            return self.out(h)

    torch.manual_seed(17)
    net = Net(False).to(DT)
    x = torch.randn(1, 3, dtype=DT)
    K = kfac_fisher(net, x, Categorical())
    close(K.dense(), dense_fisher(net, x, Categorical()) * layer_mask(net))
    assert torch.equal(K.blocks[1].A, torch.zeros(5, 5, dtype=DT))
    assert torch.equal(K.blocks[1].G, torch.zeros(4, 4, dtype=DT))
    with pytest.raises(ValueError, match=r"'spare' \(Linear\).*never called"):
        kfac_fisher(Net(True).to(DT), x, Categorical())


# --------------------------------------------------------------------------- operator
def _mixed_model():
    torch.manual_seed(7)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1),
        nn.Tanh(),
        nn.Conv2d(3, 2, 2, bias=False),
        nn.Flatten(),
        nn.Linear(2 * 2 * 2, 5),
        nn.Tanh(),
        nn.Linear(5, 3, bias=False),
    ).to(DT)
    x = torch.randn(4, 2, 6, 6, dtype=DT)
    return model, x


def test_operator_identities():
    model, x = _mixed_model()
    K = kfac_fisher(model, x, Categorical())
    D = K.dense()
    P = K.size
    assert D.shape == (P, P) and P == sum(p.numel() for p in model.parameters())
    close(D, D.T, rtol=0, atol=1e-14)
    assert torch.linalg.eigvalsh(D).min() > -1e-12
    g = torch.Generator().manual_seed(0)
    v = torch.randn(P, dtype=DT, generator=g)
    V = torch.randn(P, 3, dtype=DT, generator=g)
    close(K.mv(v), D @ v)
    close(K @ v, D @ v)
    close(K.mv(V), D @ V)
    close(K.diag(), torch.diagonal(D))
    close(K.trace(), torch.trace(D))
    for lam in (1e-3, 0.7):
        ref = torch.linalg.solve(D + lam * torch.eye(P, dtype=DT), v)
        close(K.solve(v, lam), ref, rtol=1e-10, atol=1e-10 * ref.abs().max().item())
        refV = torch.linalg.solve(D + lam * torch.eye(P, dtype=DT), V)
        close(K.solve(V, lam), refV, rtol=1e-10, atol=1e-10 * refV.abs().max().item())
    # solve inverts mv
    close(K.solve(K.mv(v) + 0.3 * v, 0.3), v, rtol=1e-10, atol=1e-10)


def test_reduction_mean_is_sum_over_n():
    model, x = _mixed_model()
    n = x.shape[0]
    y = torch.tensor([0, 2, 1, 1])
    for kind, kw in (("true", {}), ("empirical", {"targets": y})):
        s = kfac_fisher(model, x, Categorical(), kind=kind, **kw)
        m = kfac_fisher(model, x, Categorical(), kind=kind, reduction="mean", **kw)
        close(m.dense(), s.dense() / n, rtol=1e-14, atol=0)
        for bs, bm in zip(s.blocks, m.blocks):
            assert torch.equal(bm.G, bs.G / n) and torch.equal(bm.A, bs.A)


def test_no_hooks_left_on_model():
    model, x = _mixed_model()
    kfac_fisher(model, x, Categorical())
    with pytest.raises(ValueError):
        kfac_fisher(model, x, Categorical(), kind="empirical")
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


# --------------------------------------------------------------------------- Conv2d (KFC)
def test_conv_1x1_on_1x1_image_equals_linear():
    torch.manual_seed(8)
    conv = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten()).to(DT)
    lin = nn.Linear(3, 4).to(DT)
    with torch.no_grad():
        lin.weight.copy_(conv[0].weight.reshape(4, 3))
        lin.bias.copy_(conv[0].bias)
    x = torch.randn(5, 3, dtype=DT)
    lik = Categorical()
    Kc = kfac_fisher(conv, x.reshape(5, 3, 1, 1), lik)
    Kl = kfac_fisher(lin, x, lik)
    close(Kc.dense(), Kl.dense())
    close(kfac_fisher(conv, x[:1].reshape(1, 3, 1, 1), lik).dense(), dense_fisher(lin, x[:1], lik))


@pytest.mark.parametrize(
    "conv_kwargs, hw",
    [
        (dict(kernel_size=3), 3),  # one output position: exact on one example
        (dict(kernel_size=3, padding=1), 1),  # padding zeros inside the single patch
        (dict(kernel_size=(2, 3), dilation=(2, 1), stride=3, padding_mode="reflect", padding=1), 2),
    ],
)
def test_conv_with_one_output_position_one_example_exact(conv_kwargs, hw):
    torch.manual_seed(9)
    model = nn.Sequential(nn.Conv2d(2, 3, **conv_kwargs), nn.Tanh(), nn.Flatten()).to(DT)
    x = torch.randn(1, 2, hw, hw, dtype=DT)
    assert model(x).shape == (1, 3)
    lik = Categorical()
    close(kfac_fisher(model, x, lik).dense(), dense_fisher(model, x, lik))


def _patches_by_loop(x, k, stride, padding, dilation, mode):
    """Rows of patches (N·L, C·kh·kw) by explicit slicing, output positions row-major."""
    kh, kw = k
    if padding:
        x = torch.nn.functional.pad(x, (padding[1], padding[1], padding[0], padding[0]), mode=mode)
    n, c, h, w = x.shape
    oh = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    rows = []
    for i in range(n):
        for u in range(oh):
            for v in range(ow):
                patch = torch.empty(c, kh, kw, dtype=x.dtype)
                for a in range(kh):
                    for b in range(kw):
                        patch[:, a, b] = x[i, :, u * stride[0] + a * dilation[0], v * stride[1] + b * dilation[1]]
                rows.append(patch.reshape(-1))
    return torch.stack(rows), oh * ow


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=3, stride=1, padding=2, dilation=2, padding_mode="reflect", bias=False),
        dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0)),
    ],
)
def test_conv_kfc_factors_against_explicit_formula(kw):
    """A = mean over examples and output positions of ā āᵀ; G = Σ_{n,t} Σ_k g gᵀ (KFC)."""
    torch.manual_seed(10)
    conv = nn.Conv2d(2, 3, **kw).to(DT)
    x = torch.randn(3, 2, 6, 6, dtype=DT)
    oh, ow = conv(x).shape[-2:]
    head = nn.Linear(3 * oh * ow, 4).to(DT)
    model = nn.Sequential(conv, nn.Flatten(), head)
    lik = Categorical()
    K = kfac_fisher(model, x, lik)
    conv_block = K.blocks[0]

    pads = conv.padding
    rows, L = _patches_by_loop(x, conv.kernel_size, conv.stride, pads, conv.dilation,
                               "constant" if conv.padding_mode == "zeros" else conv.padding_mode)
    assert L == oh * ow
    if conv.bias is not None:
        rows = torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=DT)], 1)
    close(conv_block.A, rows.T @ rows / rows.shape[0])

    # ∂f/∂s at output position t is the slice of the head's weight: G = Σ_n Σ_t W_tᵀ Λ_n W_t.
    lam = lik.precision(model(x).detach())
    Wt = head.weight.detach().reshape(4, 3, L)
    G = torch.einsum("cot,ncd,dpt->op", Wt, lam, Wt)
    close(conv_block.G, G)

    # symmetric PSD factors, and the operator matches its dense matrix
    for F_ in (conv_block.A, conv_block.G):
        close(F_, F_.T, rtol=0, atol=0)
        assert torch.linalg.eigvalsh(F_).min() > -1e-12
    v = torch.randn(K.size, dtype=DT)
    close(K.mv(v), K.dense() @ v)


def test_conv_3x3_stride2_runs_psd_and_mv():
    torch.manual_seed(11)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(36, 3)).to(DT)
    x = torch.randn(5, 2, 6, 6, dtype=DT)
    K = kfac_fisher(model, x, Categorical())
    A, G = K.blocks[0].A, K.blocks[0].G
    assert A.shape == (2 * 9 + 1, 2 * 9 + 1) and G.shape == (4, 4)
    for F_ in (A, G):
        close(F_, F_.T, rtol=0, atol=0)
        assert torch.linalg.eigvalsh(F_).min() > -1e-12
    D = K.dense()
    close(D, D.T, rtol=0, atol=1e-14)
    assert torch.linalg.eigvalsh(D).min() > -1e-12
    v = torch.randn(K.size, dtype=DT)
    close(K.mv(v), D @ v)


# --------------------------------------------------------------------------- kinds, likelihoods
def test_mc_converges_to_true_and_is_reproducible():
    torch.manual_seed(12)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).to(DT)
    x = torch.randn(2, 3, dtype=DT)
    lik = Categorical()
    true = kfac_fisher(model, x, lik).dense()
    mc = kfac_fisher(model, x, lik, kind="mc", n_samples=3000, generator=torch.Generator().manual_seed(0)).dense()
    rel = torch.linalg.norm(mc - true) / torch.linalg.norm(true)
    assert rel < 0.08, rel
    a = kfac_fisher(model, x, lik, kind="mc", n_samples=3, generator=torch.Generator().manual_seed(1)).dense()
    b = kfac_fisher(model, x, lik, kind="mc", n_samples=3, generator=torch.Generator().manual_seed(1)).dense()
    assert torch.equal(a, b)


@pytest.mark.parametrize("lik", [Bernoulli(), Gaussian(torch.tensor([0.5, 2.0]))])
def test_other_likelihoods_one_example_exact(lik):
    torch.manual_seed(13)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(DT)
    x = torch.randn(1, 3, dtype=DT)
    close(kfac_fisher(model, x, lik).dense(), dense_fisher(model, x, lik) * layer_mask(model))


def test_likelihood_spec_string():
    torch.manual_seed(14)
    model = nn.Linear(3, 2).to(DT)
    x = torch.randn(4, 3, dtype=DT)
    close(kfac_fisher(model, x, "categorical").dense(), kfac_fisher(model, x, Categorical()).dense())


def test_confident_model_no_nan():
    torch.manual_seed(15)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).to(DT)
    with torch.no_grad():
        model[2].weight.mul_(100)
        model[2].bias.mul_(100)
    x = torch.randn(6, 3, dtype=DT)
    assert model(x).abs().max() > 50
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    for kind in ("true", "mc", "empirical"):
        K = kfac_fisher(model, x, Categorical(), kind=kind, targets=y, n_samples=2,
                        generator=torch.Generator().manual_seed(0))
        for t in (K.dense(), K.diag(), K.solve(torch.ones(K.size, dtype=DT), 1e-3), K.trace()):
            assert torch.isfinite(t).all()


# --------------------------------------------------------------------------- errors
def test_unsupported_layers_are_named():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 4)
            self.norm = nn.LayerNorm(4)
            self.out = nn.Linear(4, 2)

        def forward(self, x):
            return self.out(self.norm(self.fc(x)))

    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"'norm' \(LayerNorm\).*nn\.Linear.*nn\.Conv2d"):
        kfac_fisher(Net(), x, Categorical())
    net = Net()
    net.norm.requires_grad_(False)  # frozen LayerNorm parameters are fine
    assert kfac_fisher(net, x, Categorical()).size == 4 * 3 + 4 + 2 * 4 + 2

    grouped = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"'0' \(Conv2d\).*groups=2"):
        kfac_fisher(grouped, torch.randn(2, 2, 3, 3), Categorical())
    conv1d = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Flatten())
    with pytest.raises(ValueError, match=r"'0' \(Conv1d\)"):
        kfac_fisher(conv1d, torch.randn(2, 2, 3), Categorical())


def test_argument_errors():
    model = nn.Linear(3, 2)
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="targets"):
        kfac_fisher(model, x, Categorical(), kind="empirical")
    with pytest.raises(ValueError, match="kind"):
        kfac_fisher(model, x, Categorical(), kind="exact")
    with pytest.raises(ValueError, match="reduction"):
        kfac_fisher(model, x, Categorical(), reduction="none")
    with pytest.raises(ValueError, match="n_samples"):
        kfac_fisher(model, x, Categorical(), kind="mc", n_samples=0)
    twice = nn.Sequential(model, nn.Tanh(), nn.Linear(2, 2))
    twice[2] = twice[0] = nn.Linear(2, 2)  # the same layer applied twice
    with pytest.raises(ValueError, match="more than once"):
        kfac_fisher(twice, torch.randn(2, 2), Categorical())
    K = kfac_fisher(model, x, Categorical())
    with pytest.raises(ValueError, match="shape"):
        K.mv(torch.ones(5))
    for bad in (-1.0, 0.0):
        with pytest.raises(ValueError, match="damping"):
            K.solve(torch.ones(K.size), bad)


@pytest.mark.parametrize("inplace", [False, True])
def test_backward_passes_go_to_layer_outputs_unless_modified_in_place(monkeypatch, inplace):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=inplace), nn.Linear(4, 3)).to(DT)
    reference = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3)).to(DT)
    reference.load_state_dict(model.state_dict())
    x = torch.randn(6, 3, dtype=DT, generator=torch.Generator().manual_seed(1))
    params = {id(p) for p in model.parameters()}
    seen = []
    grad = torch.autograd.grad

    def recording_grad(outputs, inputs, *args, **kwargs):
        seen.append(("params" if all(id(t) in params for t in inputs) else "outputs",
                     kwargs.get("is_grads_batched", False)))
        return grad(outputs, inputs, *args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", recording_grad)
    got = kfac_fisher(model, x, Categorical()).dense()
    got_diag = sf.fim(model, x, "categorical", structure="diag").diag()
    monkeypatch.setattr(torch.autograd, "grad", grad)
    # C − 1 = 2 passes (rows of the factor of Λ): to the parameters one by one after an in-place change,
    # else to the layer outputs as one batched pass
    assert seen == ([("params", False)] * 2 if inplace else [("outputs", True)]) * 2
    assert torch.allclose(got, kfac_fisher(reference, x, Categorical()).dense(), rtol=0, atol=1e-14)
    dense = sf.fim(reference, x, "categorical").dense()
    assert torch.allclose(got_diag, dense.diagonal(), rtol=0, atol=1e-14)
