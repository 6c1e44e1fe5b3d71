"""Noise-conditional score networks: a residual MLP for vectors, a small U-Net for images.

Every network is called as ``net(x, sigma)``:

* ``x`` is (..., d) for :class:`NoiseConditionalMLP` and (..., C, H, W) for
  :class:`UNet` (usually (B, d) and (B, C, H, W); the leading dimensions are
  flattened internally, so geodesic batches (n, d) or (B, n, d) and the
  per-example view (d,) seen under ``torch.func.vmap`` all work);
* ``sigma`` is the standard deviation of the Gaussian noise, > 0: a Python
  number, a 0-d or one-element tensor (shared by all points), or a tensor of
  shape (B,) — more generally ``x.shape[:k]`` — that is broadcast over the
  remaining dimensions, like :func:`~scoregeo.scores.parameterization.expand_like`;
* the output has the shape of ``x`` and is the *raw* network value. What it
  means ("score", "epsilon" or "scaled") is decided by the training loss; turn
  it into a score with :func:`~scoregeo.scores.parameterization.output_to_score`.

The networks see log σ, not σ, through :class:`SinusoidalEmbedding`, because
noise levels span several orders of magnitude. The output layer is initialised
to zero, so an untrained network returns exactly 0 (see ``NoiseConditionalMLP``).

There is no batch normalisation anywhere: each output depends on its own input
only, which the geometry engine relies on when it differentiates the score of a
batch of points, and everything composes with ``torch.func`` (jvp, vjp, vmap,
jacrev, and a VJP of a VJP).

A network is described by ``network_config(net)``, a JSON-serialisable dict
``{"type": "mlp" | "unet" | a registered name, **constructor kwargs}``;
``build_network(config)`` rebuilds it, so a checkpoint holds that JSON and the
weights (for instance as safetensors) and loading runs no pickled code. Custom
network classes join through ``register_network(name, cls)``.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import _is_plain, check_positive_int

__all__ = ["SinusoidalEmbedding", "NoiseConditionalMLP", "UNet", "network_config", "build_network", "register_network"]

# Smooth activations only: the geometry engine differentiates the score twice
# (Christoffel symbols, curvature), and a piecewise-linear network has zero
# second derivative almost everywhere.
_ACTIVATIONS = {"silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh, "softplus": nn.Softplus}

_FREQUENCY_RANGE = 1000.0  # ratio of the highest to the lowest embedding frequency


def _check_even(value: int, name: str) -> int:
    check_positive_int(value, name, minimum=2)
    if value % 2:
        raise ValueError(f"{name} must be even (sin and cos pairs), got {value!r}")
    return value


def _check_activation(name: str) -> str:
    if name not in _ACTIVATIONS:
        hint = " (piecewise-linear networks have no curvature)" if name == "relu" else ""
        raise ValueError(f"activation must be one of {tuple(_ACTIVATIONS)}, got {name!r}{hint}")
    return name


def _flatten_inputs(
    x: torch.Tensor, sigma, event_shape: tuple[int, ...], event_names: str, conditional: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check (x, sigma); return x as (N, *event_shape) and log σ as (N,) (None if unconditional).

    ``sigma`` with one element is shared by all points; otherwise its shape must
    be a prefix of ``x.shape[:-len(event_shape)]`` (with 1s allowed) and it is
    broadcast over the remaining leading dimensions.
    """
    k = len(event_shape)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor of shape (..., {event_names}), got {x!r:.80}")
    if x.ndim < k or tuple(x.shape[x.ndim - k :]) != event_shape:
        raise ValueError(f"x must have shape (..., {event_names}) = (..., {', '.join(map(str, event_shape))}), "
                         f"got {tuple(x.shape)}")
    lead = tuple(x.shape[: x.ndim - k])
    flat = x.reshape((-1,) + event_shape)
    if not conditional:
        return flat, None
    if sigma is None:
        raise ValueError("sigma is required by a noise-conditional network (got None)")
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.to(dtype=x.dtype, device=x.device)
    else:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.numel() == 1:
        sigma = sigma.reshape(())
    elif sigma.ndim > len(lead) or any(s not in (1, n) for s, n in zip(sigma.shape, lead)):
        raise ValueError(f"sigma must be a scalar or have a shape that broadcasts to x.shape[:1] = {lead[:1]} "
                         f"(more generally a prefix of {lead}), got {tuple(sigma.shape)}")
    if _is_plain(sigma) and not bool(((sigma > 0) & torch.isfinite(sigma)).all()):
        raise ValueError("sigma must be finite and > 0 (it is a noise standard deviation)")
    sigma = sigma.reshape(sigma.shape + (1,) * (len(lead) - sigma.ndim)).expand(lead).reshape(-1)
    return flat, sigma.log()


class SinusoidalEmbedding(nn.Module):
    """Sinusoidal (Fourier) features of a scalar conditioning value c: (...,) → (..., dim).

    With h = dim/2 frequencies

        ω_k = scale · 1000^(k/(h−1) − 1/2),   k = 0, …, h−1

    (geometric from scale/√1000 ≈ 0.032·scale to √1000·scale ≈ 31.6·scale; ω_0 =
    scale when h = 1), the features are [sin(ω_k c)]_k followed by [cos(ω_k c)]_k.

    The default ``scale=1`` suits c = log σ: over log σ ∈ [−10, 10] the lowest
    frequency (period ≈ 200) stays in the near-linear part of its sine, so the
    features never alias two noise levels, while the highest (period ≈ 0.2 in
    log σ) resolves changes of σ of a few percent.
    For a diffusion time t ∈ [0, 1] use a larger scale (e.g. 10 to 30).
    The frequencies are a non-persistent buffer: they follow ``.to(dtype)`` but
    are rebuilt from (dim, scale) rather than stored in the state dict.
    """

    def __init__(self, dim: int, scale: float = 1.0):
        super().__init__()
        self.dim = _check_even(dim, "dim")
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not (0 < scale < math.inf):
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        self.scale = float(scale)
        h = dim // 2
        exponents = torch.arange(h, dtype=torch.float64) / max(h - 1, 1) - (0.5 if h > 1 else 0.0)
        freqs = self.scale * _FREQUENCY_RANGE ** exponents
        self.register_buffer("freqs", freqs.to(torch.get_default_dtype()), persistent=False)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """c (...,) → features (..., dim), in the dtype of the module's buffer."""
        angles = c.to(self.freqs.dtype).unsqueeze(-1) * self.freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale}"


def _noise_embedding(embed_dim: int, act: type[nn.Module]) -> nn.Sequential:
    """log σ (N,) → (N, embed_dim): sinusoidal features followed by a small MLP."""
    return nn.Sequential(
        SinusoidalEmbedding(embed_dim), nn.Linear(embed_dim, embed_dim), act(), nn.Linear(embed_dim, embed_dim)
    )


class _ResidualBlock(nn.Module):
    """h + Linear(act(FiLM(Linear(act(h)), e))), FiLM(u, e) = u·(1 + γ(e)) + β(e)."""

    def __init__(self, hidden: int, embed_dim: int | None, act: type[nn.Module]):
        super().__init__()
        self.act = act()
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.film = nn.Linear(embed_dim, 2 * hidden) if embed_dim is not None else None

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        u = self.fc1(self.act(h))
        if self.film is not None:
            gamma, beta = self.film(emb).chunk(2, dim=-1)
            u = u * (1 + gamma) + beta
        return h + self.fc2(self.act(u))


class NoiseConditionalMLP(nn.Module):
    """Residual MLP score network for vectors: (x (..., dim), σ) → output (..., dim).

    Architecture: Linear(dim → hidden); ``n_blocks`` pre-activation residual
    blocks h ← h + Linear(act(FiLM(Linear(act(h))))), where the FiLM modulation
    u·(1 + γ) + β comes from the noise embedding of log σ (a multiplicative and
    an additive term, so the network can rescale its features with σ); then
    act and Linear(hidden → dim).

    No normalisation layers: the network is shallow, so it trains without them,
    and leaving them out keeps the output a smooth function of each point alone
    (LayerNorm's 1/std factor adds curvature that the geometry engine would have
    to differentiate twice). With a smooth activation the network is
    asymptotically linear in x, like the score of a Gaussian tail.

    The output layer starts at zero, so the untrained network returns exactly 0.
    Under the "scaled" and "epsilon" conventions the denoising score matching
    target is ∓ε with mean 0, so 0 is the best constant prediction: training
    starts at loss ≈ d instead of at a random output that becomes a huge score
    once divided by a small σ; and the score metric αI + λ s sᵀ starts Euclidean.
    (The gradient still reaches the output layer, then the rest.)

    ``conditional=False`` builds an unconditional network s(x) (for exact or
    sliced score matching on clean data): it has no embedding, and ``forward``
    ignores ``sigma``, which may be omitted.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        n_blocks: int = 3,
        embed_dim: int = 64,
        conditional: bool = True,
        activation: str = "silu",
    ):
        super().__init__()
        check_positive_int(dim, "dim")
        check_positive_int(hidden, "hidden")
        check_positive_int(n_blocks, "n_blocks")
        _check_even(embed_dim, "embed_dim")
        if not isinstance(conditional, bool):
            raise ValueError(f"conditional must be True or False, got {conditional!r}")
        _check_activation(activation)
        self.config = dict(dim=dim, hidden=hidden, n_blocks=n_blocks, embed_dim=embed_dim,
                           conditional=conditional, activation=activation)
        self.dim, self.conditional = dim, conditional
        act = _ACTIVATIONS[activation]
        self.embed = _noise_embedding(embed_dim, act) if conditional else None
        self.input = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            _ResidualBlock(hidden, embed_dim if conditional else None, act) for _ in range(n_blocks)
        )
        self.act = act()
        self.output = nn.Linear(hidden, dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        """x (..., dim), sigma scalar / (1,) / (B,) (ignored if unconditional) → raw output (..., dim)."""
        flat, log_sigma = _flatten_inputs(x, sigma, (self.dim,), "dim", self.conditional)
        emb = self.act(self.embed(log_sigma)) if self.conditional else None
        h = self.input(flat)
        for block in self.blocks:
            h = block(h, emb)
        return self.output(self.act(h)).reshape(x.shape)


def _groups(channels: int) -> int:
    """GroupNorm group count: the largest divisor of ``channels`` ≤ min(32, channels/4), at least 1."""
    limit = max(1, min(32, channels // 4))
    return max(g for g in range(1, limit + 1) if channels % g == 0)


class _ConvBlock(nn.Module):
    """Residual conv block: skip(x) + conv(act(GN(x))) → FiLM(GN(·), e) → act → conv."""

    def __init__(self, c_in: int, c_out: int, embed_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(embed_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        gamma, beta = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + gamma) + beta
        return self.skip(x) + self.conv2(self.act(h))


class UNet(nn.Module):
    """Small noise-conditional U-Net for images: (x (..., C, H, W), σ) → output (..., C, H, W).

    Levels ℓ = 0, …, L−1 have ``base_channels · channel_mults[ℓ]`` channels and
    ``n_res_blocks`` residual conv blocks (GroupNorm, SiLU, 3×3 convs, FiLM by the
    embedding of log σ); between levels the resolution is halved by a stride-2
    3×3 conv (H → ⌈H/2⌉, so 28 → 14 → 7 → 4) and restored by nearest-neighbour
    interpolation *to the size of the matching skip* followed by a 3×3 conv, so
    any H, W works (odd sizes included). Skips are concatenated on the way up.
    GroupNorm works per example (no batch statistics). The final 3×3 conv is
    zero-initialised: the untrained network returns exactly 0 (see
    :class:`NoiseConditionalMLP` for why).
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2),
        n_res_blocks: int = 1,
        embed_dim: int = 64,
    ):
        super().__init__()
        check_positive_int(in_channels, "in_channels")
        check_positive_int(base_channels, "base_channels")
        if not isinstance(channel_mults, (list, tuple)) or not channel_mults:
            raise ValueError(f"channel_mults must be a non-empty list of positive integers, got {channel_mults!r}")
        for m in channel_mults:
            check_positive_int(m, "channel_mults entries")
        check_positive_int(n_res_blocks, "n_res_blocks")
        _check_even(embed_dim, "embed_dim")
        self.config = dict(in_channels=in_channels, base_channels=base_channels, channel_mults=list(channel_mults),
                           n_res_blocks=n_res_blocks, embed_dim=embed_dim)
        self.in_channels = in_channels
        self.conditional = True
        self.embed = _noise_embedding(embed_dim, nn.SiLU)
        self.act = nn.SiLU()
        chans = [base_channels * m for m in channel_mults]

        self.input = nn.Conv2d(in_channels, chans[0], 3, padding=1)
        skip_channels, c = [chans[0]], chans[0]
        self.down = nn.ModuleList()
        for level, c_out in enumerate(chans):
            for _ in range(n_res_blocks):
                self.down.append(_ConvBlock(c, c_out, embed_dim))
                c = c_out
                skip_channels.append(c)
            if level < len(chans) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skip_channels.append(c)
        self.mid = nn.ModuleList([_ConvBlock(c, c, embed_dim), _ConvBlock(c, c, embed_dim)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(chans))):
            for _ in range(n_res_blocks + 1):
                self.up.append(_ConvBlock(c + skip_channels.pop(), chans[level], embed_dim))
                c = chans[level]
            if level > 0:
                self.up.append(nn.Conv2d(c, c, 3, padding=1))  # after nearest upsampling
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.output = nn.Conv2d(c, in_channels, 3, padding=1)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """x (..., C, H, W), sigma scalar / (1,) / (B,) → raw output of the shape of x."""
        if not isinstance(x, torch.Tensor) or x.ndim < 3:
            raise ValueError(f"x must be a tensor of shape (B, C, H, W), got {getattr(x, 'shape', x)!r}")
        event = (self.in_channels,) + tuple(x.shape[-2:])
        flat, log_sigma = _flatten_inputs(x, sigma, event, "C, H, W", True)
        emb = self.act(self.embed(log_sigma))
        h = self.input(flat)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, _ConvBlock) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, _ConvBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = layer(F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest"))
        return self.output(self.act(self.norm_out(h))).reshape(x.shape)


_NETWORKS: dict[str, type[nn.Module]] = {"mlp": NoiseConditionalMLP, "unet": UNet}


def register_network(name: str, cls: type[nn.Module]) -> None:
    """Make a custom network class savable and loadable by ``ScoreModel`` under ``name``.

    The class must be an ``nn.Module`` called as ``net(x, sigma)`` like the
    networks of this module, and every instance must carry ``config``: a dict of
    JSON-serialisable constructor arguments such that ``cls(**config)`` rebuilds
    it (the checkpoint stores ``{"type": name, **config}`` and the weights; no
    pickled code). Register the class before ``ScoreModel.load`` of a checkpoint
    that uses it; registering the same class twice under one name is harmless.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a non-empty identifier-like string, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"cls must be a subclass of torch.nn.Module, got {cls!r}")
    if _NETWORKS.get(name, cls) is not cls:
        raise ValueError(f"network type {name!r} is already registered to {_NETWORKS[name].__qualname__}")
    _NETWORKS[name] = cls


def network_config(net: nn.Module) -> dict:
    """The JSON-serialisable description ``{"type": ..., **constructor kwargs}`` of a registered network."""
    for kind, cls in _NETWORKS.items():
        if type(net) is cls:
            config = getattr(net, "config", None)
            if not isinstance(config, dict) or "type" in config:
                raise ValueError(f"{cls.__qualname__} instances need a `config` dict of constructor arguments "
                                 f"(without a 'type' key), got {config!r}")
            try:
                json.dumps(config)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{cls.__qualname__}.config must be JSON-serialisable: {err}") from None
            return {"type": kind, **copy.deepcopy(config)}
    raise ValueError(
        f"cannot describe a {type(net).__qualname__} network for a checkpoint: register its class with "
        f"scoregeo.scores.register_network(name, cls) (registered: {sorted(_NETWORKS)}; instances need a "
        f"`config` dict of constructor arguments)"
    )


def build_network(config: dict) -> nn.Module:
    """Build a freshly initialised network from ``network_config`` output (load the weights afterwards).

    Raises a ValueError naming the key for a missing or unknown ``"type"``, an
    unknown or missing constructor argument, or an invalid value.
    """
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict, got {type(config).__name__}")
    if "type" not in config:
        raise ValueError(f"config is missing the key 'type' (one of {tuple(_NETWORKS)})")
    kind = config["type"]
    if kind not in _NETWORKS:
        raise ValueError(f"config['type'] must be one of {tuple(_NETWORKS)}, got {kind!r}")
    cls = _NETWORKS[kind]
    kwargs = {k: v for k, v in config.items() if k != "type"}
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self")
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"config for {kind!r} has unknown key(s) {unknown}; allowed: {sorted(params)}")
    missing = sorted(k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in kwargs)
    if missing:
        raise ValueError(f"config for {kind!r} is missing the key(s) {missing}")
    return cls(**kwargs)
