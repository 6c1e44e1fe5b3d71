"""Sampling with scores: Langevin (ULA, MALA, annealed) and diffusion-model samplers.

* :func:`langevin`, :func:`mala`: sample p from its score (and log-density).
* :func:`annealed_langevin`: NCSN's annealed Langevin dynamics with a
  noise-conditional score s(x, σ).
* :func:`pc_sampler`, :func:`probability_flow`: reverse a forward SDE
  (:class:`~scoregeo.scores.sde.VESDE`, ``VPSDE``) with a noise-conditional score.

Every sampler returns ``(samples, info)`` with ``info`` a :class:`SampleInfo`;
Langevin steps are written x ← x + ε s(x) + √(2ε) z throughout (see
:mod:`scoregeo.sampling.langevin` for the factor-2 difference with NCSN).
"""

from .info import SampleInfo
from .langevin import annealed_langevin, langevin, mala
from .sde_samplers import pc_sampler, probability_flow

__all__ = ["SampleInfo", "langevin", "mala", "annealed_langevin", "pc_sampler", "probability_flow"]
