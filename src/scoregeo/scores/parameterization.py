"""How the output of a noise-conditional network becomes a score: the one place for it.

A noise-conditional network f(x, σ) sees a point x̃ perturbed with Gaussian noise
of standard deviation σ (x̃ = m·x + σ ε, ε ~ N(0, I), m = 1 except for the VP
SDE). Three output conventions are in use in the literature:

* ``"score"``:   f(x̃, σ) is the score itself, s = f.
* ``"epsilon"``: f predicts the noise ε (DDPM); the score of the Gaussian
  perturbation kernel is −ε/σ, so s = −f/σ.
* ``"scaled"``:  NCSNv2's choice, s = f/σ: the network outputs σ·s, whose
  magnitude is of order one at every noise level.

``"epsilon"`` and ``"scaled"`` differ only by the sign; both exist so that
weights trained under either convention load as what they are.

Shapes: ``output`` and ``score`` are (B, ...) (vectors or images), ``sigma`` is
(B,) or a scalar; it is broadcast over the trailing dimensions.
"""

from __future__ import annotations

import torch

PARAMETERIZATIONS = ("score", "epsilon", "scaled")


def check_parameterization(kind: str) -> str:
    """Return ``kind`` if it is a known output convention, else raise a ValueError naming the choices."""
    if kind not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {kind!r}")
    return kind


def expand_like(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View a per-example (B,) or scalar tensor as (B, 1, ..., 1) to broadcast against ``like`` (B, ...)."""
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if sigma.ndim == 0:
        return sigma
    return sigma.reshape(sigma.shape + (1,) * (like.ndim - sigma.ndim))


def output_to_score(output: torch.Tensor, sigma: torch.Tensor, kind: str) -> torch.Tensor:
    """The score s(x̃, σ) from a network output under convention ``kind``."""
    check_parameterization(kind)
    if kind == "score":
        return output
    sign = -1.0 if kind == "epsilon" else 1.0
    return sign * output / expand_like(sigma, output)


def score_to_output(score: torch.Tensor, sigma: torch.Tensor, kind: str) -> torch.Tensor:
    """The network output that represents ``score`` under convention ``kind`` (inverse of output_to_score)."""
    check_parameterization(kind)
    if kind == "score":
        return score
    sign = -1.0 if kind == "epsilon" else 1.0
    return sign * score * expand_like(sigma, score)
