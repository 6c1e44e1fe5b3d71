"""Exact geodesic distances in any dimension, by symmetry: an oracle for high-dimensional solvers.

``import scoregeo.oracles`` (not re-exported by ``scoregeo``).

The construction
----------------
Let Q be a d×2 matrix with orthonormal columns (a 2-plane in R^d), P = I − QQᵀ
the projection onto its orthogonal complement, and e a unit vector with Qᵀe = 0.
The mixture in R^d has components

    N(Q mₖ, Q Aₖ Qᵀ + c² P),      k = 1 … K,

with mₖ ∈ R², Aₖ 2×2 symmetric positive-definite and c > 0. Write a point as
x = Q y + u with y = Qᵀx ∈ R² and u = P x. Each component factorises as
N(y; mₖ, Aₖ) · N(u; 0, c² I_{d−2}), and the second factor is the same for every
component, so

    log p(x) = log p₂(y) − |u|² / (2c²) − (d − 2)/2 · log(2πc²),

with p₂ = Σₖ wₖ N(mₖ, Aₖ) the in-plane mixture: p depends on u only through |u|.
The 3-D mixture with means (mₖ, 0) and covariances blockdiag(Aₖ, c²) has
log p₃(y, z) = log p₂(y) − z²/(2c²) − ½ log(2πc²), so with the isometric
embedding lift(y, z) = Q y + z e,

    log p(lift(y, z)) = log p₃(y, z) − (d − 3)/2 · log(2πc²),
    s(lift(y, z))     = lift(s₃(y, z))                       (the scores agree exactly).

Why the distances agree
-----------------------
Take the score metric g = αI + λ s sᵀ (α > 0, λ ≥ 0): the squared speed of a
curve is α|ẋ|² + λ (s·ẋ)² with s·ẋ = d/dt log p(x(t)). Let a, b ∈ R², β, β′ ≥ 0.

1. *No curve in R^d is shorter than its reduction.* Map a curve x(t) = Q y(t) + u(t)
   to the 3-D curve (y(t), r(t)), r = |u|. Then r is absolutely continuous with
   |ṙ| ≤ |u̇| (triangle inequality; ṙ = u·u̇/|u| where u ≠ 0), so
   |ẏ|² + ṙ² ≤ |ẏ|² + |u̇|² = |ẋ|²; and log p₃(y, r) equals log p(x) up to a
   constant, so its time derivative, the s·ẋ term, is the same. Hence the 3-D
   length of (y, r) is at most the length of x, and (y, r) joins
   (a, β) to (a′, β′) when x joins Q a + β e to Q a′ + β′ e.
2. *The lift of a 3-D curve has the same length.* lift is linear and isometric
   and preserves log p up to a constant, so both terms of the speed are equal.
3. *The 3-D distance on the half-space z ≥ 0 equals the one on R³.* p₃ is even
   in z, so the reflection z ↦ |z| is the same kind of map as in 1 (with d − 2 = 1):
   it does not lengthen curves and fixes end points with z ≥ 0. So the shortest
   3-D geodesic between points with z ≥ 0 can be taken in z ≥ 0 (a shortest curve
   that crosses z = 0 reflects to one that does not and is just as short), and its
   lift is a curve in R^d between the lifted points.

By 1–3, dist_d(Q a + β e, Q a′ + β′ e) = dist₃((a, β), (a′, β′)) for β, β′ ≥ 0,
the lift of the shortest 3-D geodesic is a shortest geodesic in R^d, and its
initial velocity, lifted, shoots onto the lifted end point in R^d. (End points
on opposite rays of e are not covered: there the off-plane parts are π apart and
the reduction gives only a lower bound.)

The reference must be the *shortest* 3-D geodesic, not a convenient one: the
in-plane geodesic between in-plane points (β = β′ = 0) is a geodesic in R^d
(z = 0 is totally geodesic, by the same reflection), but often not the shortest,
because a curve that leaves the plane can trade the change of log p₂ along its
path for a change of −z²/(2c²) and so climb over a mode instead of going round
it (on the default problem, 12 random in-plane pairs: up to 30% shorter at
λ = 100, 17% at λ = 10; issue 11 saw 24% at d = 16). :func:`reference_distance`
therefore refines many starts (bowed in the plane, out of it and diagonally, at
two bend sizes) and keeps the shortest converged, then verifies it independently.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import torch

from ._checks import check_points, check_positive_int
from .densities import GaussianMixture
from .geodesics import curve_length, shoot
from .geodesics.collocation import CollocationResult, collocation_geodesic, initial_velocity, metric_time_samples
from .metrics import ScoreMetric

__all__ = [
    "EmbeddedMixtureProblem",
    "ReferenceDistances",
    "embedded_mixture",
    "default_problem",
    "problem_pairs",
    "reference_distance",
    "verified_pairs",
]

# default problem (used by benchmarks/geodesic_highd.py): three anisotropic components in the plane
DEFAULT_MEANS = ((0.0, 1.3), (0.0, -1.3), (1.2, 0.0))
DEFAULT_COVS = (((0.5, 0.1), (0.1, 0.3)), ((0.3, -0.05), (-0.05, 0.45)), ((0.35, 0.0), (0.0, 0.5)))
DEFAULT_C = 0.7

_SCREEN_RTOL = 1e-6  # length agreement at which the many starts are compared (their finer length is far better)
_POLISH_RTOL = 1e-11  # length agreement of the reference itself
_BENDS = (0.4, 1.2)  # bulge of the bowed starts at their middle, relative to the chord's length
_START_POINTS = 24  # points of each start polyline
_POLISH_POINTS = 513  # samples of a screened geodesic given to the polishing solve
_NEAR_TIE = 1e-3  # screened local geodesics within this relative length of the shortest are all polished
_SHOOT_TOL = 1e-12  # rtol and atol of the verifying shot (dopri5)
_SHOT_LANDED = 1e-8  # verified: miss of the corrected shot, relative to 1 + the largest coordinate
_VELOCITY_TOL = 1e-7  # verified: relative correction of the initial velocity that makes the shot land
_SHOT_LENGTH_TOL = 1e-8  # verified: relative difference of the corrected shot's length from the distance
_SHOT_NEWTON_STEPS = 4  # Newton steps (finite-difference Jacobian) that correct the initial velocity
_QUADRATURE_TOL = 1e-9  # verified: relative difference of the independent length quadrature
_QUADRATURE_POINTS = 1025  # samples of the first polyline of the Richardson quadrature


@dataclass
class EmbeddedMixtureProblem:
    """A Gaussian mixture in R^d that is the lift of a 3-D one (see the module docstring).

    Attributes:
        d: the ambient dimension (>= 3).
        frame: (d, 2) Q, orthonormal columns spanning the plane of the means.
        normal: (d,) e, the unit off-plane direction of the end points (Qᵀe = 0).
        c: the off-plane standard deviation of every component.
        mixture3: the 3-D :class:`~scoregeo.GaussianMixture`, means (mₖ, 0), covariances blockdiag(Aₖ, c²).
        mixture2: the in-plane 2-D mixture, means mₖ, covariances Aₖ.
    """

    d: int
    frame: torch.Tensor
    normal: torch.Tensor
    c: float
    mixture3: GaussianMixture
    mixture2: GaussianMixture
    _mixture: GaussianMixture | None = field(default=None, repr=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.frame.dtype

    @property
    def mixture(self) -> GaussianMixture:
        """The d-dimensional :class:`~scoregeo.GaussianMixture` (built on first use: K d×d covariances).

        Means Q mₖ, covariances Q Aₖ Qᵀ + c² (I − QQᵀ). Its ``score`` costs O(K d²)
        per point; :meth:`score` gives the same field in O(K d) from the structure.
        """
        if self._mixture is None:
            Q, m3 = self.frame, self.mixture3
            A = m3.covs[:, :2, :2]
            proj = torch.eye(self.d, dtype=self.dtype, device=Q.device) - Q @ Q.T
            covs = Q @ A @ Q.T + self.c**2 * proj
            self._mixture = GaussianMixture(m3.means[:, :2] @ Q.T, 0.5 * (covs + covs.transpose(-1, -2)), m3.weights)
        return self._mixture

    def lift(self, points3: torch.Tensor) -> torch.Tensor:
        """(y, z) ↦ Q y + z e: reduced coordinates (..., 3) to points of R^d (..., d). Linear and isometric."""
        check_points(points3, 3, "points3")
        return points3[..., :2] @ self.frame.T.to(points3) + points3[..., 2:] * self.normal.to(points3)

    def reduce(self, points: torch.Tensor) -> torch.Tensor:
        """x ↦ (Qᵀx, |x − QQᵀx|): points of R^d (..., d) to reduced coordinates (..., 3), z >= 0.

        The map of the module docstring: it keeps log p (up to a constant) and
        does not lengthen curves; ``reduce(lift(y, z)) = (y, |z|)``.
        """
        check_points(points, self.d, "points")
        Q = self.frame.to(points)
        y = points @ Q
        off = points - y @ Q.T
        return torch.cat([y, off.norm(dim=-1, keepdim=True)], -1)

    def reduce_on_ray(self, points: torch.Tensor, name: str = "points") -> torch.Tensor:
        """Points (..., d) of the form Q a + z e with z >= 0 to (a, z) (..., 3); (..., 3) input is returned as is.

        Raises a ValueError when the off-plane part of a point is not on the ray of
        e (to 1e-10 relative): the oracle covers only such end points.
        """
        if not isinstance(points, torch.Tensor) or points.ndim == 0 or points.shape[-1] != self.d:
            return points
        check_points(points, self.d, name)
        Q, e = self.frame.to(points), self.normal.to(points)
        y = points @ Q
        z = points @ e
        rest = points - y @ Q.T - z.unsqueeze(-1) * e
        tol = 1e-10 * (1 + points.abs().amax(-1))
        if bool((rest.norm(dim=-1) > tol).any()) or bool((z < -tol).any()):
            raise ValueError(f"{name} must be points Q a + z e with z >= 0 (off-plane part on the ray of e)")
        return torch.cat([y, z.clamp_min(0).unsqueeze(-1)], -1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) of the d-dimensional mixture, (..., d) → (...), in O(K d) per point (no d×d matrices)."""
        check_points(x, self.d, "x")
        Q = self.frame.to(x)
        y = x @ Q
        off = x - y @ Q.T
        c2 = self.c**2
        return self.mixture2.log_prob(y) - 0.5 * (off * off).sum(-1) / c2 - 0.5 * (self.d - 2) * math.log(2 * math.pi * c2)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The d-dimensional score Q s₂(Qᵀx) − (x − QQᵀx)/c², (..., d) → (..., d), in O(K d) per point.

        Equal to ``mixture.score`` (see the module docstring); differentiable by ``torch.func``.
        """
        Q = self.frame.to(x)
        y = x @ Q
        return self.mixture2.score(y) @ Q.T - (x - y @ Q.T) / self.c**2

    score.symmetric_jacobian = True  # a gradient field: ScoreMetric skips the Jᵀv pass

    def metric(self, lam: float, alpha: float = 1.0) -> ScoreMetric:
        """The score metric αI + λ s sᵀ in R^d (with the structured :meth:`score`)."""
        return ScoreMetric(self.score, self.d, lam, alpha)

    def metric3(self, lam: float, alpha: float = 1.0) -> ScoreMetric:
        """The score metric of the reduced 3-D problem."""
        return ScoreMetric(self.mixture3.score, 3, lam, alpha)


def embedded_mixture(
    d: int,
    means2: torch.Tensor,
    covs2: torch.Tensor,
    c: float,
    weights: torch.Tensor | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> EmbeddedMixtureProblem:
    """Build the mixture of the module docstring in R^d.

    Args:
        d: ambient dimension, >= 3.
        means2: (K, 2) in-plane means mₖ (tensors are converted to ``dtype``: pass
            float64 values or Python numbers, a float32 tensor is already rounded).
        covs2: (K, 2, 2) in-plane covariances Aₖ (or (2, 2) shared).
        c: off-plane standard deviation (> 0).
        weights: (K,) mixture weights (normalised), uniform when None.
        seed: seeds the random frame: Q and e are the first three columns of
            the QR factor of a d×3 standard normal matrix.
        dtype: float64 (the default) or float32.
    """
    d = check_positive_int(d, "d", minimum=3)
    if not (isinstance(c, (int, float)) and math.isfinite(c) and c > 0):
        raise ValueError(f"c must be a finite number > 0, got {c!r}")
    means2 = torch.as_tensor(means2, dtype=dtype)
    if means2.ndim != 2 or means2.shape[1] != 2:
        raise ValueError(f"means2 must have shape (K, 2), got {tuple(means2.shape)}")
    K = means2.shape[0]
    covs2 = torch.as_tensor(covs2, dtype=dtype)
    if covs2.shape == (2, 2):
        covs2 = covs2.expand(K, 2, 2)
    if covs2.shape != (K, 2, 2):
        raise ValueError(f"covs2 must have shape ({K}, 2, 2) or (2, 2), got {tuple(covs2.shape)}")
    mixture2 = GaussianMixture(means2, covs2, weights)
    means3 = torch.cat([means2, torch.zeros(K, 1, dtype=dtype)], 1)
    covs3 = torch.zeros(K, 3, 3, dtype=dtype)
    covs3[:, :2, :2] = covs2
    covs3[:, 2, 2] = float(c) ** 2
    mixture3 = GaussianMixture(means3, covs3, weights)
    generator = torch.Generator().manual_seed(int(seed))
    basis, _ = torch.linalg.qr(torch.randn(d, 3, generator=generator, dtype=dtype))
    return EmbeddedMixtureProblem(
        d=d, frame=basis[:, :2].contiguous(), normal=basis[:, 2].contiguous(), c=float(c), mixture3=mixture3, mixture2=mixture2
    )


def default_problem(d: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> EmbeddedMixtureProblem:
    """The benchmark's problem: three anisotropic components at (0, ±1.3) and (1.2, 0), c = 0.7."""
    return embedded_mixture(d, torch.tensor(DEFAULT_MEANS), torch.tensor(DEFAULT_COVS), DEFAULT_C, seed=seed, dtype=dtype)


def problem_pairs(
    problem: EmbeddedMixtureProblem, n_pairs: int, seed: int = 0, min_separation: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random end-point pairs in reduced coordinates, each (n_pairs, 3), off-plane parts z > 0.

    Both points are samples of the 3-D mixture with z replaced by |z| (so z is at
    the scale of c, the reduced coordinate of a 3-D sample); pairs closer than
    ``min_separation`` (Euclidean) are redrawn. Lift them with ``problem.lift``.
    """
    n_pairs = check_positive_int(n_pairs, "n_pairs")
    generator = torch.Generator().manual_seed(int(seed))
    found0, found1, count = [], [], 0
    while count < n_pairs:
        x0 = problem.mixture3.sample(4 * n_pairs, generator)
        x1 = problem.mixture3.sample(4 * n_pairs, generator)
        x0[:, 2], x1[:, 2] = x0[:, 2].abs(), x1[:, 2].abs()
        keep = (x1 - x0).norm(dim=-1) >= min_separation
        found0.append(x0[keep])
        found1.append(x1[keep])
        count += int(keep.sum())
    return torch.cat(found0)[:n_pairs], torch.cat(found1)[:n_pairs]


@dataclass
class ReferenceDistances:
    """Result of :func:`reference_distance`: the distances and how each one was obtained and verified.

    All fields have the batch shape (...) of the end points unless stated.

    Attributes:
        distance: the geodesic distance (the length of the shortest converged 3-D geodesic found).
        x0, x1: (..., 3) the end points (reduced coordinates).
        points: (..., n_points, 3) the reference geodesic, uniform in its own (metric) time t ∈ [0, 1].
        initial_velocity: (..., 3) ẋ(0) on t ∈ [0, 1]; its metric norm is ``distance``.
        verified: every check below passed (the collocation converged, the shot
            lands, the quadrature agrees).
        collocation_residual: relative length change between the last two
            polynomial degrees of the polishing solve (<= its rtol when converged).
        shot_miss: |exp_{x0}(v) − x1| (Euclidean), v the initial velocity, shot
            with dopri5 at rtol = atol = 1e-12. It can reach ~1e-7 on sensitive
            geodesics (at λ = 100 the end point moves by up to 500× the relative
            change of v), so the check is on the velocity, see the next fields.
        velocity_correction: |v* − v|_g / |v|_g, v* the velocity whose shot lands on x1
            (Newton's method from v, Jacobian of the shot's end point by finite differences).
        shot_landed: the corrected shot's miss |exp_{x0}(v*) − x1|.
        shot_distance: |v*|_g, the length of that geodesic: a second, independent distance.
        shot_speed_drift: relative drift of the metric speed along the corrected shot.
        quadrature_error: |L_q − distance| / distance, L_q the length of the
            returned curve by a separate quadrature from its point values alone
            (midpoint rule on polylines of 1025, 2049, … samples, Richardson-extrapolated
            until two extrapolations agree to 1e-12).
        n_starts: number of start curves per pair; n_converged: how many converged.
        n_local: distinct converged local geodesics among them.
        local_lengths: (..., n_starts) their lengths, shortest first, NaN-padded (from the screening
            solves: accurate to about 1e-6 relative; only ``distance`` is polished).
        seconds: wall time of the whole call (all pairs).
    """

    distance: torch.Tensor
    x0: torch.Tensor
    x1: torch.Tensor
    points: torch.Tensor
    initial_velocity: torch.Tensor
    verified: torch.Tensor
    collocation_residual: torch.Tensor
    shot_miss: torch.Tensor
    velocity_correction: torch.Tensor
    shot_landed: torch.Tensor
    shot_distance: torch.Tensor
    shot_speed_drift: torch.Tensor
    quadrature_error: torch.Tensor
    n_starts: int
    n_converged: torch.Tensor
    n_local: torch.Tensor
    local_lengths: torch.Tensor
    seconds: float

    def select(self, index: torch.Tensor) -> "ReferenceDistances":
        """The records of a flat batch at ``index`` (a 1-D index or boolean mask)."""
        fields = {name: getattr(self, name)[index] for name in _PER_PAIR_FIELDS + ("local_lengths",)}
        return ReferenceDistances(n_starts=self.n_starts, seconds=self.seconds, **fields)


def reference_distance(
    problem: EmbeddedMixtureProblem | GaussianMixture,
    x0: torch.Tensor,
    x1: torch.Tensor,
    lam: float,
    alpha: float = 1.0,
    n_points: int = 65,
    rtol: float = _POLISH_RTOL,
    bends: tuple[float, ...] = _BENDS,
    warn: bool = True,
) -> ReferenceDistances:
    """Shortest-geodesic distance of the reduced 3-D problem between x0 and x1 (..., 3), z >= 0, verified.

    By the module docstring this is the score-metric distance in R^d between
    ``problem.lift(x0)`` and ``problem.lift(x1)``, and the lift of ``points`` /
    ``initial_velocity`` is the geodesic there.

    Method: 1 + 8·len(bends) start curves per pair (the straight line, and
    parabolic arcs bowed by each bend × |x1 − x0| towards ±n₁, ±n₂ and
    (±n₁ ± n₂)/√2, where n₁ is the in-plane normal of the chord and n₂ completes
    the orthonormal frame, mostly along z) are refined by Chebyshev collocation
    (``collocation_geodesic``) to a length agreement of 1e-6; the distinct
    converged local geodesics within 0.1% of the shortest are then refined again
    to ``rtol`` from their own samples, and the shortest wins. Each reference is
    then verified independently. (1) Shots (dopri5, rtol = atol = 1e-12): the
    shot from its initial velocity v misses x1 by up to ~2e-7 at λ = 100, where
    the end point moves by up to 500× a relative change of v; so v is corrected
    by Newton's method on the shot (finite-difference Jacobian) until the shot
    lands within 1e-8 · (1 + max |coordinate|), and the reference is kept only if
    the correction is below 1e-7 (relative, metric norm) and the corrected
    geodesic's length |v*|_g agrees with the distance to 1e-8. (2) A separate
    polyline quadrature of the returned curve from its point values (see
    ``quadrature_error``) must agree with its length to 1e-9. Measured on the
    default problem (12 off-plane pairs at λ = 10 and at 100, 24 in-plane pairs
    at λ = 100): off-plane pairs needed no correction (raw misses ≤ 1e-10 at
    λ = 10, ≤ 2e-9 at λ = 100); in-plane pairs corrections ≤ 9e-9, shot lengths
    within 3e-10 of the distance (≤ 6e-11 except on a pair whose geodesic
    barely leaves the plane, a nearly degenerate case); quadrature agreement
    ≤ 1e-13 everywhere.
    Cost on the default problem (one thread): 1.5–3 CPU-s per pair at
    λ = 10 and 100. Starts converging: 5 to 17 of 17 per pair. Doubling the
    starts (bends 0.2, 0.4, 0.8, 1.2, 2.0: 41 starts) changed no distance by
    more than 1e-14 on those 36 pairs.

    Args:
        problem: an :class:`EmbeddedMixtureProblem` (its ``mixture3`` is used) or a 3-D mixture.
        x0, x1: (..., 3) end points in reduced coordinates (broadcast together), z >= 0;
            or, with an :class:`EmbeddedMixtureProblem` of d > 3, points (..., d) of R^d
            of the form Q a + z e, z >= 0 (reduced by ``problem.reduce_on_ray``).
        lam, alpha: the score metric αI + λ s sᵀ (alpha > 0).
        n_points: samples of the returned geodesics (>= 2).
        rtol: length agreement of the final collocation solve.
        bends: bulges of the bowed starts relative to the chord length.
        warn: issue a RuntimeWarning naming the pairs that were not verified.

    Returns:
        :class:`ReferenceDistances`. Pairs that fail a check have ``verified``
        False (their ``distance`` is the best attempt): do not use them as references.
    """
    started = time.perf_counter()
    mixture = problem.mixture3 if isinstance(problem, EmbeddedMixtureProblem) else problem
    if mixture.dim != 3:
        raise ValueError(f"the reduced problem is 3-dimensional, got a mixture of dimension {mixture.dim}")
    metric = ScoreMetric(mixture.score, 3, lam, alpha)
    metric.check_solvable()
    n_points = check_positive_int(n_points, "n_points", minimum=2)
    if isinstance(problem, EmbeddedMixtureProblem) and problem.d > 3:
        x0, x1 = problem.reduce_on_ray(x0, "x0"), problem.reduce_on_ray(x1, "x1")
    check_points(x0, 3, "x0")
    check_points(x1, 3, "x1")
    x0, x1 = torch.broadcast_tensors(x0, x1)
    if bool((x0[..., 2] < 0).any()) or bool((x1[..., 2] < 0).any()):
        raise ValueError("the off-plane coordinates x0[..., 2] and x1[..., 2] must be >= 0 (one ray of e)")
    batch = x0.shape[:-1]
    a, b = x0.reshape(-1, 3).contiguous(), x1.reshape(-1, 3).contiguous()
    if a.shape[0] == 0 or bool(((b - a).norm(dim=-1) == 0).any()):
        raise ValueError("x0 and x1 must hold at least one pair, and no pair of equal points")
    with torch.no_grad():
        best, n_converged, n_local, local_lengths = shortest_geodesic(metric, a, b, _chord_frame(a, b), bends, rtol)
        points, velocity, _ = metric_time_samples(metric, best, n_points)
        points[:, 0], points[:, -1] = a, b  # exactly (interpolation between degrees rounds them)
        check = _verify(metric, best, velocity)
    verified = best.converged & check["shot_ok"] & check["quadrature_ok"]
    if warn and not bool(verified.all()):
        bad = (~verified).nonzero().squeeze(-1).tolist()
        warnings.warn(
            f"reference_distance: {len(bad)} of {len(verified)} references not verified (flat indices {bad}); "
            "see ReferenceDistances.verified",
            RuntimeWarning,
            stacklevel=2,
        )
    result = ReferenceDistances(
        distance=best.length,
        x0=a,
        x1=b,
        points=points,
        initial_velocity=velocity,
        verified=verified,
        collocation_residual=best.residual,
        shot_miss=check["miss"],
        velocity_correction=check["correction"],
        shot_landed=check["landed"],
        shot_distance=check["shot_distance"],
        shot_speed_drift=check["drift"],
        quadrature_error=check["quadrature_error"],
        n_starts=1 + 8 * len(bends),
        n_converged=n_converged,
        n_local=n_local,
        local_lengths=local_lengths,
        seconds=time.perf_counter() - started,
    )
    return _reshape(result, batch)


def verified_pairs(
    problem: EmbeddedMixtureProblem, n_pairs: int, lam: float, alpha: float = 1.0, seed: int = 0, **kwargs
) -> tuple[torch.Tensor, torch.Tensor, ReferenceDistances, list[int]]:
    """``n_pairs`` pairs from :func:`problem_pairs` whose references all verified.

    Candidates are drawn in rounds (seed, seed + 1, …); a candidate whose
    reference fails a check is dropped and replaced. Keyword arguments go to
    :func:`reference_distance`.

    Returns:
        x0, x1: (n_pairs, 3) reduced end points; the flat :class:`ReferenceDistances`
        of those pairs; and the candidate numbers that were dropped (candidate i is
        the i-th pair drawn, counting across rounds).
    """
    n_pairs = check_positive_int(n_pairs, "n_pairs")
    kept: list[ReferenceDistances] = []
    dropped: list[int] = []
    drawn, count, round_ = 0, 0, 0
    while count < n_pairs:
        if round_ >= 8:
            raise RuntimeError(f"verified_pairs: only {count} of {n_pairs} references verified after 8 rounds")
        x0, x1 = problem_pairs(problem, n_pairs - count, seed=seed + round_)
        ref = reference_distance(problem, x0, x1, lam, alpha, warn=False, **kwargs)
        ok = ref.verified.nonzero().squeeze(-1)
        dropped += [drawn + i for i in (~ref.verified).nonzero().squeeze(-1).tolist()]
        kept.append(ref.select(ok))
        drawn += len(x0)
        count += len(ok)
        round_ += 1
    fields = {name: torch.cat([getattr(r, name) for r in kept]) for name in _PER_PAIR_FIELDS}
    width = max(r.local_lengths.shape[-1] for r in kept)
    fields["local_lengths"] = torch.cat(
        [torch.nn.functional.pad(r.local_lengths, (0, width - r.local_lengths.shape[-1]), value=float("nan")) for r in kept]
    )
    merged = ReferenceDistances(n_starts=kept[0].n_starts, seconds=sum(r.seconds for r in kept), **fields)
    return merged.x0, merged.x1, merged, dropped


# --- internals ---------------------------------------------------------------------------------------


def _chord_frame(a: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
    """Unit bow directions (B, 3) orthogonal to the chords b − a: ±n₁, ±n₂, (±n₁ ± n₂)/√2.

    n₁ is the chord's in-plane part turned by 90° (the x axis when the chord is
    along z); n₂ = chord × n₁ / |…|, along z for an in-plane chord.
    """
    chord = b - a
    n1 = torch.zeros_like(chord)
    n1[:, 0], n1[:, 1] = -chord[:, 1], chord[:, 0]
    flat = n1.norm(dim=-1) <= 1e-12 * chord.norm(dim=-1)
    n1[flat] = torch.tensor([1.0, 0.0, 0.0], dtype=a.dtype, device=a.device)
    n1 = n1 / n1.norm(dim=-1, keepdim=True)
    n2 = torch.linalg.cross(chord, n1, dim=-1)
    n2 = n2 / n2.norm(dim=-1, keepdim=True)
    diagonals = [(s1 * n1 + s2 * n2) / math.sqrt(2) for s1 in (1, -1) for s2 in (1, -1)]
    return [n1, -n1, n2, -n2, *diagonals]


def bowed_starts(a: torch.Tensor, b: torch.Tensor, directions: list[torch.Tensor], bends, n: int = _START_POINTS):
    """Start polylines (C, B, n, d): the straight line, then for each bend each direction's parabolic arc."""
    t = torch.linspace(0, 1, n, dtype=a.dtype, device=a.device)[:, None]
    line = a[:, None] + t * (b - a)[:, None]
    chord = (b - a).norm(dim=-1)[:, None, None]
    arcs = [line + (4 * bend * t * (1 - t)) * chord * direction[:, None] for bend in bends for direction in directions]
    return torch.stack([line, *arcs])


def shortest_geodesic(
    metric, a: torch.Tensor, b: torch.Tensor, directions: list[torch.Tensor], bends=_BENDS, rtol: float = _POLISH_RTOL
) -> tuple[CollocationResult, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The shortest converged geodesic (B pairs) from the bowed starts, refined to ``rtol``.

    Works in any dimension (``directions``: unit vectors (B, d) orthogonal to the
    chords). Returns the :class:`CollocationResult` of the winners (B), the number
    of converged starts (B,), of distinct local geodesics (B,), and their lengths
    (B, C) shortest first, NaN-padded.
    """
    starts = bowed_starts(a, b, directions, bends)
    C, B = starts.shape[:2]
    pair = torch.arange(B, device=a.device).repeat(C)
    screened = collocation_geodesic(metric, starts.flatten(0, 1), rtol=_SCREEN_RTOL, groups=pair)
    lengths = screened.length.reshape(C, B)
    converged = screened.converged.reshape(C, B)
    velocities = initial_velocity(metric, screened).reshape(C, B, -1)
    distinct = _distinct(velocities, lengths, converged)  # (C, B) first occurrence of each local geodesic
    local = torch.where(distinct, lengths, torch.inf).sort(0).values.T  # (B, C)
    local = torch.where(torch.isfinite(local), local, torch.nan)
    shortest = torch.where(converged, lengths, torch.inf).amin(0)
    # polish: every distinct local geodesic near the shortest (and, for a pair with no converged start,
    # the start of smallest residual, which then reports unconverged)
    fallback = torch.zeros_like(converged)
    fallback[screened.residual.reshape(C, B).nan_to_num(torch.inf).argmin(0), torch.arange(B)] = True
    chosen = torch.where(converged.any(0), distinct & (lengths <= shortest * (1 + _NEAR_TIE)), fallback)
    index = chosen.nonzero()  # (P, 2): start, pair
    flat = index[:, 0] * B + index[:, 1]
    samples, _, _ = metric_time_samples(metric, _select(screened, flat), _POLISH_POINTS)
    polished = collocation_geodesic(metric, samples, rtol=rtol, groups=index[:, 1])
    score = torch.where(polished.converged, polished.length, torch.inf)
    winner = torch.full((B,), -1, dtype=torch.long, device=a.device)
    for p in range(len(index)):  # few: the near-ties of each pair
        j = int(index[p, 1])
        w = int(winner[j])
        if w < 0 or bool(score[p] < score[w]) or (not bool(torch.isfinite(score[w])) and polished.residual[p] < polished.residual[w]):
            winner[j] = p
    return _select(polished, winner), converged.sum(0), distinct.sum(0), local


def _distinct(velocities, lengths, converged) -> torch.Tensor:
    """(C, B) True at the first (shortest) converged start of each distinct local geodesic.

    Two converged starts reach the same geodesic when their lengths agree to
    1e-6 and their initial velocities to 1e-4 (relative).
    """
    C, B = lengths.shape
    keep = torch.zeros_like(converged)
    for j in range(B):
        kept: list[int] = []
        for i in torch.where(converged[:, j], lengths[:, j], torch.inf).argsort().tolist():
            if not bool(converged[i, j]):
                break
            v = velocities[i, j]
            same = any(
                bool((v - velocities[k, j]).norm() <= 1e-4 * v.norm())
                and abs(float(lengths[i, j] - lengths[k, j])) <= 1e-6 * float(lengths[k, j])
                for k in kept
            )
            if not same:
                kept.append(i)
                keep[i, j] = True
    return keep


def _select(result: CollocationResult, index: torch.Tensor) -> CollocationResult:
    return CollocationResult(
        grid=result.grid,
        values=result.values[index],
        length=result.length[index],
        converged=result.converged[index],
        residual=result.residual[index],
    )


def _verify(metric, result: CollocationResult, velocity: torch.Tensor) -> dict[str, torch.Tensor]:
    """Independent checks of solved geodesics (B): shots from their initial velocity, and a second quadrature."""
    a, b = result.values[:, 0], result.values[:, -1]
    scale = 1 + torch.maximum(a.abs().amax(-1), b.abs().amax(-1))
    shots = _corrected_shots(metric, a, b, velocity, _SHOT_LANDED * scale)
    quadrature = torch.stack([_polyline_length(metric, result.grid.nodes, values) for values in result.values])
    quadrature_error = (quadrature - result.length).abs() / result.length
    shot_error = (shots["shot_distance"] - result.length).abs() / result.length
    shots["shot_ok"] = (
        (shots["landed"] <= _SHOT_LANDED * scale)
        & (shots["correction"] <= _VELOCITY_TOL)
        & (shot_error <= _SHOT_LENGTH_TOL)
        & (shots["drift"] <= 1e-9)
    )
    shots["quadrature_error"] = quadrature_error
    shots["quadrature_ok"] = quadrature_error <= _QUADRATURE_TOL
    return shots


def _corrected_shots(metric, a, b, velocity, tol) -> dict[str, torch.Tensor]:
    """Shoot from ``velocity`` (B, d), then correct it by Newton's method until the shots land within ``tol`` (B,).

    The Jacobian of the end point in the velocity comes from d extra shots per
    pair (forward differences, step 1e-6 |v|): its relative error, ~1e-6, only
    slows Newton's convergence (each step gains about six digits). All shots:
    dopri5 at rtol = atol = 1e-12. NaN entries mark pairs whose shots failed.
    """
    B, d = velocity.shape
    eye = torch.eye(d, dtype=velocity.dtype, device=velocity.device)

    def ends(start, v):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # speed drift is reported and judged by the caller
            path = shoot(metric, start, v, n_points=2, rtol=_SHOOT_TOL, atol=_SHOOT_TOL)
        return path.end_point, path.speed_drift

    end, drift = ends(a, velocity)
    first_miss = (end - b).norm(dim=-1)
    v = velocity.clone()
    for _ in range(_SHOT_NEWTON_STEPS):
        error = end - b
        todo = (error.norm(dim=-1) > tol) & torch.isfinite(error).all(-1)
        if not bool(todo.any()):
            break
        idx = todo.nonzero().squeeze(-1)
        h = 1e-6 * v[idx].norm(dim=-1)  # (P,)
        probes = v[idx, None] + h[:, None, None] * eye  # (P, d, d): one probe per coordinate
        probe_ends, _ = ends(a[idx].repeat_interleave(d, 0), probes.reshape(-1, d))
        jacobian = ((probe_ends.reshape(-1, d, d) - end[idx, None]) / h[:, None, None]).transpose(1, 2)
        v[idx] = v[idx] - torch.linalg.lstsq(jacobian, error[idx].unsqueeze(-1)).solution.squeeze(-1)
        end[idx], drift[idx] = ends(a[idx], v[idx])
    norm = metric._inner(a, velocity, velocity).clamp_min(0).sqrt()
    change = v - velocity
    return {
        "miss": first_miss,
        "correction": metric._inner(a, change, change).clamp_min(0).sqrt() / norm,
        "landed": (end - b).norm(dim=-1),
        "shot_distance": metric._inner(a, v, v).clamp_min(0).sqrt(),
        "drift": drift,
    }


def _polyline_length(metric, nodes: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Length of one solved curve from its point values alone: midpoint-rule polylines, Richardson-extrapolated.

    The curve is the polynomial through ``values`` (N+1, d) at the Chebyshev
    points ``nodes`` (τ ∈ [0, 1]), evaluated here by the barycentric formula at
    n = 1025, 2049, … uniform values of τ. The midpoint rule errs by O(n⁻²), so
    (4 L₂ₙ − Lₙ)/3 errs by O(n⁻⁴); n doubles until two successive extrapolations
    agree to 1e-12 (a curve with a tight turn needs up to ~16 000 samples) or
    n passes 65 537 (then the last extrapolation is returned, and the check
    fails unless it agrees anyway).
    """
    order = nodes.shape[0] - 1
    weights = torch.where(torch.arange(order + 1, device=nodes.device) % 2 == 0, 1.0, -1.0).to(values)
    weights[0], weights[-1] = 0.5 * weights[0], 0.5 * weights[-1]
    previous_length = previous_estimate = None
    n = _QUADRATURE_POINTS
    while True:
        tau = torch.linspace(0, 1, n, dtype=values.dtype, device=values.device)
        points = torch.cat([_barycentric(nodes, weights, values, chunk) for chunk in tau.split(2048)])
        points[0], points[-1] = values[0], values[-1]
        length = curve_length(metric, points)
        if previous_length is not None:
            estimate = (4 * length - previous_length) / 3
            if previous_estimate is not None and (
                abs(float(estimate - previous_estimate)) <= 1e-12 * float(estimate) or n > 65537
            ):
                return estimate
            previous_estimate = estimate
        previous_length, n = length, 2 * n - 1


def _barycentric(nodes, weights, values, targets):
    """The interpolating polynomial of ``values`` (N+1, d) at ``nodes``, evaluated at ``targets`` (m,) → (m, d)."""
    gaps = targets[:, None] - nodes
    exact = gaps == 0
    kernel = weights / torch.where(exact, torch.ones_like(gaps), gaps)
    kernel = torch.where(exact.any(-1, keepdim=True), exact.to(values.dtype), kernel)
    return (kernel @ values) / kernel.sum(-1, keepdim=True)


def _reshape(result: ReferenceDistances, batch: torch.Size) -> ReferenceDistances:
    for name in _PER_PAIR_FIELDS + ("local_lengths",):
        value = getattr(result, name)
        trailing = {"x0": 1, "x1": 1, "initial_velocity": 1, "local_lengths": 1, "points": 2}.get(name, 0)
        setattr(result, name, value.reshape(*batch, *value.shape[value.ndim - trailing :]))
    return result


_PER_PAIR_FIELDS = (
    "distance", "x0", "x1", "points", "initial_velocity", "verified", "collocation_residual", "shot_miss",
    "velocity_correction", "shot_landed", "shot_distance", "shot_speed_drift", "quadrature_error", "n_converged",
    "n_local",
)
