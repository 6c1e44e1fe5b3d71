"""Where Stein scores come from: autograd of a log-density, networks trained by score matching, score sources."""

from .autograd import score_of
from . import likelihood
from .checkpoint import CheckpointError
from .diffusers import DiffusersScore, LatentSpace
from .model import ScoreModel
from .networks import register_network
from .noise import NoiseModel, noise_model
from .sources import DenoiserScore, FunctionScore, ModelScore, ScoreSource
from .training import train_score

__all__ = [
    "score_of",
    "ScoreModel",
    "register_network",
    "NoiseModel",
    "noise_model",
    "train_score",
    "CheckpointError",
    "ScoreSource",
    "FunctionScore",
    "ModelScore",
    "DenoiserScore",
    "DiffusersScore",
    "LatentSpace",
    "likelihood",
]
