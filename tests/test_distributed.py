"""Distance matrices in resumable blocks, on one process and over two torchrun processes (CPU, gloo)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import scoregeo as sg
from scoregeo.geodesics import pairwise

F64 = torch.float64
WORKERS = Path(__file__).parent / "workers"
sys.path.insert(0, str(WORKERS))
from distances_worker import problem  # noqa: E402


def _count_solves(monkeypatch) -> list[int]:
    """Count the pairs each call of the solver gets, by wrapping pairwise.geodesic."""
    calls: list[int] = []
    solve = pairwise.geodesic

    def counted(metric, x0, x1, **kw):
        calls.append(x0.shape[0])
        return solve(metric, x0, x1, **kw)

    monkeypatch.setattr(pairwise, "geodesic", counted)
    return calls


def test_blocks_on_disk_are_reused_and_give_the_same_matrix(tmp_path, monkeypatch):
    metric, X = problem()
    calls = _count_solves(monkeypatch)
    plain = sg.pairwise_distances(metric, X, batch_size=2, progress=False)
    assert sum(calls) == 21
    calls.clear()
    stored = sg.pairwise_distances(metric, X, batch_size=2, progress=False, out_dir=tmp_path)
    assert torch.equal(stored, plain) and sum(calls) == 21
    files = sorted(tmp_path.glob("block-*.pt"))
    assert len(files) == 11  # 21 pairs in blocks of 2
    calls.clear()
    again = sg.pairwise_distances(metric, X, batch_size=2, progress=False, out_dir=tmp_path)
    assert torch.equal(again, plain) and calls == []  # everything loaded, nothing solved
    files[4].unlink()
    again = sg.pairwise_distances(metric, X, batch_size=2, progress=False, out_dir=tmp_path)
    assert torch.equal(again, plain) and calls == [2]  # only the missing block


@pytest.mark.parametrize(
    "change",
    [
        dict(key="another model"),
        dict(batch_size=3),
        dict(X_shift=1e-9),
        dict(lam=4.5),
    ],
    ids=["key", "batch size", "points", "metric"],
)
def test_blocks_from_other_inputs_or_settings_are_refused(tmp_path, change):
    metric, X = problem()
    sg.pairwise_distances(metric, X, batch_size=2, progress=False, out_dir=tmp_path)
    kwargs = dict(batch_size=change.get("batch_size", 2), key=change.get("key", ""))
    if "lam" in change:
        metric = sg.ScoreMetric(metric.score, 2, lam=change["lam"])
    X = X + change.get("X_shift", 0.0)
    with pytest.raises(ValueError, match="other inputs or settings"):
        sg.pairwise_distances(metric, X, progress=False, out_dir=tmp_path, **kwargs)


def test_unreadable_block_and_missing_out_dir_are_refused(tmp_path):
    metric, X = problem()
    sg.pairwise_distances(metric, X, batch_size=2, progress=False, out_dir=tmp_path)
    (tmp_path / "block-000003.pt").write_bytes(b"not a block")
    with pytest.raises(ValueError, match="block-000003.pt is not a readable block file"):
        sg.pairwise_distances(metric, X, batch_size=2, progress=False, out_dir=tmp_path)
    with pytest.raises(ValueError, match="distributed=True needs out_dir"):
        sg.pairwise_distances(metric, X, progress=False, distributed=True)
    with pytest.raises(ValueError, match="key must be a string"):
        sg.pairwise_distances(metric, X, progress=False, key=3)


def _torchrun(*target: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Two CPU processes (one thread each) under torchrun running ``target``: a script and its arguments,
    or "-m", a module and its arguments."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *target]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def _distances(*args: str) -> subprocess.CompletedProcess:
    return _torchrun(str(WORKERS / "distances_worker.py"), *args)


def _training(*args: str) -> subprocess.CompletedProcess:
    return _torchrun(str(WORKERS / "train_worker.py"), *args)


def test_two_ranks_give_the_single_process_matrix_and_resume_after_a_killed_rank(tmp_path):
    metric, X = problem()
    single = sg.pairwise_distances(metric, X, batch_size=2, progress=False, key="worker")

    run = _distances(str(tmp_path / "blocks"), str(tmp_path / "matrix.pt"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "matrix.pt"), single)

    # rank 1 dies (SIGKILL) after its first block: the launcher fails, finished blocks stay on disk
    killed = _distances(str(tmp_path / "resumed"), str(tmp_path / "resumed.pt"), "--kill-rank", "1")
    assert killed.returncode != 0
    assert "SIGKILL" in killed.stderr or "Signal 9" in killed.stderr, killed.stderr[-3000:]
    finished = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "resumed").glob("block-*.pt")}
    assert 1 <= len(finished) < 11
    rerun = _distances(str(tmp_path / "resumed"), str(tmp_path / "resumed.pt"))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "resumed.pt"), single)
    after = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "resumed").glob("block-*.pt")}
    assert len(after) == 11
    assert all(after[name] == stamp for name, stamp in finished.items())  # finished blocks were not recomputed


# ----------------------------------------------------------------------------- distributed training
def test_a_ddp_step_has_the_gradient_of_one_process_on_the_same_global_batch(tmp_path):
    from scoregeo.scores.objectives import exact_score_matching
    from train_worker import RecordingMLP

    run = _training("gradient", str(tmp_path / "step.pt"))
    assert run.returncode == 0, run.stderr[-3000:]
    result = torch.load(tmp_path / "step.pt")
    batches = result["batches"]
    assert [tuple(b.shape) for b in batches] == [(4, 2), (4, 2)]  # 8 examples, 4 per rank
    assert not torch.equal(batches[0], batches[1])  # the ranks drew different examples
    torch.manual_seed(0)
    net = RecordingMLP().to(F64)  # the same initial weights
    exact_score_matching(lambda x: net(x), torch.cat(batches)).backward()
    for name, parameter in net.named_parameters():
        torch.testing.assert_close(result["gradients"][name], parameter.grad, rtol=1e-12, atol=1e-14)


def test_training_killed_on_one_rank_resumes_to_the_uninterrupted_result(tmp_path):
    whole = _training("run", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    digests = {(tmp_path / "whole" / f"ema-{r}.txt").read_text() for r in (0, 1)}
    assert len(digests) == 1  # the EMA is identical on both ranks

    killed = _training("run", str(tmp_path / "resumed"), "--kill-at", "6")
    assert killed.returncode != 0
    config = sg.scores.checkpoint.read_config(tmp_path / "resumed")
    assert config["training"]["step"] == 4 and config["training"]["world_size"] == 2  # the last checkpoint
    shutil.copytree(tmp_path / "resumed", tmp_path / "one process")
    finished = _training("run", str(tmp_path / "resumed"))
    assert finished.returncode == 0, finished.stderr[-3000:]
    resumed = {(tmp_path / "resumed" / f"ema-{r}.txt").read_text() for r in (0, 1)}
    assert resumed == digests  # bit for bit the uninterrupted run

    assert sg.scores.checkpoint.read_config(tmp_path / "resumed")["training"]["step"] == 12
    sg.ScoreModel.load(tmp_path / "resumed")  # a complete, loadable model

    # the same checkpoint resumed by one process: state restored, new minibatch streams, said so
    from train_worker import data

    with pytest.warns(UserWarning, match="with 1 processes from a checkpoint of 2"):
        alone = sg.train_score(data(), "dsm", steps=12, batch_size=8, checkpoint_every=4, out=tmp_path / "one process",
                               resume=True, progress=False, seed=3)
    assert len(alone.loss_history) == 12
    whole_history = sg.scores.checkpoint.read_tensors(tmp_path / "whole" / "train_state.safetensors", None)
    assert alone.loss_history[:4] == whole_history["loss_history"][:4].tolist()  # restored, not recomputed

    # rank 0, the one that writes the checkpoints, killed instead
    killed = _training("run", str(tmp_path / "rank 0 killed"), "--kill-at", "6", "--kill-rank", "0")
    assert killed.returncode != 0
    assert sg.scores.checkpoint.read_config(tmp_path / "rank 0 killed")["training"]["step"] == 4
    finished = _training("run", str(tmp_path / "rank 0 killed"))
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert {(tmp_path / "rank 0 killed" / f"ema-{r}.txt").read_text() for r in (0, 1)} == digests


def test_the_cli_trains_under_torchrun_and_rank_0_reports(tmp_path):
    run = _torchrun("-m", "scoregeo", "train", "--data", "moons", "--n-data", "256", "--steps", "20", "--batch-size",
                    "16", "--out", str(tmp_path / "run"), "--no-progress")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("trained dsm on moons") == 1
    config = sg.scores.checkpoint.read_config(tmp_path / "run")
    assert config["training"]["world_size"] == 2 and config["training"]["step"] == 20
    assert (tmp_path / "run" / "loss.png").is_file() and (tmp_path / "run" / "run.json").is_file()


def test_a_failing_rank_makes_the_launcher_fail_and_shows_its_error(tmp_path):
    run = _training("fail", str(tmp_path / "unused"))
    assert run.returncode != 0
    assert "rank 1 fails on purpose" in run.stderr


def test_the_cli_distances_under_torchrun_equal_one_process(tmp_path):
    from scoregeo.cli import main

    run_dir = tmp_path / "run"
    assert main(["train", "--data", "moons", "--n", "500", "--steps", "30", "--batch-size", "64", "--out",
                 str(run_dir), "--no-progress", "--threads", "1"]) == 0
    common = ["distances", "--model", str(run_dir), "--sigma", "0.5", "--indices", "0:5", "--lam", "2",
              "--batch-size", "3", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "one.npy"), "--threads", "1"]) == 0
    run = _torchrun("-m", "scoregeo", *common, "--out", str(tmp_path / "two.npy"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("5×5 distances (10 pairs)") == 1  # rank 0 reports
    assert len(list((tmp_path / "two.npy.blocks").glob("block-*.pt"))) == 4  # 10 pairs in blocks of 3
    assert np.array_equal(np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy"))
