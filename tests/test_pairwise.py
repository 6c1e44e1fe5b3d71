"""Distance matrices: symmetry, zero diagonal, agreement with single-pair solves and with closed forms."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import scoregeo as sg

F64 = torch.float64


def test_euclidean_matrix_is_the_euclidean_distance():
    gen = torch.Generator().manual_seed(0)
    X, Y = torch.randn(5, 3, generator=gen, dtype=F64), torch.randn(4, 3, generator=gen, dtype=F64)
    metric = sg.Euclidean(3)
    torch.testing.assert_close(sg.pairwise_distances(metric, X, progress=False), torch.cdist(X, X), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sg.pairwise_distances(metric, X, Y, batch_size=3, progress=False), torch.cdist(X, Y),
                               rtol=1e-12, atol=1e-12)


def test_score_metric_matrix_is_symmetric_and_matches_single_pair_solves():
    p = sg.GaussianMixture(torch.tensor([[0.0, -1.3], [0.0, 1.3]], dtype=F64), 0.5 * torch.eye(2, dtype=F64))
    metric = sg.ScoreMetric(p.score, 2, lam=4.0)
    X = torch.tensor([[-2.0, 0.3], [1.8, -0.4], [0.2, 2.1], [-0.5, -1.9]], dtype=F64)
    D = sg.pairwise_distances(metric, X, batch_size=4, progress=False)
    assert bool((D == D.T).all()) and bool((D.diagonal() == 0).all())
    solver = sg.geodesics.shortest.default_solver(2)
    solver = dataclasses.replace(solver, starts=dataclasses.replace(solver.starts, anchors=X))
    for i, j in [(0, 1), (1, 3), (2, 3)]:
        single = sg.distance(metric, X[i], X[j], solver=solver)
        assert float(D[i, j]) == pytest.approx(float(single), rel=1e-12)
    # a different batching gives the same matrix (pairs are independent)
    torch.testing.assert_close(sg.pairwise_distances(metric, X, batch_size=1, progress=False), D, rtol=1e-12, atol=0)


def test_bad_point_sets_are_refused():
    metric = sg.Euclidean(2)
    with pytest.raises(ValueError, match="X must have shape \\(n, 2\\)"):
        sg.pairwise_distances(metric, torch.zeros(3, 3), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        sg.pairwise_distances(metric, torch.zeros(3, 2), batch_size=0, progress=False)
