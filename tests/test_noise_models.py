"""Noise models (``scoregeo.scores.noise``) and custom network classes in checkpoints.

Oracles: the noise parameters themselves (σ ranges), the closed-form VP
marginal σ(t) = √(1 − exp(−∫₀ᵗ β)), the trained levels of NCSN, and the original
module for a registered custom network saved and loaded through a training run.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import scoregeo as sg
from scoregeo.scores import networks, noise_model
from scoregeo.scores.noise import CleanData, GeometricLevels, LogUniformNoise, VENoise, VPNoise
from scoregeo.scores.sde import VESDE, VPSDE

F64 = torch.float64


@pytest.mark.parametrize(
    "method, params, cls, sigma_range, samplers",
    [
        ("exact", {}, CleanData, None, ("langevin",)),
        ("sliced_vr", {}, CleanData, None, ("langevin",)),
        ("dsm", {"sigma_min": 0.05, "sigma_max": 4.0}, LogUniformNoise, (0.05, 4.0), ("annealed", "langevin")),
        ("ncsn", {"sigmas": [3.0, 1.0, 0.2]}, GeometricLevels, (0.2, 3.0), ("annealed", "langevin")),
        ("ve", {"sigma_min": 0.01, "sigma_max": 8.0}, VENoise, (0.01, 8.0), ("pc", "ode", "langevin")),
    ],
)
def test_each_method_has_its_noise_model(method, params, cls, sigma_range, samplers):
    model = noise_model(method, params)
    assert type(model) is cls and model.method == method and model.params == params
    assert model.conditional == (cls is not CleanData)
    assert model.sigma_range == sigma_range
    assert model.samplers == samplers and model.default_sampler == samplers[0]
    assert model.perturbed_law == (cls in (LogUniformNoise, GeometricLevels, VENoise))
    if cls is VENoise:
        assert isinstance(model.sde, VESDE)
    else:
        assert model.sde is None


def test_vp_noise_range_is_the_closed_form_marginal_std():
    """σ(t)² = 1 − exp(−(β_min t + (β_max − β_min) t²/2)) at the SDE's first and last times.

    Tolerance 1e-10: 1 − exp(−x) at x ≈ 1e-4 (t_min) loses up to ε/x ≈ 1e-12 of σ² to cancellation.
    """
    model = noise_model("vp", {"beta_min": 0.1, "beta_max": 20.0})
    assert type(model) is VPNoise and isinstance(model.sde, VPSDE)
    assert model.default_sampler == "pc" and not model.perturbed_law

    def std(t):
        return math.sqrt(-math.expm1(-(0.1 * t + 0.5 * (20.0 - 0.1) * t * t)))

    low, high = model.sigma_range
    assert low == pytest.approx(std(model.sde.t_min), rel=1e-10)
    assert high == pytest.approx(std(model.sde.T), rel=1e-10)


def test_noise_levels_for_annealing():
    """NCSN anneals through its trained levels; the others through a geometric grid over their σ range."""
    levels = noise_model("ncsn", {"sigmas": [3.0, 1.0, 0.2]}).sigmas(7)
    assert levels.tolist() == [3.0, 1.0, 0.2]
    grid = noise_model("dsm", {"sigma_min": 0.05, "sigma_max": 5.0}).sigmas(5)
    assert grid[0] == pytest.approx(5.0) and grid[-1] == pytest.approx(0.05)
    ratios = grid[1:] / grid[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 0.01 ** 0.25))
    with pytest.raises(ValueError, match="trained without noise"):
        noise_model("sliced", {}).sigmas()


@pytest.mark.parametrize(
    "method, params, match",
    [
        ("sliced", {"sigma_min": 0.1}, "must be empty"),
        ("ve", {"sigma_min": 0.5, "sigma_max": 0.5}, "must be below"),
        ("vp", {"beta_min": 0.0, "beta_max": 20.0}, "beta_min"),
        ("dsm", "0.1..1", "must be a dict"),
        ("flow", {}, "method must be one of"),
    ],
)
def test_bad_noise_parameters(method, params, match):
    with pytest.raises(ValueError, match=match):
        noise_model(method, params)


def test_dsm_at_one_fixed_noise_level_is_a_valid_model():
    """sigma_min = sigma_max is classic single-σ DSM; train_score accepts it, so the model must too."""
    data = torch.randn(64, 2)
    model = sg.train_score(data, "dsm", steps=2, batch_size=8, sigma_min=0.3, sigma_max=0.3, progress=False)
    assert model.sigma_range == (0.3, 0.3)


def test_sample_refuses_a_sampler_of_another_noise_model():
    torch.manual_seed(0)
    model = sg.ScoreModel(networks.NoiseConditionalMLP(2), "dsm", "epsilon", {"sigma_min": 0.1, "sigma_max": 1.0},
                          (2,))
    with pytest.raises(ValueError, match=r"sampler 'pc' does not apply to a 'dsm' model \(its samplers: "):
        model.sample(4, sampler="pc")
    with pytest.raises(ValueError, match="sampler must be one of"):
        model.sample(4, sampler="euler")


# ---------------------------------------------------------------- custom networks in checkpoints


class TinyNet(nn.Module):
    """A custom noise-conditional network: [x, log σ] → hidden → d, with the ``config`` registration needs."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.config = {"dim": dim, "hidden": hidden}
        self.body = nn.Sequential(nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        log_sigma = torch.as_tensor(sigma, dtype=x.dtype).log().expand(x.shape[:-1])
        return self.body(torch.cat([x, log_sigma.unsqueeze(-1)], -1))


@pytest.fixture
def tiny_registered():
    networks.register_network("tiny", TinyNet)
    yield
    networks._NETWORKS.pop("tiny", None)


def test_a_registered_custom_network_trains_saves_and_loads(tiny_registered, tmp_path):
    data = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = sg.train_score(data, "dsm", steps=20, batch_size=32, network=TinyNet(2, 16), out=tmp_path,
                           checkpoint_every=10, progress=False)
    loaded = sg.ScoreModel.load(tmp_path)
    assert type(loaded.network) is TinyNet and loaded.config()["network"] == {"type": "tiny", "dim": 2, "hidden": 16}
    x = torch.randn(5, 2)
    torch.testing.assert_close(loaded.score(x, 0.4), model.score(x, 0.4), rtol=0, atol=0)
    networks.register_network("tiny", TinyNet)  # the same class again: harmless


def test_an_unregistered_custom_network_is_refused_before_training(tmp_path):
    data = torch.randn(64, 2)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"cannot describe a TinyNet network .*register_network"):
        sg.train_score(data, "dsm", steps=5, batch_size=8, network=TinyNet(2, 8), out=out, progress=False)
    assert not out.exists() or not any(out.iterdir())
    # without out nothing needs describing: training works
    model = sg.train_score(data, "dsm", steps=2, batch_size=8, network=TinyNet(2, 8), progress=False)
    assert model.score(data[:3], 0.5).shape == (3, 2)


def test_register_network_refuses_bad_registrations(tiny_registered):
    class Other(TinyNet):
        pass

    with pytest.raises(ValueError, match="already registered to TinyNet"):
        networks.register_network("tiny", Other)
    with pytest.raises(ValueError, match="mlp.*already registered"):
        networks.register_network("mlp", TinyNet)
    with pytest.raises(ValueError, match="subclass of torch.nn.Module"):
        networks.register_network("linear_fn", lambda x: x)
    with pytest.raises(ValueError, match="identifier"):
        networks.register_network("my net", TinyNet)


def test_a_custom_network_config_must_be_json(tiny_registered):
    net = TinyNet(2, 4)
    net.config = {"dim": 2, "hidden": torch.tensor(4)}
    with pytest.raises(ValueError, match="TinyNet.config must be JSON-serialisable"):
        networks.network_config(net)
    del net.config
    with pytest.raises(ValueError, match="TinyNet instances need a `config` dict"):
        networks.network_config(net)
