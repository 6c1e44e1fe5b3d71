"""Riemannian metrics on R^d, all on the base class :class:`Metric`."""

from .base import Metric
from .euclidean import Euclidean
from .fisher_rao import FisherRaoMetric
from .matrix import MatrixMetric
from .score import ScoreMetric

__all__ = ["Metric", "Euclidean", "MatrixMetric", "ScoreMetric", "FisherRaoMetric"]
