"""Riemannian metrics on R^d, all on the base class :class:`Metric`."""

from .base import Metric
from .conformal import ConformalMetric
from .euclidean import Euclidean
from .fisher_rao import FisherRaoMetric
from .inverse_score import InverseScoreMetric
from .matrix import MatrixMetric
from .pullback import ScoreJacobianMetric
from .score import ScoreMetric

__all__ = [
    "Metric",
    "Euclidean",
    "MatrixMetric",
    "ScoreMetric",
    "InverseScoreMetric",
    "ConformalMetric",
    "ScoreJacobianMetric",
    "FisherRaoMetric",
]
