"""Score sources: diffusers UNets with their schedulers, EDM denoisers, ScoreModel, plain callables.

The oracle for every noise-model conversion is a Gaussian mixture: a stand-in
network returns the exact prediction (ε, v or x₀) of the mixture under the
scheduler's forward process, built from the Bayesian posterior mean E[x₀ | x_t]
(not from a score), and the source must return the closed-form score of the
noisy marginal, itself a Gaussian mixture.
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    EulerDiscreteScheduler,
    UNet2DConditionModel,
    UNet2DModel,
)
from diffusers.models.unets.unet_2d import UNet2DOutput

import scoregeo as sg
from scoregeo.scores.diffusers import DiffusersScore
from scoregeo.scores.sources import DenoiserScore, FunctionScore, ModelScore

F64 = torch.float64
EVENT = (1, 2, 3)  # C, H, W: d = 6


def _mixture(d: int = 6) -> sg.GaussianMixture:
    gen = torch.Generator().manual_seed(3)
    means = torch.randn(3, d, generator=gen, dtype=F64)
    factors = 0.4 * torch.randn(3, d, d, generator=gen, dtype=F64)
    covs = factors @ factors.mT + 0.3 * torch.eye(d, dtype=F64)
    return sg.GaussianMixture(means, covs, torch.tensor([0.5, 0.3, 0.2], dtype=F64))


def _posterior_mean(mixture: sg.GaussianMixture, y: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """E[x₀ | y = a x₀ + b ε] for x₀ ~ mixture, by Bayes per component (no score involved). y (N, d)."""
    d = y.shape[-1]
    eye = torch.eye(d, dtype=F64)
    cov_y = a**2 * mixture.covs + b**2 * eye  # (K, d, d)
    diff = y[:, None, :] - a * mixture.means  # (N, K, d)
    solved = torch.linalg.solve(cov_y, diff.unsqueeze(-1)).squeeze(-1)  # (N, K, d)
    log_resp = torch.log(mixture.weights) - 0.5 * (diff * solved).sum(-1) - 0.5 * torch.logdet(cov_y)
    resp = torch.softmax(log_resp, -1)  # (N, K)
    means = mixture.means + a * (mixture.covs @ solved.unsqueeze(-1)).squeeze(-1)  # (N, K, d)
    return (resp.unsqueeze(-1) * means).sum(1)


def _noisy(mixture: sg.GaussianMixture, a: float, b: float) -> sg.GaussianMixture:
    """The law of a x₀ + b ε."""
    eye = torch.eye(mixture.dim, dtype=F64)
    return sg.GaussianMixture(a * mixture.means, a**2 * mixture.covs + b**2 * eye, mixture.weights)


class ExactMixtureUNet(torch.nn.Module):
    """A stand-in UNet whose output is the exact ε, v or x₀ of a mixture under the VP process of ``scheduler``."""

    def __init__(self, mixture, scheduler, prediction_type: str):
        super().__init__()
        self.mixture, self.scheduler, self.prediction_type = mixture, scheduler, prediction_type
        self.calls = []

    def forward(self, sample, timestep, return_dict: bool = True):
        self.calls.append(timestep)
        t = int(timestep[0])
        assert bool((timestep == t).all())
        alpha_bar = float(self.scheduler.alphas_cumprod[t])
        a, b = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
        x_t = sample.reshape(sample.shape[0], -1)
        x0 = _posterior_mean(self.mixture, x_t, a, b)
        epsilon = (x_t - a * x0) / b
        out = {"epsilon": epsilon, "v_prediction": a * epsilon - b * x0, "sample": x0}[self.prediction_type]
        out = out.reshape(sample.shape)
        return UNet2DOutput(sample=out) if return_dict else (out,)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("scheduler_class", [DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler])
def test_diffusers_conversion_returns_the_exact_noisy_score(scheduler_class, prediction_type):
    mixture = _mixture()
    scheduler = scheduler_class(num_train_timesteps=1000, prediction_type=prediction_type)
    t = 400
    alpha_bar = float(scheduler.alphas_cumprod[t])
    unet = ExactMixtureUNet(mixture, scheduler, prediction_type)
    source = DiffusersScore(unet, scheduler, t, event_shape=EVENT)
    ve = scheduler_class is EulerDiscreteScheduler
    assert source.state == ("ve" if ve else "vp")
    if ve:  # points x = x₀ + σ ε, σ² = (1 − ᾱ)/ᾱ
        marginal = _noisy(mixture, 1.0, math.sqrt((1 - alpha_bar) / alpha_bar))
    else:  # points x_t = √ᾱ x₀ + √(1 − ᾱ) ε
        marginal = _noisy(mixture, math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar))
    x = marginal.sample(16, generator=torch.Generator().manual_seed(0)).to(F64)
    expected = marginal.score(x)
    torch.testing.assert_close(source(x), expected, rtol=1e-10, atol=1e-12)
    shaped = source(x.reshape(16, *EVENT))  # image-shaped points give image-shaped scores
    assert shaped.shape == (16, *EVENT)
    torch.testing.assert_close(shaped.reshape(16, -1), expected, rtol=1e-10, atol=1e-12)
    assert all(int(step[0]) == t for step in unet.calls)
    assert source.sigma == pytest.approx(math.sqrt((1 - alpha_bar) / alpha_bar) if ve else math.sqrt(1 - alpha_bar))


def test_edm_denoiser_gives_the_score_by_tweedie():
    mixture, sigma = _mixture(), 0.7

    def denoiser(x, sigma_batch):
        assert sigma_batch.shape == (x.shape[0],)
        return _posterior_mean(mixture, x.reshape(x.shape[0], -1), 1.0, float(sigma_batch[0])).reshape(x.shape)

    source = DenoiserScore(denoiser, sigma, EVENT)
    marginal = _noisy(mixture, 1.0, sigma)
    x = marginal.sample(8, generator=torch.Generator().manual_seed(1)).to(F64)
    torch.testing.assert_close(source(x), marginal.score(x), rtol=1e-10, atol=1e-12)


def _tiny_unet() -> UNet2DModel:
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=4, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    return unet.double().eval().requires_grad_(False)


def test_a_tiny_unet_is_a_score_source_for_the_metric_and_its_geodesic_acceleration():
    """A randomly initialised UNet2DModel with attention: shapes, the conversion, and the closed-form
    geodesic acceleration of the score metric against dense Christoffel symbols (needs second
    derivatives through attention)."""
    unet = _tiny_unet()
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    source = DiffusersScore(unet, scheduler, 250)
    assert source.event_shape == (1, 4, 4) and source.dim == 16
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 16, generator=gen, dtype=F64)
    direct = unet(x.reshape(5, 1, 4, 4), torch.full((5,), 250)).sample.reshape(5, 16)
    torch.testing.assert_close(source(x), -direct / math.sqrt(1 - float(scheduler.alphas_cumprod[250])))
    metric = sg.ScoreMetric(source, lam=3.0)  # the dimension comes from the source
    assert metric.dim == 16 and metric.event_shape == (1, 4, 4)
    v = torch.randn(2, 16, generator=gen, dtype=F64)
    for point, velocity in zip(x[:2], v):  # −Γ(v, v) from the dense G and its Jacobian by reverse mode
        G = metric.matrix(point)
        dG = torch.autograd.functional.jacobian(metric.matrix, point)  # [i, j, k] = ∂G_ij/∂x_k
        lowered = 0.5 * (dG.permute(0, 2, 1) + dG - dG.permute(2, 0, 1))  # [k, i, j]: Γ_kij
        gamma = torch.linalg.solve(G, lowered.reshape(16, -1)).reshape(16, 16, 16)
        reference = -torch.einsum("kij,i,j->k", gamma, velocity, velocity)
        torch.testing.assert_close(metric.acceleration(point, velocity), reference, rtol=1e-8, atol=1e-10)


def test_conditional_unet_takes_a_fixed_conditioning_expanded_to_the_batch():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=4, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=4, cross_attention_dim=12, attention_head_dim=4,
    ).double().eval().requires_grad_(False)
    scheduler = DDIMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    context = torch.randn(1, 5, 12, dtype=F64)
    source = DiffusersScore(unet, scheduler, 600, encoder_hidden_states=context)
    x = torch.randn(3, 1, 4, 4, dtype=F64)
    a2 = float(scheduler.alphas_cumprod[600])
    v = unet(x, torch.full((3,), 600), encoder_hidden_states=context.expand(3, 5, 12)).sample
    epsilon = math.sqrt(a2) * v + math.sqrt(1 - a2) * x
    torch.testing.assert_close(source(x), -epsilon / math.sqrt(1 - a2))


def test_model_score_accepts_flat_and_image_points():
    from scoregeo.scores.networks import UNet

    net = UNet(in_channels=1, base_channels=8, channel_mults=(1,), embed_dim=8)
    model = sg.ScoreModel(net, "dsm", "epsilon", {"sigma_min": 0.1, "sigma_max": 1.0}, (1, 4, 4))
    source = model.score_fn(0.5)
    assert isinstance(source, ModelScore) and source.dim == 16
    x = torch.randn(3, 1, 4, 4)
    torch.testing.assert_close(source(x.reshape(3, 16)).reshape(3, 1, 4, 4), model.score(x, 0.5))
    torch.testing.assert_close(source(x), model.score(x, 0.5))


def test_score_model_refuses_integer_and_non_finite_points():
    from scoregeo.scores.networks import NoiseConditionalMLP

    model = sg.ScoreModel(NoiseConditionalMLP(2), "dsm", "epsilon",
                          {"sigma_min": 0.1, "sigma_max": 1.0}, (2,))
    with pytest.raises(ValueError, match="floating-point"):
        model.score(torch.tensor([[2, 1]]), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        model.score(torch.tensor([[float("nan"), 1.0]]), 0.5)
    with pytest.raises(ValueError, match="floating-point"):
        model.score_fn(0.5)(torch.tensor([[2, 1]]))


def test_function_score_keeps_the_declared_symmetry_and_shapes():
    gaussian = sg.Gaussian(torch.zeros(6, dtype=F64), torch.eye(6, dtype=F64))
    source = FunctionScore(sg.score_of(gaussian.log_prob), EVENT)
    assert source.symmetric_jacobian and sg.ScoreMetric(source).symmetric_jacobian
    x = torch.randn(2, 3, *EVENT, dtype=F64)
    torch.testing.assert_close(source(x), -x)
    torch.testing.assert_close(source.unflatten(source.flatten(x)), x)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda u, s: DiffusersScore(u, s, 1000), "timestep must be an integer in \\[0, 1000\\)"),
        (lambda u, s: DiffusersScore(u, s, 2.5), "timestep must be an integer"),
        (lambda u, s: DiffusersScore(u, s, 10, prediction_type="x0"), "prediction_type must be one of"),
        (lambda u, s: DiffusersScore(u, s, 10, state="vpsde"), "state must be one of"),
        (lambda u, s: DiffusersScore(u, object(), 10), "alphas_cumprod"),
        (lambda u, s: DiffusersScore(u, s, 10, event_shape=(0, 4)), "event_shape"),
        (lambda u, s: DiffusersScore(u, s, 10, attention="flash"), "attention must be"),
        (lambda u, s: sg.ScoreMetric(DiffusersScore(u, s, 10), 15), "does not match"),
        (lambda u, s: sg.ScoreMetric(lambda x: x), "dim is required"),
    ],
)
def test_bad_source_arguments_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build(_tiny_unet(), DDPMScheduler(num_train_timesteps=1000))


def test_unknown_scheduler_needs_a_state_and_wrong_outputs_are_named():
    class MysteryScheduler:
        alphas_cumprod = torch.linspace(0.99, 0.01, 100)
        config = type("Config", (), {"prediction_type": "epsilon"})()

    unet = _tiny_unet()
    with pytest.raises(ValueError, match="unknown scheduler MysteryScheduler: pass state="):
        DiffusersScore(unet, MysteryScheduler(), 10)
    assert DiffusersScore(unet, MysteryScheduler(), 10, state="ve").state == "ve"
    bad = DiffusersScore(lambda x, t: x[:, :, :2], DDPMScheduler(), 10, event_shape=(1, 4, 4))
    with pytest.raises(ValueError, match="unet must return a tensor of its input's shape"):
        bad(torch.randn(2, 16))
    with pytest.raises(ValueError, match="x must have shape \\(..., 16\\) or \\(..., 1, 4, 4\\)"):
        DiffusersScore(unet, DDPMScheduler(), 10)(torch.randn(2, 15))


def test_geodesic_functions_take_and_return_image_shaped_points():
    """With a score source of event shape (C, H, W), points may be images; results come back as images
    and equal the flat solve."""
    mixture = _mixture()
    metric = sg.ScoreMetric(FunctionScore(mixture.score, EVENT), lam=5.0)
    gen = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(2, 6, generator=gen, dtype=F64), torch.randn(2, 6, generator=gen, dtype=F64)
    flat = sg.geodesic(metric, x0, x1, solver="newton", n_points=9)
    images = sg.geodesic(metric, x0.reshape(2, *EVENT), x1.reshape(2, *EVENT), solver="newton", n_points=9)
    assert images.points.shape == (2, 9, *EVENT) and images.initial_velocity.shape == (2, *EVENT)
    assert images.end_point.shape == (2, *EVENT)
    torch.testing.assert_close(images.points.reshape(2, 9, 6), flat.points)
    torch.testing.assert_close(images.length, flat.length)
    torch.testing.assert_close(sg.curve_length(metric, images.points), sg.curve_length(metric, flat.points))
    log = sg.log_map(metric, x0[0].reshape(EVENT), x1[0].reshape(EVENT))
    assert log.shape == EVENT
    end = sg.exp_map(metric, x0[0].reshape(EVENT), log)
    assert end.shape == EVENT
    torch.testing.assert_close(end, x1[0].reshape(EVENT), rtol=1e-6, atol=1e-6)


def test_latent_space_encodes_and_decodes_with_the_vae_scaling():
    from diffusers import AutoencoderKL

    from scoregeo.scores import LatentSpace

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=2, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4, sample_size=8,
    ).double().eval()
    space = LatentSpace(vae, batch_size=2)
    assert space.scaling_factor == vae.config.scaling_factor
    images = torch.randn(5, 3, 8, 8, dtype=F64)
    latents = space.encode(images)
    assert latents.shape == (5, 2, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(latents, vae.encode(images).latent_dist.mean * vae.config.scaling_factor)
        path_points = latents.reshape(1, 5, 2, 4, 4)  # a path of 5 latents
        decoded = space.decode(path_points)
        assert decoded.shape == (1, 5, 3, 8, 8)
        torch.testing.assert_close(decoded[0], vae.decode(latents / vae.config.scaling_factor).sample)
    with pytest.raises(ValueError, match="scaling_factor"):
        LatentSpace(vae, scaling_factor=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        LatentSpace(vae, batch_size=0)
