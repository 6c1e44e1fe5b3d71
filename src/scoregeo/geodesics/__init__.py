"""Geodesics: initial- and boundary-value solvers, curves and distances."""

from .bvp import distance, geodesic, log_map
from .collocation import CollocationSolver
from .curves import curve_energy, curve_length
from .energy import EnergySolver
from .interpolation import lerp, slerp
from .ivp import exp_map, shoot
from .likely import LikelyCurve, likely_curve
from .multilevel import MultilevelNewton
from .pairwise import pairwise_distances
from .path import Path
from .shooting import ShootingSolver
from .shortest import Shortest
from .solver import SOLVERS, BVPSolver, get_solver, register
from .starts import StartCurves

__all__ = [
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
    "likely_curve",
    "LikelyCurve",
    "slerp",
    "BVPSolver",
    "SOLVERS",
    "register",
    "get_solver",
    "Shortest",
    "StartCurves",
    "CollocationSolver",
    "MultilevelNewton",
    "EnergySolver",
    "ShootingSolver",
]
