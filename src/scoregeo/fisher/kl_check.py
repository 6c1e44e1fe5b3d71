"""The Fisher information as the Hessian of the KL divergence, checked numerically.

KL(p_θ ‖ p_{θ+εδ}) = ½ ε² δᵀFδ + O(ε³): ``kl_curvature_check`` compares the two
with the exact KL of the model's output distributions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as nnf
from torch import nn
from torch.func import functional_call

from ._parameters import _as_parameter_vector, _trainable
from .fim import fim
from .likelihoods import Bernoulli, Categorical, Gaussian, get_likelihood
from .scores import _check_inputs, _check_model, _forward

__all__ = ["KLCurvatureCheck", "kl_curvature_check"]


@dataclass
class KLCurvatureCheck:
    """KL divergences along θ + εδ against the quadratic form ½ ε² δᵀFδ.

    All tensors have one entry per ε (float64).

    Attributes:
        epsilons: the step sizes ε.
        kl_forward: KL(p_θ ‖ p_{θ+εδ}) summed over the examples.
        kl_reverse: KL(p_{θ+εδ} ‖ p_θ) summed over the examples.
        quadratic: ½ ε² δᵀFδ, F the Fisher summed over the examples.
        ratio_forward, ratio_reverse: KL / quadratic (→ 1 as ε → 0, error O(ε);
            exactly 1 for a Gaussian likelihood and a model linear in θ).
        fisher_quadratic: δᵀFδ.
    """

    epsilons: torch.Tensor
    kl_forward: torch.Tensor
    kl_reverse: torch.Tensor
    quadratic: torch.Tensor
    ratio_forward: torch.Tensor
    ratio_reverse: torch.Tensor
    fisher_quadratic: float

    @property
    def errors_forward(self) -> torch.Tensor:
        """|ratio_forward − 1|."""
        return (self.ratio_forward - 1).abs()

    @property
    def errors_reverse(self) -> torch.Tensor:
        """|ratio_reverse − 1|."""
        return (self.ratio_reverse - 1).abs()

    def __str__(self) -> str:
        names = ("KL(θ‖θ+εδ)", "KL(θ+εδ‖θ)", "½ε²δᵀFδ")
        header = f"{'ε':>10} " + " ".join(f"{n:>14}" for n in names) + f" {'ratio fwd':>12} {'ratio rev':>12}"
        lines = [f"δᵀFδ = {self.fisher_quadratic:.6g}", header]
        for i in range(self.epsilons.numel()):
            lines.append(
                f"{float(self.epsilons[i]):10.3g} {float(self.kl_forward[i]):14.6e} {float(self.kl_reverse[i]):14.6e} "
                f"{float(self.quadratic[i]):14.6e} {float(self.ratio_forward[i]):12.8f} "
                f"{float(self.ratio_reverse[i]):12.8f}"
            )
        return "\n".join(lines)


def _output_kl(lik, f_p: torch.Tensor, f_q: torch.Tensor) -> torch.Tensor:
    """Σ_n KL(p(·|f_p,n) ‖ p(·|f_q,n)) in closed form for the built-in likelihoods."""
    if isinstance(lik, Categorical):
        logp, logq = torch.log_softmax(f_p, -1), torch.log_softmax(f_q, -1)
        return (logp.exp() * (logp - logq)).sum()
    if isinstance(lik, Bernoulli):
        lp1, lp0 = nnf.logsigmoid(f_p), nnf.logsigmoid(-f_p)
        lq1, lq0 = nnf.logsigmoid(f_q), nnf.logsigmoid(-f_q)
        return (lp1.exp() * (lp1 - lq1) + lp0.exp() * (lp0 - lq0)).sum()
    if isinstance(lik, Gaussian):
        var = lik._var(f_p)
        return ((f_p - f_q) ** 2 / (2 * var)).sum()
    raise ValueError(
        f"kl_curvature_check has closed-form KL divergences for the categorical, bernoulli and gaussian "
        f"likelihoods only, got {lik!r}"
    )


def kl_curvature_check(
    model: nn.Module,
    inputs: torch.Tensor,
    direction,
    likelihood,
    epsilons: Sequence[float] = (1e-1, 1e-2, 1e-3),
    variance=None,
    structure: str = "implicit",
) -> KLCurvatureCheck:
    """Check F as the Hessian of the KL: KL(p_θ ‖ p_{θ+εδ}) ≈ ½ ε² δᵀFδ for each ε.

    The KL divergences are exact (closed forms between the output distributions:
    Σ p (log p − log q) for "categorical", the two-outcome version per output for
    "bernoulli", Σ_c (f_c − f'_c)²/(2σ_c²) for "gaussian"), summed over the
    examples, so they are an oracle independent of the Fisher code. F is the true
    Fisher summed over the same examples (``fim(..., reduction="sum")``), applied
    to δ matrix-free (structure="implicit") or as a matrix ("dense").

    Both KL(p_θ ‖ p_{θ+εδ}) and KL(p_{θ+εδ} ‖ p_θ) are reported; each ratio to
    the quadratic form tends to 1 with error O(ε) (the cubic terms differ in
    sign between the two directions). Use float64: the KL at ε = 1e-3 is
    ~10⁻⁶ times the size of its terms.

    Args:
        model: maps inputs (N, ...) to outputs (N, C), examples independent.
        inputs: (N, ...).
        direction: δ, a flat (P,) tensor or a list of tensors like the model's
            trainable parameters.
        likelihood: "categorical" | "bernoulli" | "gaussian" or such a ``Likelihood``.
        epsilons: step sizes ε > 0.
        variance: σ² for "gaussian".
        structure: "implicit" (default) or "dense", how F δ is computed.

    Returns:
        A ``KLCurvatureCheck`` (``str()`` prints a table).
    """
    lik = get_likelihood(likelihood, variance)
    _check_model(model)
    inputs = _check_inputs(inputs)
    params = _trainable(model)
    if structure not in ("implicit", "dense"):
        raise ValueError(f"structure must be 'implicit' or 'dense', got {structure!r}")
    try:
        eps = [float(e) for e in epsilons]
    except (TypeError, ValueError):
        raise ValueError(f"epsilons must be a sequence of numbers > 0, got {epsilons!r}") from None
    if not eps or any(not math.isfinite(e) or e <= 0 for e in eps):
        raise ValueError(f"epsilons must be a non-empty sequence of finite numbers > 0, got {epsilons!r}")
    delta = _as_parameter_vector(direction, params, "direction").detach()

    F = fim(model, inputs, lik, structure=structure, reduction="sum")
    fq = float(torch.dot(delta, F.mv(delta)))
    if not fq > 0:
        raise ValueError(f"δᵀFδ = {fq:.3g}: the direction lies in the null space of the Fisher information")

    names = [name for name, p in model.named_parameters() if p.requires_grad]
    base = {name: p.detach() for name, p in zip(names, params)}
    f0 = _forward(model, inputs)
    lik.check_output(f0)
    forward, reverse = [], []
    for e in eps:
        shifted, offset = {}, 0
        for name, p in base.items():
            shifted[name] = p + e * delta[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        with torch.no_grad():
            f1 = functional_call(model, shifted, (inputs,))
        forward.append(float(_output_kl(lik, f0, f1)))
        reverse.append(float(_output_kl(lik, f1, f0)))

    t = lambda xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
    epsilons_t = t(eps)
    quadratic = 0.5 * epsilons_t**2 * fq
    kl_f, kl_r = t(forward), t(reverse)
    return KLCurvatureCheck(
        epsilons=epsilons_t,
        kl_forward=kl_f,
        kl_reverse=kl_r,
        quadratic=quadratic,
        ratio_forward=kl_f / quadratic,
        ratio_reverse=kl_r / quadratic,
        fisher_quadratic=fq,
    )
