"""Boundary-value geodesics in any dimension: the symmetry oracle, shortest geodesics, domains, solver objects."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.distributions import Categorical, MultivariateNormal, Normal

import scoregeo as sg
from scoregeo import oracles

F64 = torch.float64

# ------------------------------------------------------------------ the oracle in R^d


@pytest.mark.parametrize("d", [16, 64, 784])
def test_auto_matches_the_symmetry_oracle_in_high_dimension(d):
    """The distance in R^d equals the verified 3-D reference (exact reduction, see scoregeo.oracles)."""
    lam = 10.0
    problem = oracles.default_problem(d, seed=d)
    a, b = oracles.problem_pairs(problem, 1, seed=d)
    reference = oracles.reference_distance(problem, a, b, lam)
    assert bool(reference.verified.all())
    path = sg.geodesic(problem.metric(lam), problem.lift(a), problem.lift(b))
    assert bool(path.converged.all())
    error = ((path.length - reference.distance) / reference.distance).abs()
    # the solver's tolerance is 1e-6 on the length change between grids; the error is far below it (~1e-8)
    assert float(error.max()) < 1e-6, error
    assert bool((path.residual <= 1e-6).all())
    # Path.length is the length of the returned curve: an independent polyline quadrature of the samples
    dense = sg.geodesic(problem.metric(lam), problem.lift(a), problem.lift(b), n_points=1025)
    polyline = sg.curve_length(problem.metric(lam), dense.points)
    torch.testing.assert_close(polyline, path.length, rtol=2e-6, atol=0)  # midpoint rule: O(1/1024²)
    assert path.evaluations is not None and bool((path.evaluations > 0).all())


@pytest.mark.parametrize("lam", [10.0, 100.0])
def test_residual_bounds_the_error_of_the_length(lam):
    """Path.residual (Richardson's estimate from the observed rate) is not below the true error, at a loose rtol."""
    problem = oracles.default_problem(16, seed=4)
    a, b = oracles.problem_pairs(problem, 4, seed=4)
    reference = oracles.reference_distance(problem, a, b, lam)
    assert bool(reference.verified.all())
    solver = sg.geodesics.Shortest(local=sg.geodesics.MultilevelNewton(rtol=1e-4))
    path = sg.geodesic(problem.metric(lam), problem.lift(a), problem.lift(b), solver=solver)
    assert bool(path.converged.all())
    error = ((path.length - reference.distance) / reference.distance).abs()
    assert bool((path.residual <= 1e-4).all())
    assert bool((error <= path.residual + 1e-9).all()), (error, path.residual)  # references: ~1e-10


def test_grids_that_do_not_resolve_the_geodesic_are_detected_and_only_loosely_minimised():
    """A stiff pair (λ = 100) whose coarse discrete curves step over the metric's ridge.

    On 16 segments the discrete length √E falls far below the length of the Hermite curve
    through the same points (the grid does not resolve the curve); such a grid is never
    counted as minimised, a loose solve is cheaper, and a grid that does resolve its curve
    is minimised to the full tolerance. The solve still converges to the verified reference.
    """
    from scoregeo.geodesics import hermite
    from scoregeo.geodesics.discrete import discrete_energy
    from scoregeo.geodesics.solver import straight_lines

    lam, newton_tol = 100.0, 1e-8
    problem = oracles.default_problem(16, seed=0)
    a, b = oracles.problem_pairs(problem, 8, seed=0)
    a, b = a[7:], b[7:]
    reference = oracles.reference_distance(problem, a, b, lam)
    assert bool(reference.verified.all())
    metric, x0, x1 = problem.metric(lam), problem.lift(a), problem.lift(b)
    solver = sg.geodesics.MultilevelNewton()
    line = straight_lines(x0, x1, 17)

    tight = solver._solve_grid(metric, line, torch.tensor([True]), newton_tol)
    discrete_length = discrete_energy(metric, tight.points).sqrt()
    assert float(discrete_length) < 0.5 * float(tight.length)  # measured: 9.05 against 39.3
    assert bool(tight.minimised) and not bool(tight.resolved)
    loose = solver._solve_grid(metric, line, torch.tensor([False]), newton_tol)
    assert not bool(loose.minimised) and not bool(loose.resolved)
    assert int(loose.evaluations) < int(tight.evaluations)

    path = sg.geodesic(metric, x0, x1, solver="newton")
    assert bool(path.converged.all())
    error = ((path.length - reference.distance) / reference.distance).abs()
    assert float(error.max()) < 1e-6, error
    # a grid that resolves its curve is minimised to the full tolerance even after an unresolved one
    fine = hermite.resample(path.points, 513)  # 512 segments: the grid the solve converged on
    again = solver._solve_grid(metric, fine, torch.tensor([False]), newton_tol)
    assert bool(again.resolved) and bool(again.minimised)
    torch.testing.assert_close(again.length, reference.distance, rtol=1e-6, atol=0)


def test_shortest_geodesic_leaves_the_plane_in_3d_and_in_16d():
    """In-plane end points whose shortest geodesic leaves the plane (reference 5.5628; in-plane geodesic 7.6769)."""
    lam = 100.0
    problem = oracles.default_problem(16)
    x0 = torch.tensor([[-1.0, 0.0, 0.0]], dtype=F64)
    x1 = torch.tensor([[2.4, 0.0, 0.0]], dtype=F64)
    reference = oracles.reference_distance(problem, x0, x1, lam)
    assert bool(reference.verified.all())
    in_3d = sg.geodesic(problem.metric3(lam), x0, x1)
    torch.testing.assert_close(in_3d.length, reference.distance, rtol=1e-7, atol=0)
    assert float(in_3d.points[0, :, 2].abs().max()) > 1.0  # off the plane z = 0
    in_16d = sg.geodesic(problem.metric(lam), problem.lift(x0), problem.lift(x1))
    assert bool(in_16d.converged.all())
    torch.testing.assert_close(in_16d.length, reference.distance, rtol=1e-6, atol=0)


def test_a_pair_gets_the_same_answer_alone_and_in_a_batch():
    problem = oracles.default_problem(16, seed=3)
    a, b = oracles.problem_pairs(problem, 2, seed=5)
    metric = problem.metric(10.0)
    x0, x1 = problem.lift(a), problem.lift(b)
    far = x0[1] + 50.0  # a distant pair changes nothing for the first one
    alone = sg.geodesic(metric, x0[:1], x1[:1])
    batch = sg.geodesic(metric, torch.stack([x0[0], far]), torch.stack([x1[0], far + 1.0]))
    torch.testing.assert_close(batch.length[:1], alone.length, rtol=1e-12, atol=0)
    assert int(batch.n_local[0]) == int(alone.n_local[0])
    torch.testing.assert_close(batch.points[:1], alone.points, rtol=0, atol=1e-10)


def test_newton_solver_object_and_registry():
    problem = oracles.default_problem(16, seed=16)
    a, b = oracles.problem_pairs(problem, 1, seed=16)
    metric = problem.metric(10.0)
    by_name = sg.geodesic(metric, problem.lift(a), problem.lift(b), solver="newton")
    tight = sg.geodesic(metric, problem.lift(a), problem.lift(b), solver=sg.geodesics.MultilevelNewton(rtol=1e-8))
    assert by_name.method == "newton"
    torch.testing.assert_close(by_name.length, tight.length, rtol=1e-6, atol=0)
    assert float(tight.residual) <= 1e-8
    with_lbfgs = sg.geodesics.MultilevelNewton(max_lbfgs=200)
    with_lbfgs = sg.geodesic(metric, problem.lift(a), problem.lift(b), solver=with_lbfgs)
    assert bool(with_lbfgs.converged.all())  # the optional L-BFGS stage before Newton reaches the same geodesic
    torch.testing.assert_close(with_lbfgs.length, tight.length, rtol=1e-6, atol=0)
    assert set(sg.geodesics.SOLVERS) >= {"collocation", "energy", "shooting", "newton"}
    with pytest.raises(ValueError, match="solver"):
        sg.geodesic(metric, problem.lift(a), problem.lift(b), solver="magic")
    with pytest.raises(ValueError, match="first_segments"):
        sg.geodesics.MultilevelNewton(first_segments=2)
    with pytest.raises(ValueError, match="rtol"):
        sg.geodesics.MultilevelNewton(rtol=0.0)


def test_geodesics_between_digits_under_a_learned_field_are_checked_by_exp_map():
    """A fixed seeded network as the score on the 8×8 digits (d = 64; its Jacobian is not symmetric):
    geodesics between digits of different classes converge, and exp_{x0}(log_{x0} x1) = x1."""
    torch.manual_seed(0)
    d = 64
    net = torch.nn.Sequential(torch.nn.Linear(d, 64), torch.nn.Tanh(), torch.nn.Linear(64, d)).double()

    def score(x):
        return net(x) - x  # a confining field, like the score of a density

    metric = sg.ScoreMetric(score, d, lam=1.0)
    images, labels = sg.datasets.digits(dtype=F64, return_labels=True)
    first = lambda digit: images[(labels == digit).nonzero()[0, 0]]  # noqa: E731
    x0, x1 = torch.stack([first(0), first(3)]), torch.stack([first(1), first(8)])
    path = sg.geodesic(metric, x0, x1)
    assert bool(path.converged.all())
    assert bool((path.length >= (x1 - x0).norm(dim=-1)).all())  # α = 1: never shorter than the chord
    # the velocity of a curve whose length is right to 1e-6 is right to about 1e-3 only (the length is
    # stationary); log_map solves to rtol 1e-10: measured miss 9e-8 of the chord (1.5e-4 at rtol 1e-6)
    velocity = sg.log_map(metric, x0, x1)
    end = sg.exp_map(metric, x0, velocity)
    assert float(((end - x1).norm(dim=-1) / (x1 - x0).norm(dim=-1)).max()) < 1e-6
    torch.testing.assert_close(metric.norm(x0, velocity), path.length, rtol=1e-6, atol=0)  # |v|_g = distance


# ------------------------------------------------------------------ domains


def _categorical(theta: torch.Tensor) -> Categorical:
    return Categorical(probs=torch.cat([theta, 1 - theta.sum(-1, keepdim=True)], -1))


def test_categorical_in_free_coordinates_matches_the_closed_form():
    """A metric defined on the open simplex only: trial points that leave it are backtracked, never abort the call.

    p ↦ 2√p maps the simplex onto the positive orthant of the sphere of radius 2, whose geodesics between
    two of its points are unique great-circle arcs inside it: the local solver from the chord finds the
    distance, and the default multi-start solver is checked on the pair of the issue.
    """
    metric = sg.FisherRaoMetric(_categorical, 2)
    x0 = torch.tensor([[0.05, 0.05]], dtype=F64)
    x1 = torch.tensor([[0.9, 0.05]], dtype=F64)
    torch.manual_seed(0)
    a = torch.distributions.Dirichlet(torch.ones(3, dtype=F64)).sample((16,))[:, :2]
    b = torch.distributions.Dirichlet(torch.ones(3, dtype=F64)).sample((16,))[:, :2]
    full = lambda t: torch.cat([t, 1 - t.sum(-1, keepdim=True)], -1)  # noqa: E731
    closed_form = lambda a, b: 2 * torch.arccos((full(a).sqrt() * full(b).sqrt()).sum(-1).clamp(max=1))  # noqa: E731
    path = sg.geodesic(metric, a, b, solver="collocation")
    assert bool(path.converged.all())
    torch.testing.assert_close(path.length, closed_form(a, b), rtol=1e-7, atol=0)
    default = sg.geodesic(metric, x0, x1)
    assert abs(float(closed_form(x0, x1)[0]) - 2.153337) < 1e-6
    torch.testing.assert_close(default.length, closed_form(x0, x1), rtol=1e-7, atol=0)


def test_spd_affine_log_and_centred_normal():
    def spd(x):  # 2×2 SPD matrices [[a, b], [b, c]] in coordinates (a, b, c); affine-invariant metric
        P = torch.stack([torch.stack([x[..., 0], x[..., 1]], -1), torch.stack([x[..., 1], x[..., 2]], -1)], -2)
        P_inv = torch.linalg.inv(P)
        E = torch.zeros(3, 2, 2, dtype=x.dtype)
        E[0, 0, 0] = 1
        E[1, 0, 1] = E[1, 1, 0] = 1
        E[2, 1, 1] = 1
        M = P_inv.unsqueeze(-3) @ E  # (..., 3, 2, 2)
        return torch.einsum("...iab,...jba->...ij", M, M)

    metric = sg.MatrixMetric(spd, 3)
    x0 = torch.tensor([2.0, 0.0, 2.0], dtype=F64)  # 2I
    x1 = torch.tensor([1.0, 0.0, 1.0], dtype=F64)  # I
    log = sg.log_map(metric, x0, x1, solver="collocation")  # SPD is a Hadamard manifold: the local geodesic is the one
    # log_{2I}(I) = 2I^{1/2} logm((2I)^{-1/2} I (2I)^{-1/2}) 2I^{1/2} = 2 log(1/2) I
    torch.testing.assert_close(log, torch.tensor([-2 * math.log(2), 0.0, -2 * math.log(2)], dtype=F64), rtol=1e-6, atol=1e-8)

    def centred(theta):  # N(0, diag(σ1², σ2²)) with σ = θ
        return MultivariateNormal(torch.zeros(*theta.shape[:-1], 2, dtype=theta.dtype), torch.diag_embed(theta**2))

    metric = sg.FisherRaoMetric(centred, 2)
    s0 = torch.tensor([1.0, 0.5], dtype=F64)
    s1 = torch.tensor([0.3, 2.0], dtype=F64)
    expected = math.sqrt(2) * (s1 / s0).log().norm()  # independent coordinates, each √2 |log σ1/σ0|
    # flat in log coordinates: geodesics are unique, the local solver from the chord finds the one
    torch.testing.assert_close(sg.distance(metric, s0, s1, solver="collocation"), expected, rtol=1e-7, atol=0)


def test_normal_near_sigma_zero_matches_the_closed_form():
    metric = sg.FisherRaoMetric(lambda t: Normal(t[..., 0], t[..., 1]), 2)
    x0 = torch.tensor([[0.0, 1e-3], [0.0, 0.01]], dtype=F64)
    x1 = torch.tensor([[0.01, 2e-3], [0.5, 0.02]], dtype=F64)
    expected = sg.fisher_rao.normal(x0[:, 0], x0[:, 1], x1[:, 0], x1[:, 1])
    torch.testing.assert_close(sg.distance(metric, x0, x1), expected, rtol=1e-6, atol=0)


def test_end_points_outside_the_domain_are_refused():
    metric = sg.MatrixMetric(lambda x: torch.diag_embed(torch.stack([torch.ones_like(x[..., 0]), x[..., 1]], -1)), 2)
    with pytest.raises(ValueError, match="x1"):  # G = diag(1, y) is not positive-definite at y = −1
        sg.geodesic(metric, torch.tensor([0.0, 1.0], dtype=F64), torch.tensor([0.0, -1.0], dtype=F64))


# ------------------------------------------------------------------ lengths are lengths of the returned curves


def test_energy_solver_length_is_the_length_of_its_curve():
    """The case of the issue: λ = 1e6, n_points = 257 reported 12.49 for a polyline of length 11 844."""
    mixture = sg.GaussianMixture(torch.tensor([[0.0, 1.3], [0.0, -1.3]], dtype=F64), 0.5 * torch.eye(2, dtype=F64))
    metric = sg.ScoreMetric(mixture.score, 2, lam=1e6)
    x0, x1 = torch.tensor([-2.4, 0.4], dtype=F64), torch.tensor([2.4, -0.2], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        path = sg.geodesic(metric, x0, x1, solver="energy", n_points=257)
    # an independent measure of the returned polyline: every segment cut into 256 pieces, midpoint rule
    fine = torch.cat([torch.lerp(path.points[:-1, None], path.points[1:, None], torch.linspace(0, 1, 257, dtype=F64)[:-1, None]).reshape(-1, 2), path.points[-1:]])
    polyline = sg.curve_length(metric, fine)
    assert abs(float(polyline / path.length) - 1) < 1e-2


def test_empty_batch_and_coincident_points():
    metric = sg.ScoreMetric(sg.Gaussian(torch.zeros(5, dtype=F64), torch.eye(5, dtype=F64)).score, 5, lam=10.0)
    empty = sg.geodesic(metric, torch.zeros(0, 5, dtype=F64), torch.zeros(0, 5, dtype=F64), n_points=7)
    assert empty.points.shape == (0, 7, 5) and empty.length.shape == (0,)
    x = torch.ones(2, 5, dtype=F64)
    same = sg.geodesic(metric, x, x)
    assert bool((same.length == 0).all()) and bool(same.converged.all())


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: sg.geodesics.CollocationSolver(rtol=2.0), "rtol"),
        (lambda: sg.geodesics.CollocationSolver(max_order=8), "max_order"),
        (lambda: sg.geodesics.EnergySolver(rtol=0.0), "rtol"),
        (lambda: sg.geodesics.EnergySolver(gtol=float("nan")), "gtol"),
        (lambda: sg.geodesics.EnergySolver(max_iter=0), "max_iter"),
        (lambda: sg.geodesics.ShootingSolver(max_iter=0), "max_iter"),
        (lambda: sg.geodesics.MultilevelNewton(max_segments=16), "max_segments"),
        (lambda: sg.geodesics.MultilevelNewton(max_cg=0), "max_cg"),
        (lambda: sg.geodesics.MultilevelNewton(max_lbfgs=-1), "max_lbfgs"),
        (lambda: sg.geodesics.MultilevelNewton(lbfgs_tol=1.5), "lbfgs_tol"),
        (lambda: sg.geodesics.StartCurves(n_points=1), "n_points"),
        (lambda: sg.geodesics.StartCurves(bends=(0.4, -1.0)), "bends"),
        (lambda: sg.geodesics.StartCurves(n_directions=-1), "n_directions"),
        (lambda: sg.geodesics.StartCurves(anchors=torch.full((3, 2), float("nan"))), "anchors"),
    ],
)
def test_solver_options_are_validated(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_anchors_of_the_wrong_dimension_are_refused():
    metric = sg.Euclidean(3)
    solver = sg.geodesics.Shortest(local=sg.geodesics.CollocationSolver(), starts=sg.geodesics.StartCurves(anchors=torch.zeros(4, 2)))
    with pytest.raises(ValueError, match="anchors"):
        sg.geodesic(metric, torch.zeros(3), torch.ones(3), solver=solver)


def test_multilevel_shortest_samples_only_the_chosen_curves_and_agrees_with_the_default_selection():
    """MultilevelNewton.shortest resamples the winners only; the result is BVPSolver.shortest's (refine + select)."""
    from scoregeo.geodesics import BVPSolver, StartCurves

    problem = oracles.default_problem(16, seed=3)
    a, b = oracles.problem_pairs(problem, 2, seed=5)
    metric = problem.metric(10.0)
    starts = StartCurves(bends=(0.5,), n_directions=2).build(metric, problem.lift(a), problem.lift(b))
    solver = sg.geodesics.MultilevelNewton()
    fast = solver.shortest(metric, starts, 33)
    default = BVPSolver.shortest(solver, metric, starts, 33)
    assert fast.points.shape == default.points.shape == (2, 33, 16)
    for name in ("points", "length", "converged", "initial_velocity", "residual", "n_local", "local_lengths", "evaluations"):
        torch.testing.assert_close(getattr(fast, name), getattr(default, name), rtol=0, atol=0, equal_nan=True)


def test_duplicates_are_found_per_group_without_all_pairs_of_curves():
    """_outrun's duplicate rule against its dense definition (all (A, A) pairs), with tiles of one pair."""
    from scoregeo.geodesics import hermite, multilevel

    gen = torch.Generator().manual_seed(7)
    base = torch.randn(3, 9, 5, generator=gen, dtype=torch.float64)
    curves = torch.cat([base, base + 1e-6 * torch.randn(3, 9, 5, generator=gen, dtype=torch.float64),
                        base + 0.3 * torch.randn(3, 9, 5, generator=gen, dtype=torch.float64)])
    groups = torch.arange(3).repeat(3)
    length = torch.rand(9, generator=gen, dtype=torch.float64) + 1
    active = torch.arange(9)
    change = torch.full((9,), float("inf"), dtype=torch.float64)  # lengths within 2x: none beaten by length
    found = multilevel._outrun(length, change, groups, active, curves)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hermite, "_TILE_BYTES", 1)
        assert torch.equal(multilevel._outrun(length, change, groups, active, curves), found)
    chord = (curves[:, -1] - curves[:, 0]).norm(dim=-1)
    gaps = (curves[:, None] - curves[None, :]).norm(dim=-1).amax(-1)
    same = (groups[:, None] == groups[None, :]) & ~torch.eye(9, dtype=torch.bool)
    longer = length[:, None] > length[None, :]
    expected = (same & (gaps <= 1e-3 * chord[:, None]) & longer).any(1)
    assert torch.equal(found, expected) and int(expected.sum()) == 3  # the longer of each near-identical pair
