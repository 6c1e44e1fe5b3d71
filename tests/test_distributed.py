"""Distance matrices in resumable blocks, on one process and over two torchrun processes (CPU, gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def _torchrun(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(WORKERS / "distances_worker.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_ranks_give_the_single_process_matrix_and_resume_after_a_killed_rank(tmp_path):
    metric, X = problem()
    single = sg.pairwise_distances(metric, X, batch_size=2, progress=False, key="worker")

    run = _torchrun(str(tmp_path / "blocks"), str(tmp_path / "matrix.pt"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "matrix.pt"), single)

    # rank 1 dies (SIGKILL) after its first block: the launcher fails, finished blocks stay on disk
    killed = _torchrun(str(tmp_path / "resumed"), str(tmp_path / "resumed.pt"), "--kill-rank", "1")
    assert killed.returncode != 0
    assert "SIGKILL" in killed.stderr or "Signal 9" in killed.stderr, killed.stderr[-3000:]
    finished = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "resumed").glob("block-*.pt")}
    assert 1 <= len(finished) < 11
    rerun = _torchrun(str(tmp_path / "resumed"), str(tmp_path / "resumed.pt"))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "resumed.pt"), single)
    after = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "resumed").glob("block-*.pt")}
    assert len(after) == 11
    assert all(after[name] == stamp for name, stamp in finished.items())  # finished blocks were not recomputed
