"""``scoregeo train | sample | geodesic`` end to end, the plots they write, and their errors.

Oracles: a geodesic is never longer than the straight line under the same metric
(both lengths come from ``sg.curve_length`` on the learned metric); the samples of
a trained model are closer to the data than its starting distribution (sliced W2).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import scoregeo as sg
from scoregeo import plotting
from scoregeo.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("moons")
    code = main(["train", "--data", "moons", "--n", "2000", "--method", "dsm", "--out", str(out), "--steps", "300",
                 "--checkpoint-every", "100", "--no-progress", "--threads", "1", "--sigma-min", "0.1"])
    assert code == 0
    return out


def test_train_writes_model_checkpoint_and_loss_plot(run_dir):
    for name in ("config.json", "model.safetensors", "train_state.safetensors", "run.json", "loss.png"):
        assert (run_dir / name).stat().st_size > 0, name
    assert (run_dir / "loss.png").read_bytes().startswith(PNG)
    assert json.loads((run_dir / "config.json").read_text())["training"]["step"] == 300
    assert json.loads((run_dir / "run.json").read_text()) == {"data": "moons", "n": 2000, "seed": 0}
    assert not list(run_dir.glob(".*.tmp"))


def test_train_resume_continues(run_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert main(["train", "--data", "moons", "--n", "2000", "--out", str(copy), "--steps", "350", "--resume",
                 "--checkpoint-every", "100", "--no-progress", "--threads", "1", "--sigma-min", "0.1"]) == 0
    assert "350 steps" in capsys.readouterr().out
    assert json.loads((copy / "config.json").read_text())["training"]["step"] == 350


def test_sample_writes_samples_closer_to_the_data_than_the_start(run_dir, tmp_path, capsys):
    out = tmp_path / "samples"
    assert main(["sample", "--model", str(run_dir), "--n", "500", "--out", str(out), "--no-progress",
                 "--threads", "1"]) == 0
    samples = torch.from_numpy(np.load(out / "samples.npy"))
    assert samples.shape == (500, 2) and bool(torch.isfinite(samples).all())
    assert (out / "samples.png").read_bytes().startswith(PNG)
    data = sg.datasets.make("moons", 2000, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    model = sg.ScoreModel.load(run_dir)
    start = model.data_mean + model.sigma_range[1] * torch.randn(500, 2, generator=gen)
    sw = lambda x: float(sg.evaluation.sliced_wasserstein(x, data, 256, torch.Generator().manual_seed(2)))  # noqa: E731
    assert sw(samples) < 0.25 * sw(start)
    assert "sliced W2 to the data" in capsys.readouterr().out


def test_geodesic_is_no_longer_than_the_line(run_dir, tmp_path):
    plot, report_path = tmp_path / "geo.png", tmp_path / "geo.json"
    code = main(["geodesic", "--model", str(run_dir), "--sigma", "0.5", "--from=-1.5,0.5", "--to", "1.5,-0.5",
                 "--lam", "3", "--plot", str(plot), "--json", str(report_path), "--no-progress", "--threads", "1"])
    report = json.loads(report_path.read_text())
    assert code == 0 and report["converged"]
    assert report["geodesic"]["length"] <= report["straight_line"]["length"] * (1 + 1e-9)
    assert report["straight_line"]["euclidean_length"] == pytest.approx(10**0.5, rel=1e-12)
    assert plot.read_bytes().startswith(PNG)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "no_such_toy", "--out", "{tmp}/x"], "unknown dataset"),
        (["train", "--data", "{tmp}/bad.npy", "--out", "{tmp}/x"], "bad.npy"),
        (["sample", "--model", "{tmp}/nowhere"], "not a model directory"),
        (["geodesic", "--model", "{run}", "--from", "1,2,3", "--to", "0,0", "--sigma", "0.5"], "2 coordinates"),
        (["geodesic", "--model", "{run}", "--from", "1,2", "--to", "0,0"], "sigma is required"),
    ],
)
def test_input_errors_exit_2_with_a_message(argv, message, run_dir, tmp_path, capsys):
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    argv = [a.format(tmp=tmp_path, run=run_dir) for a in argv] + ["--no-progress", "--threads", "1"]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "sample", "geodesic"])
def test_help_and_unknown_options(command, capsys):
    with pytest.raises(SystemExit) as help_exit:
        main([command, "--help"])
    assert help_exit.value.code == 0 and "--no-progress" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad_exit:
        main([command, "--no-such-option"])
    assert bad_exit.value.code == 2


def test_bad_numbers_are_usage_errors(capsys):
    for argv in (["train", "--data", "moons", "--out", "x", "--lr", "-1"],
                 ["geodesic", "--model", "x", "--from", "a,b", "--to", "0,0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2


def test_loss_curve_and_samples_plots():
    fig = Figure()
    ax = fig.add_subplot()
    raw, mean = plotting.loss_curve(ax, [3.0, 2.0, 1.0, 0.5], window=2)
    np.testing.assert_allclose(mean.get_ydata(), [2.5, 1.5, 0.75])
    assert len(raw.get_xdata()) == 4
    assert plotting.samples(ax, torch.zeros(5, 2)).get_offsets().shape == (5, 2)
    with pytest.raises(ValueError, match="losses"):
        plotting.loss_curve(ax, [])
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plotting.samples(ax, torch.zeros(5, 3))


def test_learned_log_density_of_an_exact_score_matches_log_p():
    """The least-squares potential of an exact score is log p renormalised on the box (O(h²) error)."""
    g = sg.GaussianMixture(torch.tensor([[0.0, -1.0], [1.0, 1.0]], dtype=torch.float64),
                           0.4 * torch.eye(2, dtype=torch.float64))
    from scoregeo.scores.potential import grid_log_density, line_integral

    X, Y, log_p = grid_log_density(g.score, (-3, 3), (-3, 3), (121, 121))
    exact = g.log_prob(torch.from_numpy(np.stack([X, Y], -1)))
    exact = exact - torch.log(torch.exp(exact).sum() * 0.05**2)
    # h = 0.05: second-order differences of a field with curvature |∇²s| ≲ 1/0.4² give errors ~ h²/0.16·O(1)
    assert np.abs(log_p - exact.numpy()).max() < 5e-3
    points = torch.stack([torch.linspace(-2, 2, 400, dtype=torch.float64),
                          torch.linspace(-1, 1.5, 400, dtype=torch.float64)], -1)
    change = line_integral(g.score, points)
    torch.testing.assert_close(change, g.log_prob(points) - g.log_prob(points[0]), rtol=0, atol=2e-4)


def test_geodesic_end_points_by_data_index_and_npy_file(run_dir, tmp_path):
    data = sg.datasets.make("moons", 2000, torch.Generator().manual_seed(0)).double()
    np.save(tmp_path / "end.npy", data[7].numpy())
    by_index, by_file = tmp_path / "index.json", tmp_path / "file.json"
    common = ["--sigma", "0.5", "--no-progress", "--threads", "1", "--n-points", "16"]
    assert main(["geodesic", "--model", str(run_dir), "--from-index", "3", "--to-index", "7", "--json", str(by_index),
                 *common]) == 0
    assert main(["geodesic", "--model", str(run_dir), f"--from={data[3, 0]},{data[3, 1]}",
                 "--to-file", str(tmp_path / "end.npy"), "--json", str(by_file), *common]) == 0
    a, b = json.loads(by_index.read_text()), json.loads(by_file.read_text())
    assert a["from"] == pytest.approx(data[3].tolist(), rel=1e-6) and a["to"] == pytest.approx(data[7].tolist(), rel=1e-6)
    assert a["geodesic"]["length"] == pytest.approx(b["geodesic"]["length"], rel=1e-6)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--from-index", "5000", "--to-index", "1"], "--from-index must be in [0, 2000)"),
        (["--from-file", "{tmp}/missing.npy", "--to-index", "1"], "--from-file must be an existing .npy file"),
        (["--from-index", "1", "--to-index", "2", "--plot", "{tmp}/strip.jpg"], "--plot must name a .png file"),
    ],
)
def test_geodesic_end_point_errors_exit_2(extra, message, run_dir, tmp_path, capsys):
    argv = ["geodesic", "--model", str(run_dir), "--sigma", "0.5", "--no-progress", "--threads", "1"]
    assert main(argv + [a.format(tmp=tmp_path) for a in extra]) == 2
    assert message in capsys.readouterr().err


def test_geodesic_between_digits_writes_an_image_strip(tmp_path, capsys):
    """Digits (d = 64): end points by training index, and --plot draws rows of 8×8 images."""
    run = tmp_path / "digits"
    assert main(["train", "--data", "digits", "--method", "dsm", "--out", str(run), "--steps", "30",
                 "--no-progress", "--threads", "1", "--sigma-min", "0.1"]) == 0
    strip = tmp_path / "strip.png"
    code = main(["geodesic", "--model", str(run), "--sigma", "0.5", "--from-index", "0", "--to-index", "1",
                 "--lam", "1", "--n-points", "16", "--plot", str(strip), "--no-progress", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    assert strip.read_bytes().startswith(PNG)
    assert "converged: True" in capsys.readouterr().out


def test_distances_writes_a_symmetric_matrix_equal_to_the_library_call(run_dir, tmp_path, capsys):
    out = tmp_path / "d.npy"
    assert main(["distances", "--model", str(run_dir), "--sigma", "0.5", "--indices", "0:3", "--out", str(out),
                 "--lam", "2", "--no-progress", "--threads", "1"]) == 0
    D = torch.from_numpy(np.load(out))
    assert D.shape == (3, 3) and bool((D == D.T).all()) and bool((D.diagonal() == 0).all())
    data = sg.datasets.make("moons", 2000, torch.Generator().manual_seed(0)).double()
    model = sg.ScoreModel.load(run_dir, dtype=torch.float64)
    expected = sg.pairwise_distances(sg.ScoreMetric(model.score_fn(0.5), lam=2.0), data[:3], progress=False)
    torch.testing.assert_close(D, expected, rtol=1e-9, atol=1e-12)
    assert "3×3 distances (3 pairs)" in capsys.readouterr().out
    np.save(tmp_path / "pts.npy", data[:2].numpy())
    assert main(["distances", "--model", str(run_dir), "--sigma", "0.5", "--points", str(tmp_path / "pts.npy"),
                 "--out", str(tmp_path / "e.npy"), "--lam", "2", "--no-progress", "--threads", "1"]) == 0
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "e.npy")), D[:2, :2], rtol=1e-9, atol=1e-12)
    assert main(["distances", "--model", str(run_dir), "--sigma", "0.5", "--indices", "1998:2010", "--lam", "2",
                 "--out", str(tmp_path / "f.npy"), "--no-progress"]) == 0  # a slice is clipped like Python's
    assert np.load(tmp_path / "f.npy").shape == (2, 2)
    assert main(["distances", "--model", str(run_dir), "--sigma", "0.5", "--indices", "3,9999",
                 "--out", str(tmp_path / "g.npy"), "--no-progress"]) == 2
    assert "--indices must select rows in [0, 2000)" in capsys.readouterr().err


def test_distances_keep_blocks_resume_from_them_and_refuse_other_settings(run_dir, tmp_path, capsys):
    blocks = tmp_path / "blocks"
    common = ["distances", "--model", str(run_dir), "--sigma", "0.5", "--indices", "0:4", "--batch-size", "2",
              "--blocks", str(blocks), "--no-progress", "--threads", "1"]
    assert main([*common, "--out", str(tmp_path / "a.npy"), "--lam", "2"]) == 0
    assert len(list(blocks.glob("block-*.pt"))) == 3  # 6 pairs in blocks of 2
    stamps = {p.name: p.stat().st_mtime_ns for p in blocks.glob("block-*.pt")}
    assert main([*common, "--out", str(tmp_path / "b.npy"), "--lam", "2"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in blocks.glob("block-*.pt")} == stamps  # loaded, not rewritten
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "c.npy"), "--lam", "3"]) == 2
    assert "other inputs or settings" in capsys.readouterr().err
    assert not (tmp_path / "c.npy").exists()


def test_geodesic_and_distances_with_a_local_diffusers_pipeline(tmp_path, capsys):
    """A tiny random UNet2DModel and its scheduler saved as a pipeline directory (nothing downloaded)."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=4, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    pipe = tmp_path / "pipe"
    unet.save_pretrained(pipe / "unet")
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(pipe / "scheduler")
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline",
                                                       "unet": ["diffusers", "UNet2DModel"],
                                                       "scheduler": ["diffusers", "DDPMScheduler"]}))
    gen = torch.Generator().manual_seed(1)
    points = torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    for i in range(3):
        np.save(tmp_path / f"p{i}.npy", points[i].numpy())
    np.save(tmp_path / "points.npy", points.numpy())
    report, strip = tmp_path / "r.json", tmp_path / "strip.png"
    common = ["--model", str(pipe), "--timestep", "600", "--lam", "1", "--no-progress", "--threads", "1"]
    assert main(["geodesic", *common, "--from-file", str(tmp_path / "p0.npy"), "--to-file", str(tmp_path / "p1.npy"),
                 "--n-points", "16", "--plot", str(strip), "--json", str(report)]) == 0, capsys.readouterr().err
    assert strip.read_bytes().startswith(PNG)
    result = json.loads(report.read_text())
    assert result["converged"] and result["geodesic"]["length"] <= result["straight_line"]["length"] * (1 + 1e-9)
    assert main(["distances", *common, "--points", str(tmp_path / "points.npy"), "--out", str(tmp_path / "d.npy")]) == 0
    from scoregeo.scores.diffusers import load_pipeline_score

    D = torch.from_numpy(np.load(tmp_path / "d.npy"))
    metric = sg.ScoreMetric(load_pipeline_score(pipe, 600), lam=1.0)
    torch.testing.assert_close(D, sg.pairwise_distances(metric, points, progress=False), rtol=1e-9, atol=1e-12)
    assert main(["geodesic", "--model", str(pipe), "--from-file", str(tmp_path / "p0.npy"),
                 "--to-file", str(tmp_path / "p1.npy"), "--no-progress"]) == 2
    assert "a diffusers model needs --timestep" in capsys.readouterr().err
