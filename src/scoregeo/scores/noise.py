"""Noise models: what a score network was trained on, with its noise levels, forward SDE and samplers.

A noise model is built from a training method and the ``noise`` parameters a
checkpoint stores (``noise_model("dsm", {"sigma_min": 0.01, "sigma_max": 5})``),
checks them, and answers what the rest of scoregeo asks of it:

================ ============ ================================ ============== ===================
class            methods      ``params``                        SDE            default sampler
================ ============ ================================ ============== ===================
CleanData        exact,       {}                                –              langevin
                 sliced,
                 sliced_vr
LogUniformNoise  dsm          {"sigma_min", "sigma_max"}        –              annealed
GeometricLevels  ncsn         {"sigmas": [σ_1 > … > σ_L]}       –              annealed
VENoise          ve           {"sigma_min", "sigma_max"}        VESDE          pc
VPNoise          vp           {"beta_min", "beta_max"}          VPSDE          pc
================ ============ ================================ ============== ===================
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .objectives import geometric_sigmas
from .sde import SDE, VESDE, VPSDE

SAMPLERS = ("annealed", "pc", "ode", "langevin")


class NoiseModel:
    """The perturbation a network was trained under (base class; one subclass per family of methods).

    Attributes:
        method: the training method ("dsm", "vp", ...).
        params: the checked noise parameters (the ``noise`` dict of a checkpoint).
        conditional: whether the network takes a noise level σ.
        perturbed_law: whether s(·, σ) is the score of p * N(0, σ²I) at every
            trained σ, so that the probability-flow log-density applies.
        samplers: the samplers of ``ScoreModel.sample`` that apply, the default first.
    """

    methods: tuple[str, ...] = ()
    conditional = True
    perturbed_law = False
    samplers: tuple[str, ...] = ("langevin",)

    def __init__(self, method: str, params: dict[str, Any]):
        if method not in self.methods:
            raise ValueError(f"{type(self).__name__} is the noise model of {self.methods}, not {method!r}")
        if not isinstance(params, dict):
            raise ValueError(f"noise must be a dict, got {type(params).__name__}")
        self.method = method
        self.params = self._checked(dict(params))

    def _checked(self, params: dict[str, Any]) -> dict[str, Any]:
        return params

    @property
    def default_sampler(self) -> str:
        return self.samplers[0]

    @property
    def sigma_range(self) -> tuple[float, float] | None:
        """(smallest, largest) trained noise level σ; None for clean-data models."""
        return None

    @property
    def sde(self) -> SDE | None:
        """The forward SDE of the diffusion the network was trained on, if any."""
        return None

    def sigmas(self, n_levels: int = 10) -> torch.Tensor:
        """Decreasing noise levels for annealed Langevin (float64): a geometric grid over ``sigma_range``."""
        if self.sigma_range is None:
            raise ValueError(f"a {self.method!r} model was trained without noise and has no noise levels")
        low, high = self.sigma_range
        return geometric_sigmas(low, high, n_levels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.method!r}, params={self.params!r})"


class CleanData(NoiseModel):
    """Score matching on clean data (Hyvärinen, sliced): an unconditional network s(x)."""

    methods = ("exact", "sliced", "sliced_vr")
    conditional = False

    def _checked(self, params):
        if params:
            raise ValueError(f"noise of a {self.method!r} model (trained on clean data) must be empty, got {params!r}")
        return params


class _SigmaInterval(NoiseModel):
    """σ in [sigma_min, sigma_max]."""

    strict = True  # sigma_min < sigma_max (else <=)

    def _checked(self, params):
        return _checked_interval(self.method, params, "sigma_min", "sigma_max", self.strict)

    @property
    def sigma_range(self):
        return self.params["sigma_min"], self.params["sigma_max"]


class LogUniformNoise(_SigmaInterval):
    """Denoising score matching with σ log-uniform in [sigma_min, sigma_max] (equal: one fixed σ)."""

    methods = ("dsm",)
    strict = False
    perturbed_law = True
    samplers = ("annealed", "langevin")


class VENoise(_SigmaInterval):
    """The variance-exploding SDE with σ(t) = sigma_min (sigma_max / sigma_min)^t."""

    methods = ("ve",)
    perturbed_law = True
    samplers = ("pc", "ode", "langevin")

    @property
    def sde(self):
        return VESDE(self.params["sigma_min"], self.params["sigma_max"])


class GeometricLevels(NoiseModel):
    """NCSN: σ drawn from fixed decreasing levels σ_1 > … > σ_L."""

    methods = ("ncsn",)
    perturbed_law = True
    samplers = ("annealed", "langevin")

    def _checked(self, params):
        sigmas = params.get("sigmas")
        if (not isinstance(sigmas, (list, tuple)) or not sigmas or not all(_is_positive_number(v) for v in sigmas)
                or any(a <= b for a, b in zip(sigmas, sigmas[1:]))):
            raise ValueError(f"noise['sigmas'] of an 'ncsn' model must be a decreasing list of finite numbers > 0, "
                             f"got {sigmas!r}")
        return params

    @property
    def sigma_range(self):
        return min(self.params["sigmas"]), max(self.params["sigmas"])

    def sigmas(self, n_levels: int = 10) -> torch.Tensor:
        """The trained levels themselves (``n_levels`` does not apply)."""
        return torch.tensor(self.params["sigmas"], dtype=torch.float64)


class VPNoise(NoiseModel):
    """The variance-preserving SDE with β(t) linear from beta_min to beta_max; σ(t) = √(1 − m(t)²)."""

    methods = ("vp",)
    samplers = ("pc", "ode", "langevin")

    def _checked(self, params):
        return _checked_interval(self.method, params, "beta_min", "beta_max")

    @property
    def sde(self):
        return VPSDE(self.params["beta_min"], self.params["beta_max"])

    @property
    def sigma_range(self):
        sde = self.sde
        return tuple(float(sde.std(torch.tensor(t, dtype=torch.float64))) for t in (sde.t_min, sde.T))


NOISE_MODELS: dict[str, type[NoiseModel]] = {
    method: cls for cls in (CleanData, LogUniformNoise, GeometricLevels, VENoise, VPNoise) for method in cls.methods
}
METHODS = tuple(NOISE_MODELS)
NOISE_FREE_METHODS = CleanData.methods
NOISE_CONDITIONAL_METHODS = tuple(m for m in METHODS if m not in NOISE_FREE_METHODS)


def noise_model(method: str, params: dict[str, Any]) -> NoiseModel:
    """The noise model of a training ``method`` with its ``params`` checked (a ValueError names the bad key)."""
    if method not in NOISE_MODELS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return NOISE_MODELS[method](method, params)


def _is_positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _checked_interval(method: str, params: dict[str, Any], low_key: str, high_key: str,
                      strict: bool = True) -> dict[str, Any]:
    for key in (low_key, high_key):
        if not _is_positive_number(params.get(key)):
            raise ValueError(f"noise[{key!r}] of a {method!r} model must be a finite number > 0, "
                             f"got {params.get(key)!r}")
    if not (params[low_key] < params[high_key] if strict else params[low_key] <= params[high_key]):
        raise ValueError(f"noise[{low_key!r}] must be {'below' if strict else 'at most'} noise[{high_key!r}], got {params[low_key]!r} and "
                         f"{params[high_key]!r}")
    return params
