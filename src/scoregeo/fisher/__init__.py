"""The Fisher score and the Fisher information of PyTorch models.

``fim(model, inputs, likelihood, kind="true", structure="dense")`` returns the
Fisher information F = Σ_n E_{y~p_θ(y|x_n)}[∇θ log p ∇θ log pᵀ] of a model's
parameters as a ``Curvature`` (dense, diagonal, Kronecker-factored or
matrix-free), on the log-likelihood scale and summed over examples by default.
``score`` gives the per-example Fisher scores ∇θ log p(y_n | x_n), ``jacobians``
the output Jacobians ∂f_n/∂θ.

Parameter order everywhere: ``[p for p in model.parameters() if p.requires_grad]``,
each flattened row-major, concatenated into a vector of length P.
"""

from .fim import KINDS, REDUCTIONS, STRUCTURES, fim
from .jeffreys import jeffreys_log_prior
from .laplace import LaplacePosterior, laplace
from .kfac import KFACCurvature, kfac_fisher
from .likelihoods import Bernoulli, Categorical, Gaussian, Likelihood, get_likelihood
from .operators import Curvature, DenseCurvature, DiagCurvature, ImplicitCurvature, OutputMetric
from .scores import jacobians, parameter_vector_size, score
from .calibration import Calibration, calibration
from .cramer_rao import cramer_rao_bound
from .ewc import ewc_penalty
from .kl_check import KLCurvatureCheck, kl_curvature_check
from .natural_gradient import NaturalGradient, SolveInfo

__all__ = [
    "fim",
    "jeffreys_log_prior",
    "laplace",
    "calibration",
    "Calibration",
    "LaplacePosterior",
    "score",
    "jacobians",
    "parameter_vector_size",
    "Likelihood",
    "Categorical",
    "Bernoulli",
    "Gaussian",
    "get_likelihood",
    "Curvature",
    "DenseCurvature",
    "DiagCurvature",
    "ImplicitCurvature",
    "OutputMetric",
    "KFACCurvature",
    "kfac_fisher",
    "KINDS",
    "STRUCTURES",
    "REDUCTIONS",
    "NaturalGradient",
    "SolveInfo",
    "ewc_penalty",
    "kl_curvature_check",
    "KLCurvatureCheck",
    "cramer_rao_bound",
]
