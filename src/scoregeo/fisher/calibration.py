"""Calibration of predicted class probabilities: expected calibration error, NLL, reliability bins."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_positive_int


@dataclass
class Calibration:
    """Calibration of probabilities (N, C) against labels (N,).

    Attributes:
        accuracy: fraction of argmax predictions that are right.
        nll: mean negative log-likelihood −log p(label).
        ece: expected calibration error Σ_b (n_b / N) |accuracy_b − confidence_b|
            over ``n_bins`` equal-width bins of the confidence max_c p_c.
        confidence, bin_accuracy, count: per bin (n_bins,): mean confidence,
            accuracy (NaN in empty bins) and number of examples, for a
            reliability diagram.
    """

    accuracy: float
    nll: float
    ece: float
    confidence: torch.Tensor
    bin_accuracy: torch.Tensor
    count: torch.Tensor


def calibration(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> Calibration:
    """Calibration of ``probs`` (N, C), rows summing to 1, against integer ``labels`` (N,); bins (k/n, (k+1)/n]."""
    n_bins = check_positive_int(n_bins, "n_bins")
    if not isinstance(probs, torch.Tensor) or probs.ndim != 2 or not probs.is_floating_point():
        raise ValueError(f"probs must be a floating-point tensor (N, C), got "
                         f"{tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__}")
    if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()):
        raise ValueError("probs must be finite and non-negative")
    if not torch.allclose(probs.sum(-1), torch.ones_like(probs[:, 0]), atol=1e-4):
        raise ValueError("each row of probs must sum to 1")
    if (not isinstance(labels, torch.Tensor) or labels.shape != probs.shape[:1] or labels.is_floating_point()
            or bool(((labels < 0) | (labels >= probs.shape[1])).any())):
        raise ValueError(f"labels must be integer class indices in [0, {probs.shape[1]}) of shape ({len(probs)},)")
    confidence, predicted = probs.max(-1)
    correct = (predicted == labels).to(probs.dtype)
    bins = (confidence * n_bins).ceil().long().clamp(1, n_bins) - 1  # (k/n, (k+1)/n] → k
    count = torch.zeros(n_bins, dtype=torch.long, device=probs.device).scatter_add_(0, bins, torch.ones_like(bins))
    sums = torch.zeros(n_bins, dtype=probs.dtype, device=probs.device)
    mean_confidence = sums.scatter_add(0, bins, confidence) / count.clamp_min(1)
    mean_accuracy = sums.scatter_add(0, bins, correct) / count.clamp_min(1)
    ece = float((count.to(probs.dtype) / len(probs) * (mean_accuracy - mean_confidence).abs()).sum())
    empty = count == 0
    nan = torch.tensor(float("nan"), dtype=probs.dtype, device=probs.device)
    return Calibration(
        accuracy=float(correct.mean()),
        nll=float(-probs.gather(1, labels[:, None]).clamp_min(torch.finfo(probs.dtype).tiny).log().mean()),
        ece=ece,
        confidence=torch.where(empty, nan, mean_confidence),
        bin_accuracy=torch.where(empty, nan, mean_accuracy),
        count=count,
    )
