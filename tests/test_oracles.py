"""The symmetry oracle (scoregeo.oracles): exact distances in R^d from a 3-D problem.

Checked here: the embedding (orthonormal frame, densities and scores of the
d-dimensional mixture at lifted points equal the 3-D ones), that lifting keeps
curve energies and reducing never raises them, that the reference geodesic,
lifted, is a geodesic in R^d (shooting there lands on the lifted end point),
that the reference can be strictly shorter than the in-plane geodesic, and the
reference against an independent closed form (a single isotropic Gaussian at
α = 1 is a paraboloid of revolution; distances by Clairaut's relation and
1-D quadrature).
"""

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.integrate import IntegrationWarning, quad
from scipy.optimize import brentq

import scoregeo as sg
import scoregeo.oracles as oracles

F64 = torch.float64


def _random_points3(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 1.5 * torch.randn(n, 3, generator=g, dtype=F64)


@pytest.mark.parametrize("d", [3, 16, 64])
def test_frame_is_orthonormal_and_normal_is_off_plane(d):
    problem = oracles.default_problem(d, seed=d)
    Q, e = problem.frame, problem.normal
    assert Q.shape == (d, 2) and e.shape == (d,) and Q.dtype == F64
    torch.testing.assert_close(Q.T @ Q, torch.eye(2, dtype=F64), rtol=0, atol=1e-15)
    torch.testing.assert_close(Q.T @ e, torch.zeros(2, dtype=F64), rtol=0, atol=1e-15)
    assert abs(float(e.norm()) - 1) <= 1e-15
    # the same seed gives the same frame
    torch.testing.assert_close(oracles.default_problem(d, seed=d).frame, Q, rtol=0, atol=0)


@pytest.mark.parametrize("d", [16, 64])
def test_d_dim_mixture_at_lifted_points_equals_the_3d_one(d):
    problem = oracles.default_problem(d)
    p3 = _random_points3(50, seed=1)
    lifted = problem.lift(p3)
    assert lifted.shape == (50, d)
    # log-densities differ by the normalisation of the extra d − 3 off-plane dimensions only
    offset = -(d - 3) / 2 * math.log(2 * math.pi * problem.c**2)
    torch.testing.assert_close(
        problem.mixture.log_prob(lifted), problem.mixture3.log_prob(p3) + offset, rtol=1e-13, atol=1e-12
    )
    score = problem.mixture.score(lifted)
    torch.testing.assert_close(score, problem.lift(problem.mixture3.score(p3)), rtol=1e-12, atol=1e-12)
    # the off-plane part of the score is along e
    off = score - (score @ problem.frame) @ problem.frame.T
    along = (off @ problem.normal)[:, None] * problem.normal
    torch.testing.assert_close(off, along, rtol=0, atol=1e-12)
    assert float((off @ problem.normal).abs().min()) > 1e-3  # and not trivially zero
    # reduce inverts lift on z >= 0 and folds z < 0
    torch.testing.assert_close(problem.reduce(lifted), torch.cat([p3[:, :2], p3[:, 2:].abs()], 1), rtol=0, atol=1e-13)


@pytest.mark.parametrize("d", [16, 64, 784])
def test_structured_score_and_log_prob_equal_the_mixture_everywhere(d):
    problem = oracles.default_problem(d)
    x = torch.randn(40, d, generator=torch.Generator().manual_seed(2), dtype=F64)  # generic points of R^d
    torch.testing.assert_close(problem.score(x), problem.mixture.score(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(problem.log_prob(x), problem.mixture.log_prob(x), rtol=1e-13, atol=1e-12)


def _smooth_curve3(n: int) -> torch.Tensor:
    t = torch.linspace(0, 1, n, dtype=F64)[:, None]
    return torch.cat([-1.0 + 2.4 * t, 0.8 * torch.sin(math.pi * t), 0.3 + 0.5 * t * (1 - t) * 4], 1)


@pytest.mark.parametrize("lam", [10.0, 100.0])
def test_lifting_keeps_the_energy_and_reducing_never_raises_it(lam):
    problem = oracles.default_problem(16)
    metric3 = problem.metric3(lam)
    metric_d = sg.ScoreMetric(problem.mixture.score, 16, lam, 1.0)  # the generic mixture, not the structured score
    curve = _smooth_curve3(400)
    e3 = sg.curve_energy(metric3, curve)
    torch.testing.assert_close(sg.curve_energy(metric_d, problem.lift(curve)), e3, rtol=1e-12, atol=0)
    # a curve whose off-plane part turns away from e: its reduction is strictly cheaper
    t = torch.linspace(0, 1, 4000, dtype=F64)[:, None]
    g = torch.Generator().manual_seed(3)
    other = torch.randn(16, generator=g, dtype=F64)
    other -= problem.frame @ (problem.frame.T @ other) + problem.normal * (problem.normal @ other)
    other /= other.norm()
    radius = 0.3 + 0.5 * t * (1 - t) * 4
    x = (
        torch.cat([-1.0 + 2.4 * t, 0.8 * torch.sin(math.pi * t)], 1) @ problem.frame.T
        + radius * (torch.cos(2 * t) * problem.normal + torch.sin(2 * t) * other)
    )
    reduced = problem.reduce(x)
    e_full, e_reduced = sg.curve_energy(metric_d, x), sg.curve_energy(metric3, reduced)
    assert float(e_reduced) < float(e_full) * (1 - 1e-3)
    # the reduced curve keeps log p (up to the constant) along the way
    offset = -(16 - 3) / 2 * math.log(2 * math.pi * problem.c**2)
    torch.testing.assert_close(problem.mixture.log_prob(x), problem.mixture3.log_prob(reduced) + offset, rtol=1e-13, atol=1e-12)


# --- reference geodesics ---------------------------------------------------------------------------------

# in-plane end points on either side of the component at (1.2, 0): at λ = 100 the shortest curve climbs over it
# out of the plane (z up to ~1.5) instead of going round it in the plane (measured: 5.5628 vs 7.6769)
IN_PLANE_PAIR = ((-1.0, 0.0, 0.0), (2.4, 0.0, 0.0))


def test_reference_geodesics_are_shortest_verified_and_geodesics_in_Rd():
    # one batch of references (costly) serves every check: an in-plane pair and a random off-plane pair, λ = 100
    lam = 100.0
    problem = oracles.default_problem(64)
    pair0, pair1 = oracles.problem_pairs(problem, 1, seed=0)
    assert bool((pair0[:, 2] > 0).all()) and bool((pair1[:, 2] > 0).all())
    x0 = torch.cat([torch.tensor([IN_PLANE_PAIR[0]], dtype=F64), pair0])
    x1 = torch.cat([torch.tensor([IN_PLANE_PAIR[1]], dtype=F64), pair1])
    ref = oracles.reference_distance(problem, x0, x1, lam)

    # the record
    assert bool(ref.verified.all())
    assert ref.distance.shape == (2,) and ref.points.shape == (2, 65, 3) and ref.initial_velocity.shape == (2, 3)
    torch.testing.assert_close(ref.points[:, 0], x0, rtol=0, atol=0)
    torch.testing.assert_close(ref.points[:, -1], x1, rtol=0, atol=0)
    assert float(ref.shot_miss.max()) < 1e-6 and float(ref.quadrature_error.max()) < 1e-9
    assert float(ref.velocity_correction.max()) < 1e-7 and float(ref.shot_landed.max()) < 1e-7
    torch.testing.assert_close(ref.shot_distance, ref.distance, rtol=1e-8, atol=0)  # a second distance, by shooting
    assert bool((ref.collocation_residual <= 1e-11).all())
    assert ref.n_starts == 17 and bool((ref.n_converged >= 1).all()) and bool((ref.n_local >= 1).all())
    torch.testing.assert_close(ref.local_lengths[:, 0], ref.distance, rtol=1e-6, atol=0)  # shortest first
    assert bool((ref.distance >= (x1 - x0).norm(dim=-1)).all())  # α = 1: never shorter than the chord

    # strictly shorter than the shortest in-plane geodesic (the 2-D problem, from the line and arcs bowed to
    # either side by four bends), because it leaves the plane
    a, b = x0[:1, :2], x1[:1, :2]
    chord = b - a
    normal = torch.stack([-chord[:, 1], chord[:, 0]], -1) / chord.norm(dim=-1, keepdim=True)
    metric2 = sg.ScoreMetric(problem.mixture2.score, 2, lam, 1.0)
    in_plane, *_ = oracles.shortest_geodesic(metric2, a, b, [normal, -normal], bends=(0.2, 0.4, 0.8, 1.2))
    assert bool(in_plane.converged.all())
    assert float(ref.distance[0]) < 0.8 * float(in_plane.length[0])  # measured: 27.5% shorter
    assert float(ref.points[0, :, 2].abs().max()) > 1.0
    # yet the in-plane geodesic is a geodesic of the 3-D problem (z = 0 is totally geodesic)
    velocity = sg.geodesics.collocation.initial_velocity(metric2, in_plane)
    zero = torch.zeros(1, 1, dtype=F64)
    end = sg.exp_map(problem.metric3(lam), torch.cat([a, zero], 1), torch.cat([velocity, zero], 1), rtol=1e-12, atol=1e-12)
    assert float((end[0, :2] - b[0]).norm()) < 1e-7 and float(end[0, 2].abs()) < 1e-12

    # lifted, the references are geodesics in R^d: the shot from the lifted initial velocity lands on the lifted
    # end point, with the metric norm of the velocity (the length) unchanged
    for d in (16, 64, 784):
        embedded = oracles.embedded_mixture(d, problem.mixture2.means, problem.mixture2.covs, problem.c, seed=d)
        # the generic d-dim mixture's score (K d×d precisions), and at d = 784 the structured O(K d) one
        metric = embedded.metric(lam) if d > 64 else sg.ScoreMetric(embedded.mixture.score, d, lam, 1.0)
        shot = sg.shoot(metric, embedded.lift(x0), embedded.lift(ref.initial_velocity), n_points=2, rtol=1e-12, atol=1e-12)
        assert bool(shot.converged.all())
        miss = (shot.end_point - embedded.lift(x1)).norm(dim=-1)
        assert float(miss.max()) < 1e-7, (d, miss)
        torch.testing.assert_close(shot.length, ref.distance, rtol=1e-12, atol=0)


def test_verified_pairs_returns_only_verified_references():
    problem = oracles.default_problem(16)
    x0, x1, ref, dropped = oracles.verified_pairs(problem, 2, lam=10.0, seed=1, bends=(0.4,))
    assert x0.shape == (2, 3) and x1.shape == (2, 3) and bool(ref.verified.all()) and dropped == []
    torch.testing.assert_close(torch.stack(oracles.problem_pairs(problem, 2, seed=1)), torch.stack([x0, x1]))
    assert ref.n_starts == 9 and ref.local_lengths.shape[0] == 2


def _paraboloid_distance(r0: float, r1: float, angle: float, k: float) -> float:
    """Distance on the surface of revolution ds² = (1 + k r²) dr² + r² dθ² between (r0, 0) and (r1, angle).

    Clairaut: along a geodesic r² dθ/ds = h. With r = h cosh w (smooth at the
    turning point r = h), dθ = f(r)/cosh w dw and ds = r f(r) dw, f = √(1 + k r²).
    A geodesic either turns at r = h (w from 0 to both ends) or is monotone in r;
    every solution of the angle condition (angle or 2π − angle) on a fine grid of h
    is found by bisection, and the shortest wins.
    """

    def f(r):
        return math.sqrt(1 + k * r * r)

    def integral(h, lo, hi):
        opts = dict(epsabs=1e-15, epsrel=1e-14, limit=200)
        with warnings.catch_warnings():  # quad warns when rounding (~1e-16) keeps it from these tolerances
            warnings.simplefilter("ignore", IntegrationWarning)
            turn = quad(lambda w: f(h * math.cosh(w)) / math.cosh(w), lo, hi, **opts)[0]
            length = quad(lambda w: h * math.cosh(w) * f(h * math.cosh(w)), lo, hi, **opts)[0]
        return turn, length

    def branch(h, turning):
        w0, w1 = math.acosh(max(r0 / h, 1.0)), math.acosh(max(r1 / h, 1.0))
        if turning:
            (t0, l0), (t1, l1) = integral(h, 0.0, w0), integral(h, 0.0, w1)
            return t0 + t1, l0 + l1
        return integral(h, min(w0, w1), max(w0, w1))

    if angle == 0:  # the radial segment: ∫ f dr in closed form
        F = lambda r: 0.5 * (r * f(r) + math.asinh(math.sqrt(k) * r) / math.sqrt(k))  # noqa: E731
        return abs(F(r1) - F(r0))
    hs = min(r0, r1) * np.concatenate([np.geomspace(1e-6, 0.5, 60), np.linspace(0.5, 1.0, 60)[1:]])
    lengths = []
    for target in (angle, 2 * math.pi - angle):
        for turning in (True, False):
            gap = [branch(h, turning)[0] - target for h in hs]
            for i in range(len(hs) - 1):
                if gap[i] * gap[i + 1] < 0:
                    h = brentq(lambda h: branch(h, turning)[0] - target, hs[i], hs[i + 1], xtol=1e-16, rtol=1e-15)
                    lengths.append(branch(h, turning)[1])
    return min(lengths)


def test_reference_matches_the_paraboloid_closed_form():
    # one isotropic component N(0, σ² I) and α = 1: g = I + (λ/σ⁴) x xᵀ is rotation invariant, so the shortest
    # geodesic lies in the plane of 0, x0, x1, where the metric is (1 + k r²) dr² + r² dθ², k = λ/σ⁴
    sigma, lam = 0.8, 10.0
    problem = oracles.embedded_mixture(16, torch.zeros(1, 2, dtype=F64), sigma**2 * torch.eye(2, dtype=F64), sigma)
    x0 = torch.tensor([[0.5, 0.3, 0.2], [0.9, -0.4, 0.3], [0.3, 0.2, 0.1]], dtype=F64)
    x1 = torch.tensor([[-0.4, 0.6, 0.7], [0.2, 1.1, 0.0], [1.2, 0.8, 0.4]], dtype=F64)  # the last: same ray
    # given as points of R^16 on the ray of e (reduced by problem.reduce_on_ray)
    ref = oracles.reference_distance(problem, problem.lift(x0), problem.lift(x1), lam, bends=(0.4,))
    assert bool(ref.verified.all())
    torch.testing.assert_close(ref.x0, x0, rtol=0, atol=1e-14)
    torch.testing.assert_close(ref.x1, x1, rtol=0, atol=1e-14)
    for i in range(len(x0)):
        r0, r1 = float(x0[i].norm()), float(x1[i].norm())
        cos = float(x0[i] @ x1[i]) / (r0 * r1)
        angle = 0.0 if cos > 1 - 1e-15 else math.acos(cos)
        exact = _paraboloid_distance(r0, r1, angle, lam / sigma**4)
        # measured agreement 2e-15; both sides are accurate far below 1e-11
        assert abs(float(ref.distance[i]) - exact) <= 1e-11 * exact, (i, float(ref.distance[i]), exact)


def test_problem_pairs_are_off_plane_separated_and_seeded():
    problem = oracles.default_problem(16)
    x0, x1 = oracles.problem_pairs(problem, 12, seed=5)
    assert x0.shape == (12, 3) and x1.shape == (12, 3) and x0.dtype == F64
    assert bool((x0[:, 2] > 0).all()) and bool((x1[:, 2] > 0).all())
    assert bool(((x1 - x0).norm(dim=-1) >= 1.0).all())
    again = oracles.problem_pairs(problem, 12, seed=5)
    assert torch.equal(again[0], x0) and torch.equal(again[1], x1)
    assert not torch.equal(oracles.problem_pairs(problem, 12, seed=6)[0], x0)


def test_bad_input_is_refused():
    problem = oracles.default_problem(8)
    good = torch.tensor([0.0, 0.0, 0.5], dtype=F64)
    off_ray = problem.lift(good) + 0.1 * torch.randn(8, generator=torch.Generator().manual_seed(4), dtype=F64)
    with pytest.raises(ValueError, match="ray of e"):
        oracles.reference_distance(problem, off_ray, problem.lift(good + 1), 10.0)
    with pytest.raises(ValueError, match="ray of e"):
        oracles.reference_distance(problem, problem.lift(-good), problem.lift(good + 1), 10.0)  # z < 0
    with pytest.raises(ValueError, match=">= 0"):
        oracles.reference_distance(problem, good, torch.tensor([1.0, 0.0, -0.1], dtype=F64), 10.0)
    with pytest.raises(ValueError, match="alpha=0"):
        oracles.reference_distance(problem, good, good + 1, 10.0, alpha=0.0)
    with pytest.raises(ValueError, match="equal points"):
        oracles.reference_distance(problem, good, good, 10.0)
    with pytest.raises(ValueError):
        oracles.embedded_mixture(2, torch.zeros(1, 2), torch.eye(2), 1.0)
    with pytest.raises(ValueError, match="c must be"):
        oracles.embedded_mixture(8, torch.zeros(1, 2), torch.eye(2), 0.0)
    with pytest.raises(ValueError, match="means2"):
        oracles.embedded_mixture(8, torch.zeros(2, 3), torch.eye(2), 1.0)
