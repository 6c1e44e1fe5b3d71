"""Where Stein scores come from."""

from .autograd import score_of

__all__ = ["score_of"]
