"""Where Stein scores come from: autograd of a log-density, or a network trained by score matching."""

from .autograd import score_of
from .checkpoint import CheckpointError
from .model import ScoreModel
from .training import train_score

__all__ = ["score_of", "ScoreModel", "train_score", "CheckpointError"]
