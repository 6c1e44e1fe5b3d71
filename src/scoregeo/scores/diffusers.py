"""The score of a diffusers model: a UNet with its scheduler, at a training timestep.

diffusers is an optional dependency (``pip install "scoregeo[diffusers]"``);
this module never imports it: it uses the objects it is given.

Noise model. A diffusers scheduler defines the forward process through
ᾱ_t = ``scheduler.alphas_cumprod[t]``; the UNet ε_θ(x_t, t) sees the
variance-preserving state x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε and predicts, by the
scheduler's ``prediction_type``,

* "epsilon":      ε̂;
* "v_prediction": v̂ = √ᾱ ε̂ − √(1 − ᾱ) x̂₀, so ε̂ = √ᾱ v̂ + √(1 − ᾱ) x_t;
* "sample":       x̂₀, so ε̂ = (x_t − √ᾱ x̂₀) / √(1 − ᾱ).

The score is that of the noisy marginal in the scheduler's own state space:

* "vp" state (DDPM, DDIM, PNDM, DPM-Solver, …): points are x_t and
  s(x_t) = ∇ log p_t(x_t) = −ε̂ / √(1 − ᾱ_t);
* "ve" state (Euler, Euler ancestral, Heun, LMS, KDPM2: the schedulers whose
  ``init_noise_sigma`` is σ_max): points are x = x₀ + σ_t ε with
  σ_t = √((1 − ᾱ_t)/ᾱ_t), the UNet is called on x / √(1 + σ_t²) (what the
  scheduler's ``scale_model_input`` does) and s(x) = ∇ log p_σ(x) = −ε̂ / σ_t.

Attention layers run with PyTorch's "math" scaled-dot-product backend by
default: the fused CPU kernels have no second derivative, which the geometry
engine needs (``attention="default"`` keeps the fused ones, for scores only).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .sources import ScoreSource, check_output, expand_conditioning, network_dtype

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
STATES = ("vp", "ve")
_VE_SCHEDULERS = (
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "LMSDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
)
_VP_SCHEDULERS = (
    "DDPMScheduler",
    "DDIMScheduler",
    "PNDMScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "DEISMultistepScheduler",
    "UniPCMultistepScheduler",
)


class DiffusersScore(ScoreSource):
    """Score of a diffusers UNet (``UNet2DModel``, ``UNet2DConditionModel``, …) at timestep t.

    Args:
        unet: called as ``unet(sample, timestep, **conditioning)``; returns a
            tensor, or an output with ``.sample`` (diffusers' default), or a tuple.
        scheduler: gives ``alphas_cumprod`` and ``config.prediction_type``.
        timestep: the training timestep t, an integer in [0, num_train_timesteps).
        event_shape: shape of one point; default ``(in_channels, size, size)``
            from ``unet.config``.
        state: "vp" or "ve" (see the module docstring); default from the
            scheduler's class, required for other schedulers.
        prediction_type: overrides the scheduler's.
        attention: "math" (default; twice differentiable) or "default".
        conditioning: fixed keyword arguments of every UNet call, for example
            ``encoder_hidden_states`` (1, L, D) of a ``UNet2DConditionModel`` or
            ``class_labels``; tensors with leading dimension 1 are expanded to
            the batch.
    """

    def __init__(
        self,
        unet,
        scheduler,
        timestep: int,
        event_shape=None,
        state: str | None = None,
        prediction_type: str | None = None,
        attention: str = "math",
        **conditioning: Any,
    ):
        if not callable(unet):
            raise ValueError(f"unet must be callable, got {type(unet).__name__}")
        alphas = getattr(scheduler, "alphas_cumprod", None)
        if not isinstance(alphas, torch.Tensor) or alphas.ndim != 1:
            raise ValueError("scheduler must have alphas_cumprod, a 1-D tensor (a diffusers scheduler)")
        if isinstance(timestep, bool) or not isinstance(timestep, int) or not 0 <= timestep < alphas.numel():
            raise ValueError(f"timestep must be an integer in [0, {alphas.numel()}), got {timestep!r}")
        alpha_bar = float(alphas[timestep])
        if not 0 < alpha_bar < 1:
            raise ValueError(f"ᾱ_t = {alpha_bar!r} at timestep {timestep}: the noisy score needs 0 < ᾱ_t < 1")
        if prediction_type is None:
            prediction_type = getattr(getattr(scheduler, "config", None), "prediction_type", None)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        state = _state_of(scheduler) if state is None else state
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        if attention not in ("math", "default"):
            raise ValueError(f"attention must be 'math' or 'default', got {attention!r}")
        super().__init__(_event_shape_of(unet) if event_shape is None else event_shape)
        self.unet, self.scheduler, self.timestep = unet, scheduler, timestep
        self.alpha_bar, self.state, self.prediction_type = alpha_bar, state, prediction_type
        self.attention, self.conditioning = attention, conditioning

    @property
    def sigma(self) -> float:
        """The noise level of the state: √(1 − ᾱ_t) ("vp"), √((1 − ᾱ_t)/ᾱ_t) ("ve")."""
        return math.sqrt(1 - self.alpha_bar) / (1.0 if self.state == "vp" else math.sqrt(self.alpha_bar))

    def _score_events(self, events: torch.Tensor) -> torch.Tensor:
        a, b = math.sqrt(self.alpha_bar), math.sqrt(1 - self.alpha_bar)
        sample = events if self.state == "vp" else a * events  # x / √(1 + σ²) = √ᾱ x
        output = self.predict(sample)
        if self.prediction_type == "epsilon":
            epsilon = output
        elif self.prediction_type == "v_prediction":
            epsilon = a * output + b * sample
        else:
            epsilon = (sample - a * output) / b
        return -epsilon / self.sigma

    def predict(self, sample: torch.Tensor) -> torch.Tensor:
        """The UNet's raw prediction at the variance-preserving state ``sample`` (N, *event_shape)."""
        dtype = network_dtype(self.unet, sample.dtype)
        inputs = sample.to(dtype)
        timestep = torch.full((inputs.shape[0],), self.timestep, dtype=torch.long, device=inputs.device)
        backend = sdpa_kernel([SDPBackend.MATH]) if self.attention == "math" else contextlib.nullcontext()
        with backend:
            output = self.unet(inputs, timestep, **expand_conditioning(self.conditioning, inputs.shape[0]))
        if not isinstance(output, torch.Tensor):
            output = output.sample if hasattr(output, "sample") else output[0]
        check_output(output, inputs, "unet")
        return output.to(sample.dtype)

    def __repr__(self) -> str:
        return (f"DiffusersScore({type(self.unet).__name__}, {type(self.scheduler).__name__}, t={self.timestep}, "
                f"state={self.state!r}, prediction_type={self.prediction_type!r}, event_shape={self.event_shape})")


def _state_of(scheduler) -> str:
    name = type(scheduler).__name__
    if name in _VE_SCHEDULERS:
        return "ve"
    if name in _VP_SCHEDULERS:
        return "vp"
    raise ValueError(
        f"unknown scheduler {name}: pass state='vp' (the UNet sees x_t = √ᾱ x₀ + √(1 − ᾱ) ε) or state='ve' "
        "(points are x₀ + σ ε, scaled by 1/√(1 + σ²) for the UNet)"
    )


def _event_shape_of(unet) -> tuple[int, ...]:
    config = getattr(unet, "config", None)
    channels, size = getattr(config, "in_channels", None), getattr(config, "sample_size", None)
    if channels is None or size is None:
        raise ValueError("event_shape is required for a UNet without config.in_channels and config.sample_size")
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return (int(channels), int(height), int(width))


class LatentSpace:
    """The latent space of a latent diffusion model: a diffusers ``AutoencoderKL`` as an encode/decode pair.

    Geodesics of a latent model's score (a :class:`DiffusersScore` of the latent
    UNet) live in latent space; ``decode`` turns their points into images for
    display, ``encode`` turns images into end points. Latents are scaled by the
    VAE's ``config.scaling_factor`` as diffusers' pipelines do (z = f · mean of
    the posterior; the mean, not a sample, so that encoding is deterministic).

    Args:
        vae: an ``AutoencoderKL`` (``encode(x).latent_dist.mean``, ``decode(z).sample``).
        scaling_factor: overrides ``vae.config.scaling_factor``.
        batch_size: images or latents per VAE call (decoding a long path in one
            call can exhaust memory).
    """

    def __init__(self, vae, scaling_factor: float | None = None, batch_size: int = 16):
        if scaling_factor is None:
            scaling_factor = getattr(getattr(vae, "config", None), "scaling_factor", None)
        if scaling_factor is None or not (math.isfinite(float(scaling_factor)) and float(scaling_factor) > 0):
            raise ValueError(f"scaling_factor must be a finite number > 0 (or vae.config.scaling_factor), got {scaling_factor!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.vae, self.scaling_factor, self.batch_size = vae, float(scaling_factor), batch_size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (..., C, H, W) → latents (..., c, h, w)."""
        return self._map(images, lambda x: self.vae.encode(x).latent_dist.mean * self.scaling_factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (..., c, h, w) → images (..., C, H, W), for example ``decode(path.points)``."""
        return self._map(latents, lambda z: self.vae.decode(z / self.scaling_factor).sample)

    def _map(self, x: torch.Tensor, fn) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 3:
            raise ValueError(f"expected a floating-point tensor (..., C, H, W), got {getattr(x, 'shape', type(x))}")
        lead = x.shape[:-3]
        flat = x.reshape(-1, *x.shape[-3:])
        dtype = network_dtype(self.vae, x.dtype)
        with torch.no_grad():
            out = torch.cat([fn(chunk.to(dtype)) for chunk in flat.split(self.batch_size)]) if flat.shape[0] else None
        if out is None:
            raise ValueError("expected at least one image or latent")
        return out.to(x.dtype).reshape(*lead, *out.shape[1:])


def load_pipeline_score(directory, timestep: int, **options: Any) -> DiffusersScore:
    """The :class:`DiffusersScore` of a diffusers pipeline directory saved locally (``save_pretrained``).

    The directory holds ``model_index.json`` with ``unet/`` and ``scheduler/``
    subfolders; their classes are read from their configs and loaded with
    ``local_files_only=True`` (nothing is downloaded). Needs diffusers
    installed. ``options`` go to :class:`DiffusersScore`.
    """
    import json
    from pathlib import Path

    root = Path(directory)
    if not (root / "model_index.json").is_file():
        raise ValueError(f"{root}: not a diffusers pipeline directory (no model_index.json)")
    try:
        import diffusers
    except ImportError:
        raise ValueError("a diffusers model directory needs diffusers: pip install 'scoregeo[diffusers]'") from None

    def component(subfolder: str, config_name: str, **kwargs):
        config = root / subfolder / config_name
        if not config.is_file():
            raise ValueError(f"{root}: missing {subfolder}/{config_name}")
        name = json.loads(config.read_text()).get("_class_name")
        cls = getattr(diffusers, str(name), None)
        if cls is None:
            raise ValueError(f"{config}: unknown diffusers class {name!r}")
        return cls.from_pretrained(root, subfolder=subfolder, local_files_only=True, **kwargs)

    # low_cpu_mem_usage=False: the default needs `accelerate` and says so on every load without it
    unet = component("unet", "config.json", low_cpu_mem_usage=False).eval().requires_grad_(False)
    scheduler = component("scheduler", "scheduler_config.json")
    return DiffusersScore(unet, scheduler, timestep, **options)
