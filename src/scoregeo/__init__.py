"""scoregeo: Riemannian geometry of data and of models from the Stein and Fisher scores.

``import scoregeo as sg``; points are tensors of shape (..., d).
"""

from .curvature import gaussian_curvature, scalar_curvature
from .densities import Gaussian, GaussianMixture
from .geodesics import Path, curve_energy, curve_length, distance, exp_map, geodesic, lerp, log_map, pairwise_distances, shoot, slerp
from .metrics import (
    ConformalMetric,
    Euclidean,
    FisherRaoMetric,
    InverseScoreMetric,
    MatrixMetric,
    Metric,
    ScoreJacobianMetric,
    ScoreMetric,
)
from .scores import (
    CheckpointError,
    DenoiserScore,
    DiffusersScore,
    FunctionScore,
    ScoreModel,
    ScoreSource,
    score_of,
    train_score,
)
from . import datasets, evaluation, fisher, fisher_rao, sampling
from .fisher import jeffreys_log_prior

__version__ = "0.1.0"

__all__ = [
    "Gaussian",
    "GaussianMixture",
    "score_of",
    "train_score",
    "ScoreModel",
    "CheckpointError",
    "ScoreSource",
    "FunctionScore",
    "DenoiserScore",
    "DiffusersScore",
    "Metric",
    "Euclidean",
    "MatrixMetric",
    "ScoreMetric",
    "InverseScoreMetric",
    "ConformalMetric",
    "ScoreJacobianMetric",
    "FisherRaoMetric",
    "jeffreys_log_prior",
    "Path",
    "shoot",
    "exp_map",
    "geodesic",
    "distance",
    "pairwise_distances",
    "log_map",
    "curve_length",
    "curve_energy",
    "lerp",
    "slerp",
    "scalar_curvature",
    "gaussian_curvature",
    "fisher_rao",
    "fisher",
    "datasets",
    "evaluation",
    "sampling",
]
