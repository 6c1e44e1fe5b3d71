"""Geodesics: initial- and boundary-value solvers, curves and distances."""

from .bvp import distance, geodesic, log_map
from .curves import curve_energy, curve_length
from .ivp import exp_map, shoot
from .path import Path

__all__ = ["Path", "shoot", "exp_map", "geodesic", "distance", "log_map", "curve_length", "curve_energy"]
