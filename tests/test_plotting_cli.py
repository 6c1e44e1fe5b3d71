"""Plotting functions (what they draw, 2-D checks) and the ``scoregeo`` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.collections import PatchCollection
from matplotlib.contour import QuadContourSet
from matplotlib.figure import Figure
from matplotlib.quiver import Quiver

import scoregeo as sg
from scoregeo import plotting
from scoregeo.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
DT = torch.float64


@pytest.fixture
def ax():
    return Figure().add_subplot()


@pytest.fixture
def gaussian():
    return sg.Gaussian(torch.zeros(2, dtype=DT), torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=DT))


@pytest.fixture
def gaussian3():
    return sg.Gaussian(torch.zeros(3, dtype=DT), torch.eye(3, dtype=DT))


# ----------------------------------------------------------------------- plotting
def test_grid_points_shape_and_corners():
    grid = plotting.grid_points((-1, 2), (0, 1), (4, 3))
    assert grid.shape == (3, 4, 2)
    assert grid[0, 0].tolist() == [-1.0, 0.0] and grid[-1, -1].tolist() == [2.0, 1.0]


@pytest.mark.parametrize("filled", [True, False])
def test_density_contours(ax, gaussian, filled):
    cs = plotting.density_contours(ax, gaussian.log_prob, (-3, 3), (-2, 2), n=40, levels=7, filled=filled)
    assert isinstance(cs, QuadContourSet)
    assert cs.filled == filled
    assert len(cs.levels) == (8 if filled else 7)
    assert cs.levels.max() <= float(gaussian.log_prob(torch.zeros(2, dtype=DT))) + 1e-9


def test_density_contours_accepts_density_and_explicit_levels(ax, gaussian):
    cs = plotting.density_contours(ax, gaussian, (-3, 3), (-2, 2), n=20, levels=[-5.0, -3.0, -2.0], filled=False)
    assert list(cs.levels) == [-5.0, -3.0, -2.0]


def test_score_field_quiver_and_stream(ax, gaussian):
    q = plotting.score_field(ax, gaussian.score, (-3, 3), (-2, 2), n=(7, 5))
    assert isinstance(q, Quiver) and q.N == 35
    # normalised arrows point along the score
    u, v = np.asarray(q.U).ravel(), np.asarray(q.V).ravel()
    np.testing.assert_allclose(np.hypot(u, v)[np.hypot(u, v) > 0], 1.0, rtol=1e-6)
    stream = plotting.score_field(ax, gaussian, (-3, 3), (-2, 2), n=10, kind="stream")
    assert len(stream.lines.get_segments()) > 0
    with pytest.raises(ValueError, match="kind"):
        plotting.score_field(ax, gaussian.score, (-3, 3), (-2, 2), kind="arrows")


def test_metric_ellipses_count_and_axes(ax, gaussian):
    metric = sg.ScoreMetric(gaussian.score, 2, lam=10.0)
    grid = plotting.grid_points((-3, 3), (-2, 2), (6, 4), dtype=DT)
    coll = plotting.metric_ellipses(ax, metric, grid, scale=0.2)
    assert isinstance(coll, PatchCollection)
    assert len(coll.get_paths()) == 24
    assert coll in ax.collections
    # the ellipse at x has semi-axes r/√μ along the eigenvectors of G(x): check one of them
    x = torch.tensor([[1.0, -1.0]], dtype=DT)
    coll = plotting.metric_ellipses(ax, metric, x, scale=0.2)
    verts = _on_curve_points(coll.get_paths()[0])
    G = metric.matrix(x)[0].numpy()
    r_sq = np.einsum("ni,ij,nj->n", verts - x.numpy(), G, verts - x.numpy())
    np.testing.assert_allclose(r_sq, 0.2**2, rtol=1e-2)


def test_metric_ellipses_auto_scale_does_not_overlap(ax, gaussian):
    grid = plotting.grid_points((-3, 3), (-2, 2), (7, 5), dtype=DT)
    coll = plotting.metric_ellipses(ax, sg.ScoreMetric(gaussian.score, 2, lam=1.0), grid)
    centres = grid.reshape(-1, 2).numpy()
    semi_major = [np.linalg.norm(_on_curve_points(p) - c, axis=1).max() for p, c in zip(coll.get_paths(), centres)]
    assert max(semi_major) == pytest.approx(0.45 * 1.0, rel=1e-3)  # grid step 1.0


def _on_curve_points(path) -> np.ndarray:
    """Points on an ellipse drawn as Bézier segments (control points are off the curve)."""
    return np.array([bez(t) for bez, _ in path.iter_bezier() for t in np.linspace(0, 1, 9)]).reshape(-1, 2)


def test_geodesics_draws_every_batched_curve(ax):
    t = torch.linspace(0, 1, 20)
    curves = torch.stack([t, t**2], -1).expand(2, 3, 20, 2)  # (2, 3, n, d)
    lines = plotting.geodesics(ax, curves, label="batch", lw=2)
    assert len(lines) == 6 and len(ax.lines) == 6
    assert len({line.get_color() for line in lines}) == 1  # one colour for the batch
    assert [line.get_label() for line in lines].count("batch") == 1  # one legend entry
    assert len(plotting.geodesics(ax, [curves[0, 0].numpy(), curves[1]])) == 4


def test_geodesics_accepts_path(ax, gaussian):
    metric = sg.ScoreMetric(gaussian.score, 2, lam=1.0)
    x = torch.tensor([[-1.0, 0.5], [-1.0, -0.5]], dtype=DT)
    path = sg.shoot(metric, x, torch.tensor([1.0, 0.0], dtype=DT).expand_as(x), n_points=16)
    lines = plotting.geodesics(ax, path, color="k")
    assert len(lines) == 2
    np.testing.assert_allclose(lines[1].get_xydata(), path.points[1].numpy())


def test_two_dimensional_only(ax, gaussian3):
    with pytest.raises(ValueError, match="2-D"):
        plotting.density_contours(ax, gaussian3.log_prob, (-1, 1), (-1, 1), n=5)
    with pytest.raises(ValueError, match="2-D"):
        plotting.density_contours(ax, lambda x: gaussian3.log_prob(torch.cat([x, x[..., :1]], -1))[..., None], (-1, 1), (-1, 1), n=5)
    with pytest.raises(ValueError, match="2-D"):
        plotting.score_field(ax, gaussian3, (-1, 1), (-1, 1), n=5)
    with pytest.raises(ValueError, match="2-D"):
        plotting.metric_ellipses(ax, sg.Euclidean(3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="2-D"):
        plotting.metric_ellipses(ax, sg.Euclidean(2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="2-D"):
        plotting.geodesics(ax, torch.zeros(2, 10, 3))


def test_bad_limits_and_grid(ax, gaussian):
    with pytest.raises(ValueError, match="xlim"):
        plotting.density_contours(ax, gaussian.log_prob, (1, -1), (-1, 1))
    with pytest.raises(ValueError, match="ylim"):
        plotting.score_field(ax, gaussian.score, (-1, 1), 3.0)
    with pytest.raises(ValueError, match="n must"):
        plotting.score_field(ax, gaussian.score, (-1, 1), (-1, 1), n=1)
    with pytest.raises(ValueError, match="scale"):
        plotting.metric_ellipses(ax, sg.Euclidean(2), torch.zeros(1, 2), scale=-1.0)


def test_plotting_never_imports_pyplot():
    code = "import sys, scoregeo.plotting, scoregeo.cli; assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------- CLI
def test_help_lists_demo(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_demo_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--out" in out and "--no-progress" in out


@pytest.mark.parametrize("argv", [["--bogus"], ["demo", "--bogus"], [], ["nonsense"], ["demo", "--threads", "0"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: scoregeo" in capsys.readouterr().err


def test_console_script_unknown_option_exits_2():
    proc = subprocess.run([sys.executable, "-m", "scoregeo.cli", "demo", "--no-such-option"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unrecognized arguments" in proc.stderr


def test_parser_structure_allows_more_commands():
    parser = build_parser()
    args = parser.parse_args(["demo", "--out", "x", "--no-progress"])
    assert args.command == "demo" and args.out == "x" and args.no_progress


def test_demo_end_to_end(tmp_path):
    """The slow one: the whole demo in a fresh process, as `make demo` runs it."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "scoregeo.cli", "demo", "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    png = (out / "demo.png").read_bytes()
    assert len(png) > 10_000 and png[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "demo.json").read_text())
    assert report["all_converged"] and report["not_converged"] == []
    assert set(report["densities"]) == {"gaussian", "mixture"}
    for rec in report["densities"].values():
        assert [g["lam"] for g in rec["geodesics"]] == [0.0, 1.0, 10.0, 100.0]
        for g in rec["geodesics"]:
            assert g["converged"] and g["n_local"] >= 1
            assert g["riemannian_length"] >= g["euclidean_length"] - 1e-6  # g ≥ I when α = 1
        straight = rec["geodesics"][0]
        assert straight["euclidean_length"] == pytest.approx(np.linalg.norm(np.subtract(straight["x1"], straight["x0"])), rel=1e-6)
        assert all(p["converged"] and p["speed_drift"] < 1e-6 for p in rec["shots"]["paths"])
    assert not list(out.glob("*.tmp")), "temporary files left behind"
    assert "L_g" in proc.stdout
