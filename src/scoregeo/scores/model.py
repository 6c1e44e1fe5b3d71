"""``ScoreModel``: a trained score network with its noise model, ready for metrics and samplers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .._checks import _is_plain
from .checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_state_into,
    read_config,
    read_tensors,
    write_config,
    write_tensors,
)
from .networks import build_network, network_config
from .noise import SAMPLERS, NoiseModel, noise_model
from .parameterization import check_parameterization, output_to_score
from .sde import SDE
from .sources import ModelScore

if TYPE_CHECKING:
    from ..sampling import SampleInfo
    from .likelihood import FlowLogProb

class ScoreModel:
    """A score network s_θ(x, σ) with the noise model it was trained under.

    Methods and their noise model (``noise`` dict; the noise model itself, with
    its σ range, SDE and samplers, is ``noise_model``, see
    :mod:`scoregeo.scores.noise`):

    ========== ===================================== =====================================
    method     trained on                             ``noise``
    ========== ===================================== =====================================
    exact      clean data, Hyvärinen score matching   {}
    sliced     clean data, sliced score matching      {}
    sliced_vr  clean data, variance-reduced SSM       {}
    dsm        x + σε, σ log-uniform in [min, max]    {"sigma_min", "sigma_max"}
    ncsn       x + σε, σ from geometric levels        {"sigmas": [σ_1 > … > σ_L]}
    ve         VE SDE marginals                       {"sigma_min", "sigma_max"}
    vp         VP SDE marginals                       {"beta_min", "beta_max"}
    ========== ===================================== =====================================

    Every noise-conditional network is conditioned on the standard deviation σ
    of its Gaussian perturbation (for the VP SDE, σ(t) = √(1 − m(t)²) of the
    kernel N(m(t) x, σ(t)² I)), so ``score(x, sigma)`` means the same thing for
    all of them: the score of the data law perturbed at noise level σ.

    Args:
        network: the module f(x, σ) (``scores.networks``); its output becomes a
            score through ``parameterization`` ("score", "epsilon" or "scaled").
        method, noise: as in the table.
        data_shape: shape of one data point, (d,) or (C, H, W).
        data_mean, data_std: per-coordinate statistics of the training data (to
            start samplers at the data's scale); optional.

    ``loss_history`` holds the training loss of every step when the model comes
    from ``train_score`` (None after ``load``; the checkpoint keeps it).
    """

    def __init__(
        self,
        network: nn.Module,
        method: str,
        parameterization: str,
        noise: dict[str, Any],
        data_shape: tuple[int, ...],
        data_mean: torch.Tensor | None = None,
        data_std: torch.Tensor | None = None,
    ):
        self.noise_model: NoiseModel = noise_model(method, noise)
        self.noise = self.noise_model.params
        self.network = network.eval().requires_grad_(False)
        self.method = method
        self.parameterization = check_parameterization(parameterization)
        self.data_shape = tuple(int(n) for n in data_shape)
        self.data_mean = data_mean
        self.data_std = data_std
        self.loss_history: list[float] | None = None

    # ------------------------------------------------------------------ noise model
    @property
    def conditional(self) -> bool:
        """True when the network takes a noise level σ."""
        return self.noise_model.conditional

    @property
    def sde(self) -> SDE | None:
        """The forward SDE of a "ve" or "vp" model, else None."""
        return self.noise_model.sde

    @property
    def sigma_range(self) -> tuple[float, float] | None:
        """(smallest, largest) noise level σ the network was trained on; None for noise-free models."""
        return self.noise_model.sigma_range

    def sigmas(self, n_levels: int = 10) -> torch.Tensor:
        """Decreasing noise levels for annealed Langevin: the trained levels ("ncsn"), else a geometric grid."""
        return self.noise_model.sigmas(n_levels).to(self._dtype)

    # ------------------------------------------------------------------ scores
    @property
    def _dtype(self) -> torch.dtype:
        return next(self.network.parameters()).dtype

    def score(self, x: torch.Tensor, sigma: float | torch.Tensor | None = None) -> torch.Tensor:
        """The learned score at x (..., *data_shape) and noise level σ; returns the shape of x.

        ``sigma``: required for noise-conditional models (a float, or a tensor of
        shape (...) matching x's leading dimensions); must be None for
        noise-free ones. x must be a floating-point tensor with finite entries
        (integer points would be truncated, NaN would give NaN silently). The
        network runs in its own dtype (see ``to``) and the result comes back in
        x's dtype. The call is differentiable and composes with ``torch.func``;
        for metrics use ``score_fn(σ)``, a score source that also accepts flat
        points (..., d).
        """
        n_data = len(self.data_shape)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = f"dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a floating-point tensor, got {got} (integer points would be truncated)")
        if x.ndim < n_data or tuple(x.shape[x.ndim - n_data:]) != self.data_shape:
            raise ValueError(f"x must have shape (..., {', '.join(map(str, self.data_shape))}), got {tuple(x.shape)}")
        if _is_plain(x) and not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or Inf")
        lead = x.shape[: x.ndim - n_data]
        events = x.reshape(-1, *self.data_shape)
        if isinstance(sigma, torch.Tensor) and self.conditional:
            sigma = sigma.to(x).expand(lead).reshape(-1)
        return self._score_events(events, sigma).reshape(x.shape)

    def _score_events(self, events: torch.Tensor, sigma: float | torch.Tensor | None) -> torch.Tensor:
        """Scores of a batch (N, *data_shape) at σ (a number, or a tensor of shape (N,)); events' dtype."""
        flat = events.to(self._dtype)
        if not self.conditional:
            if sigma is not None:
                raise ValueError(f"sigma must be None for a {self.method!r} model (trained on clean data)")
            return self.network(flat, None).to(events.dtype)
        self._require_sigma(sigma)
        if isinstance(sigma, torch.Tensor):
            sigma_flat = sigma.to(flat).expand(flat.shape[0])
        else:
            if not (math.isfinite(float(sigma)) and float(sigma) > 0):
                raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
            sigma_flat = torch.full((flat.shape[0],), float(sigma), dtype=flat.dtype, device=flat.device)
        out = self.network(flat, sigma_flat)
        return output_to_score(out, sigma_flat, self.parameterization).to(events.dtype)

    def score_fn(self, sigma: float | None = None) -> "ModelScore":
        """The score x ↦ s(x, σ) at a fixed noise level as a score source, e.g. for ``sg.ScoreMetric``.

        It accepts flat points (..., d) as well as (..., *data_shape) (see
        :class:`~scoregeo.scores.sources.ModelScore`).
        """
        return ModelScore(self, sigma)

    def log_prob(self, x: torch.Tensor, sigma: float, **kwargs) -> "FlowLogProb":
        """log p_σ(x) of the model by the probability-flow ODE (:func:`~scoregeo.scores.likelihood.flow_log_prob`).

        For models of the σ-perturbed law p * N(0, σ²I) ("dsm", "ncsn", "ve"):
        the flow runs from σ to the largest trained level, where the prior is
        N(0, (σ_max² + v) I), v the training data's mean per-coordinate variance
        (or give ``prior_log_prob``). Keyword arguments (``divergence``,
        ``n_probes``, ``generator``, ``rtol``, ``atol``, ``sigma_max``,
        ``prior_log_prob``) go to ``flow_log_prob``. x is (..., *data_shape).
        """
        from .likelihood import flow_log_prob

        if not self.noise_model.perturbed_law:
            raise ValueError(f"log_prob needs a model of the σ-perturbed data law (dsm, ncsn, ve), not {self.method!r}")
        source = ModelScore(self, sigma)
        events = source.as_events(x)
        flat = events.reshape(events.shape[0], -1)
        variance = float(self.data_std.pow(2).mean()) if self.data_std is not None else 0.0
        kwargs.setdefault("sigma_max", self.sigma_range[1])
        kwargs.setdefault("data_variance", variance)

        def score(points: torch.Tensor, level: float) -> torch.Tensor:
            return self._score_events(points.reshape(-1, *self.data_shape), level).reshape(points.shape)

        result = flow_log_prob(score, flat, sigma, **kwargs)
        lead = x.shape[: x.ndim - len(self.data_shape)] if source.is_shaped(x) else x.shape[:-1]
        result.log_prob, result.stderr = result.log_prob.reshape(lead), result.stderr.reshape(lead)
        result.prior_log_prob = result.prior_log_prob.reshape(lead)
        return result

    def _require_sigma(self, sigma) -> None:
        if sigma is None:
            low, high = self.sigma_range
            raise ValueError(f"sigma is required for a noise-conditional {self.method!r} model "
                             f"(trained on σ in [{low:.3g}, {high:.3g}])")

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        n: int,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        **options: Any,
    ) -> tuple[torch.Tensor, "SampleInfo"]:
        """Draw n samples (n, *data_shape) with the sampler that fits the model; returns (samples, info).

        ``sampler``: "annealed" (annealed Langevin over ``sigmas()``; default for
        dsm/ncsn), "pc" (predictor–corrector; default for ve/vp), "ode"
        (probability flow; ve/vp), "langevin" (default for noise-free models,
        started from N(data_mean, data_std²)). ``options`` go to the sampler
        function of ``scoregeo.sampling`` (e.g. ``n_steps_each``, ``step``,
        ``n_steps``, ``snr``). Defaults: annealed Langevin with 10 levels, 100
        steps each and ε_i = 0.05 σ_i²; PC with 500 steps; Langevin with 2000
        steps of 5·10⁻³ · min(data_std)².
        """
        from ..sampling import annealed_langevin, langevin, pc_sampler, probability_flow

        sampler = sampler or self.noise_model.default_sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if sampler not in self.noise_model.samplers:
            raise ValueError(f"sampler {sampler!r} does not apply to a {self.method!r} model "
                             f"(its samplers: {self.noise_model.samplers})")
        shape = (n, *self.data_shape)
        dtype = self._dtype
        mean = torch.zeros(self.data_shape, dtype=dtype) if self.data_mean is None else self.data_mean
        if sampler == "annealed":
            sigmas = self.sigmas(options.pop("n_levels", 10))
            options.setdefault("step", 0.05 * float(sigmas[-1]) ** 2)
            x0 = mean + float(sigmas[0]) * torch.randn(shape, generator=generator, dtype=dtype)
            return annealed_langevin(self.score, x0, sigmas, generator=generator, progress=progress, **options)
        if sampler == "pc":
            return pc_sampler(self.score, self.sde, shape, generator=generator, dtype=dtype, progress=progress,
                              **options)
        if sampler == "ode":
            return probability_flow(self.score, self.sde, shape, generator=generator, dtype=dtype,
                                    progress=progress, **options)
        scale = torch.ones(self.data_shape, dtype=dtype) if self.data_std is None else self.data_std
        x0 = mean + scale * torch.randn(shape, generator=generator, dtype=dtype)
        if self.conditional:
            low = self.sigma_range[0]
            score = lambda x: self.score(x, low)  # noqa: E731
        else:
            score = self.score
        options.setdefault("step", 5e-3 * float(scale.min()) ** 2)
        options.setdefault("n_steps", 2000)
        return langevin(score, x0, generator=generator, progress=progress, **options)

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> "ScoreModel":
        """Move the network (in place) to ``dtype`` and/or ``device``; returns self."""
        self.network.to(device=device, dtype=dtype)
        for name in ("data_mean", "data_std"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device=device, dtype=dtype))
        return self

    # ------------------------------------------------------------------ files
    def config(self) -> dict[str, Any]:
        """JSON-serialisable description of the model (no weights)."""
        return {
            "network": network_config(self.network),
            "method": self.method,
            "parameterization": self.parameterization,
            "noise": self.noise,
            "data_shape": list(self.data_shape),
            "data_mean": None if self.data_mean is None else self.data_mean.flatten().tolist(),
            "data_std": None if self.data_std is None else self.data_std.flatten().tolist(),
        }

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> None:
        """Write ``model.safetensors`` and ``config.json`` (config last, both atomic) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = dict((extra or {}).get("files", {}))
        files[WEIGHTS_FILE] = write_tensors(directory / WEIGHTS_FILE, self.network.state_dict())
        write_config(directory, {**self.config(), **(extra or {}), "files": files})

    @classmethod
    def load(cls, directory: str | Path, dtype: torch.dtype | None = None) -> "ScoreModel":
        """Load a model directory written by ``save`` or ``train_score``; refuses corrupt or mismatched files.

        Raises ``CheckpointError`` (a ValueError) naming the file and the problem.
        """
        directory = Path(directory)
        config = read_config(directory)
        try:
            network = build_network(config["network"])
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{directory / CONFIG_FILE}: bad network config ({err})") from None
        tensors = read_tensors(directory / WEIGHTS_FILE, config["files"].get(WEIGHTS_FILE))
        if tensors:
            network.to(next(iter(tensors.values())).dtype)
        load_state_into(network, tensors, directory / WEIGHTS_FILE)
        stats = {k: None if config.get(k) is None else torch.tensor(config[k]).reshape(config["data_shape"])
                 for k in ("data_mean", "data_std")}
        try:
            model = cls(network, config["method"], config["parameterization"], config["noise"],
                        tuple(config["data_shape"]), **stats)
        except ValueError as err:
            raise CheckpointError(f"{directory / CONFIG_FILE}: {err}") from None
        return model.to(dtype=dtype or model._dtype)

    def __repr__(self) -> str:
        rng = self.sigma_range
        noise = "" if rng is None else f", sigma in [{rng[0]:.3g}, {rng[1]:.3g}]"
        return (f"ScoreModel(method={self.method!r}, parameterization={self.parameterization!r}, "
                f"data_shape={self.data_shape}{noise})")

