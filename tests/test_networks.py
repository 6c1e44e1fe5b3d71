"""Score networks (``scoregeo.scores.networks``).

Oracles: central finite differences for the torch.func derivatives of the MLP
(float64), the batched call for ``vmap``, exact zeros for the zero-initialised
output layer and for the off-diagonal Jacobian blocks (per-example
independence), and the original module for the config round trip.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.func import jacrev, vjp, vmap

from scoregeo.metrics.score import ScoreMetric
from scoregeo.scores.networks import (
    NoiseConditionalMLP,
    SinusoidalEmbedding,
    UNet,
    build_network,
    network_config,
)
from scoregeo.scores.parameterization import output_to_score

F64 = torch.float64


def perturb_output(net: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Give the zero-initialised output layer random weights so that the output depends on the input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.output.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


def mlp(dim: int = 3, seed: int = 0, **kw) -> NoiseConditionalMLP:
    torch.manual_seed(seed)
    kw = {"hidden": 16, "n_blocks": 2, "embed_dim": 8, **kw}
    return perturb_output(NoiseConditionalMLP(dim, **kw), seed)


def unet(c: int = 1, seed: int = 0, **kw) -> UNet:
    torch.manual_seed(seed)
    kw = {"base_channels": 8, "embed_dim": 8, **kw}
    return perturb_output(UNet(c, **kw), seed)


# ---------------------------------------------------------------- embedding


def test_embedding_shape_and_frequencies():
    emb = SinusoidalEmbedding(8, scale=2.0)
    c = torch.tensor([0.0, 1.5, -3.0])
    out = emb(c)
    assert out.shape == (3, 8)
    freqs = 2.0 * 1000.0 ** (torch.arange(4) / 3 - 0.5)
    torch.testing.assert_close(emb.freqs, freqs)
    torch.testing.assert_close(out[:, :4], torch.sin(c[:, None] * freqs))
    torch.testing.assert_close(out[:, 4:], torch.cos(c[:, None] * freqs))
    assert "freqs" not in emb.state_dict()
    assert emb.to(F64)(c.to(F64)).dtype == F64


@pytest.mark.parametrize("kw, match", [({"dim": 7}, "dim"), ({"dim": 0}, "dim"), ({"dim": 4, "scale": -1.0}, "scale")])
def test_embedding_bad_args(kw, match):
    with pytest.raises(ValueError, match=match):
        SinusoidalEmbedding(**kw)


# ---------------------------------------------------------------- shapes, dtypes, sigma


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("d", [2, 5])
def test_mlp_shapes(d, dtype):
    net = mlp(d).to(dtype)
    x = torch.randn(4, d, dtype=dtype)
    out = net(x, 0.5)
    assert out.shape == (4, d) and out.dtype == dtype
    # scalar, 0-d, (1,) and (B,) sigma give identical results
    for sigma in (torch.tensor(0.5), torch.tensor([0.5]), torch.full((4,), 0.5, dtype=F64)):
        torch.testing.assert_close(net(x, sigma), out, rtol=0, atol=0)
    # extra leading dims (n1, n2, d) with scalar sigma: same as the flat batch
    x3 = torch.randn(2, 3, d, dtype=dtype)
    out3 = net(x3, 0.5)
    assert out3.shape == (2, 3, d)
    torch.testing.assert_close(out3, net(x3.reshape(6, d), 0.5).reshape(2, 3, d))
    # per-row sigma (2,) over (2, 3, d) broadcasts over the second dim
    sig = torch.tensor([0.5, 2.0], dtype=dtype)
    torch.testing.assert_close(net(x3, sig)[1], net(x3[1], 2.0))
    # a single point (d,)
    torch.testing.assert_close(net(x[0], 0.5), out[0])


@pytest.mark.parametrize(
    "c, hw, dtype, kw",
    [
        (1, (8, 8), torch.float32, {}),
        (3, (32, 32), torch.float32, {}),
        (1, (28, 28), torch.float32, {"channel_mults": (1, 2, 2)}),  # 28 -> 14 -> 7
        (1, (7, 9), F64, {"channel_mults": (1, 1, 2)}),  # odd sizes: 7 -> 4 -> 2
        (2, (8, 8), F64, {"n_res_blocks": 2}),
    ],
)
def test_unet_shapes(c, hw, dtype, kw):
    net = unet(c, **kw).to(dtype)
    x = torch.randn(2, c, *hw, dtype=dtype)
    out = net(x, 0.3)
    assert out.shape == x.shape and out.dtype == dtype
    torch.testing.assert_close(net(x, torch.full((2,), 0.3, dtype=dtype)), out, rtol=0, atol=0)
    torch.testing.assert_close(net(x, torch.tensor([0.3], dtype=dtype)), out, rtol=0, atol=0)


# ---------------------------------------------------------------- init and conditioning


def test_zero_init_output_is_exactly_zero():
    x = torch.randn(5, 3)
    for net in (NoiseConditionalMLP(3), NoiseConditionalMLP(3, conditional=False)):
        assert torch.equal(net(x, 0.7), torch.zeros_like(x))
    img = torch.randn(2, 1, 8, 8)
    assert torch.equal(UNet()(img, 0.7), torch.zeros_like(img))


def test_conditioning_matters():
    net = mlp(4)
    x = torch.randn(6, 4)
    a, b = net(x, 0.1), net(x, 1.0)
    assert (a - b).abs().max() > 1e-3
    # per-example sigma: each row sees its own noise level
    sig = torch.tensor([0.1, 1.0, 0.1, 1.0, 0.1, 1.0])
    mixed = net(x, sig)
    torch.testing.assert_close(mixed[0::2], a[0::2])
    torch.testing.assert_close(mixed[1::2], b[1::2])

    u = unet(1)
    img = torch.randn(2, 1, 8, 8)
    assert (u(img, 0.1) - u(img, 1.0)).abs().max() > 1e-4


def test_unconditional_ignores_sigma():
    net = mlp(3, conditional=False)
    x = torch.randn(4, 3)
    out = net(x)
    assert out.abs().max() > 0
    torch.testing.assert_close(net(x, 0.1), out, rtol=0, atol=0)
    torch.testing.assert_close(net(x, torch.full((4,), 5.0)), out, rtol=0, atol=0)
    assert net.embed is None


# ---------------------------------------------------------------- torch.func


def central_jacobian(f, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """J[..., i, j] = ∂f_i/∂x_j of f: (d,) → (d,) by central differences."""
    cols = []
    for j in range(x.shape[-1]):
        e = torch.zeros_like(x)
        e[j] = h
        cols.append((f(x + e) - f(x - e)) / (2 * h))
    return torch.stack(cols, dim=-1)


@pytest.mark.parametrize("conditional", [True, False])
def test_mlp_jacobian_matches_finite_differences(conditional):
    net = mlp(3, conditional=conditional).to(F64)
    x0 = torch.randn(3, dtype=F64)

    def f(x):
        return net(x, 0.4)

    jac = jacrev(f)(x0)
    fd = central_jacobian(f, x0)
    torch.testing.assert_close(jac, fd, rtol=1e-6, atol=1e-8)
    # vjp against the same oracle
    u = torch.randn(3, dtype=F64)
    _, pullback = vjp(f, x0)
    torch.testing.assert_close(pullback(u)[0], fd.T @ u, rtol=1e-6, atol=1e-8)
    # second derivative: d/dx of (uᵀ J(x) v), vjp of vjp, against finite differences of jacrev
    v = torch.randn(3, dtype=F64)

    def uJv(x):
        _, pb = vjp(f, x)
        return (pb(u)[0] * v).sum()

    g = torch.func.grad(uJv)(x0)
    h = 1e-5
    fd2 = torch.stack([(u @ jacrev(f)(x0 + h * e) @ v - u @ jacrev(f)(x0 - h * e) @ v) / (2 * h)
                       for e in torch.eye(3, dtype=F64)])
    torch.testing.assert_close(g, fd2, rtol=1e-5, atol=1e-7)


def test_vmap_matches_batched_call():
    net = mlp(4).to(F64)
    x = torch.randn(5, 4, dtype=F64)
    sig = torch.linspace(0.1, 2.0, 5, dtype=F64)
    torch.testing.assert_close(vmap(lambda xi: net(xi, 0.3))(x), net(x, 0.3))
    torch.testing.assert_close(vmap(net)(x, sig), net(x, sig))
    # batched Jacobians under vmap (what jacrev over a batch of points does)
    jac = vmap(jacrev(lambda xi: net(xi, torch.tensor([0.3], dtype=F64))))(x)
    assert jac.shape == (5, 4, 4)

    u = unet(1).to(F64)
    img = torch.randn(3, 1, 8, 8, dtype=F64)
    torch.testing.assert_close(vmap(lambda xi: u(xi, 0.3))(img), u(img, 0.3))


def test_score_metric_acceleration_with_network():
    """ScoreMetric differentiates the network by a VJP of a VJP on (B, n, d) batches."""
    net = mlp(2).to(F64)
    metric = ScoreMetric(lambda x: output_to_score(net(x, 0.5), 0.5, "scaled"), dim=2)
    x = torch.randn(3, 4, 2, dtype=F64)
    v = torch.randn(3, 4, 2, dtype=F64)
    acc = metric.acceleration(x, v)
    assert acc.shape == (3, 4, 2) and torch.isfinite(acc).all()
    torch.testing.assert_close(acc[1, 2], metric.acceleration(x[1, 2], v[1, 2]))


# ---------------------------------------------------------------- per-example independence


def test_mlp_examples_are_independent():
    net = mlp(3).to(F64)
    x = torch.randn(4, 3, dtype=F64)
    jac = jacrev(lambda y: net(y, 0.5))(x)  # (4, 3, 4, 3)
    for i in range(4):
        for j in range(4):
            block = jac[i, :, j, :]
            if i == j:
                assert block.abs().max() > 0
            else:
                assert torch.equal(block, torch.zeros_like(block))


def test_unet_examples_are_independent():
    net = unet(2, base_channels=4, embed_dim=4).to(F64)
    net.train()  # no train-mode batch statistics either
    x = torch.randn(3, 2, 6, 6, dtype=F64)
    sig = torch.tensor([0.2, 0.5, 1.0], dtype=F64)
    out, pullback = vjp(lambda y: net(y, sig), x)
    for i in range(3):
        cot = torch.zeros_like(out)
        cot[i] = torch.randn(out.shape[1:], dtype=F64)
        (g,) = pullback(cot)
        assert g[i].abs().max() > 0
        others = torch.cat([g[:i], g[i + 1 :]])
        assert torch.equal(others, torch.zeros_like(others))


# ---------------------------------------------------------------- config round trip


@pytest.mark.parametrize(
    "make, x",
    [
        (lambda: mlp(3, activation="gelu"), torch.randn(4, 3)),
        (lambda: mlp(2, conditional=False), torch.randn(4, 2)),
        (lambda: unet(3, channel_mults=(1, 2, 2)), torch.randn(2, 3, 8, 8)),
    ],
)
def test_config_round_trip(make, x):
    net = make()
    config = json.loads(json.dumps(network_config(net)))
    rebuilt = build_network(config)
    rebuilt.load_state_dict(net.state_dict())
    assert network_config(rebuilt) == config
    torch.testing.assert_close(rebuilt(x, 0.3), net(x, 0.3), rtol=0, atol=0)


@pytest.mark.parametrize(
    "config, match",
    [
        ({"dim": 2}, "type"),
        ({"type": "transformer"}, "type"),
        ({"type": "mlp", "dim": 2, "widht": 3}, "widht"),
        ({"type": "mlp"}, "dim"),
        ({"type": "mlp", "dim": 2, "activation": "relu"}, "activation"),
        ({"type": "unet", "channel_mults": []}, "channel_mults"),
        ("mlp", "dict"),
    ],
)
def test_bad_config(config, match):
    with pytest.raises(ValueError, match=match):
        build_network(config)


def test_network_config_rejects_other_modules():
    with pytest.raises(ValueError, match="net"):
        network_config(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------- argument validation


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"dim": 0}, "dim"),
        ({"dim": 2.0}, "dim"),
        ({"dim": 2, "hidden": 0}, "hidden"),
        ({"dim": 2, "n_blocks": -1}, "n_blocks"),
        ({"dim": 2, "embed_dim": 7}, "embed_dim"),
        ({"dim": 2, "activation": "relu"}, "activation"),
        ({"dim": 2, "conditional": "yes"}, "conditional"),
    ],
)
def test_mlp_bad_args(kw, match):
    with pytest.raises(ValueError, match=match):
        NoiseConditionalMLP(**kw)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"in_channels": 0}, "in_channels"),
        ({"base_channels": True}, "base_channels"),
        ({"channel_mults": (1, 0)}, "channel_mults"),
        ({"channel_mults": 2}, "channel_mults"),
        ({"n_res_blocks": 0}, "n_res_blocks"),
        ({"embed_dim": 3}, "embed_dim"),
    ],
)
def test_unet_bad_args(kw, match):
    with pytest.raises(ValueError, match=match):
        UNet(**kw)


def test_bad_forward_inputs():
    net = NoiseConditionalMLP(3)
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="shape"):
        net(torch.randn(4, 2), 0.5)
    with pytest.raises(ValueError, match="floating"):
        net(torch.ones(4, 3, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="sigma"):
        net(x, None)
    with pytest.raises(ValueError, match="sigma"):
        net(x, torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="sigma"):
        net(x, torch.full((4, 1), 0.5))
    with pytest.raises(ValueError, match="> 0"):
        net(x, torch.tensor([0.5, 0.0, 0.5, 0.5]))
    with pytest.raises(ValueError, match="> 0"):
        net(x, float("nan"))
    u = UNet(1)
    with pytest.raises(ValueError, match="C, H, W"):
        u(torch.randn(2, 3, 8, 8), 0.5)
    with pytest.raises(ValueError, match="shape"):
        u(torch.randn(8, 8), 0.5)
    # value checks are skipped under transforms (sigma batched by vmap cannot be inspected)
    assert vmap(net)(x, torch.full((4,), 0.5)).shape == (4, 3)
