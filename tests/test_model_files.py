"""ScoreModel files and noise models that fail loudly: bad noise parameters, NaN weights, file permissions."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest
import torch
from safetensors.torch import save_file

import scoregeo as sg
from scoregeo.scores.networks import NoiseConditionalMLP


def _model(noise=None, method="dsm") -> sg.ScoreModel:
    torch.manual_seed(0)
    return sg.ScoreModel(NoiseConditionalMLP(2), method, "epsilon", noise or {"sigma_min": 0.1, "sigma_max": 1.0}, (2,))


@pytest.mark.parametrize(
    "method, noise, message",
    [
        ("dsm", {"sigma_min": -1.0, "sigma_max": 1.0}, "noise\\['sigma_min'\\] of a 'dsm' model must be a finite number > 0"),
        ("ve", {"sigma_min": 0.5, "sigma_max": 0.1}, "must be below"),
        ("vp", {"beta_min": 0.1, "beta_max": float("nan")}, "noise\\['beta_max'\\]"),
        ("ncsn", {"sigmas": [1.0, 2.0]}, "decreasing list"),
        ("dsm", {"sigma_max": 1.0}, "sigma_min"),
    ],
)
def test_bad_noise_parameters_are_refused(method, noise, message):
    with pytest.raises(ValueError, match=message):
        _model(noise, method)


def test_a_config_with_a_bad_noise_level_does_not_load(tmp_path):
    _model().save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["noise"]["sigma_min"] = -1
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(sg.CheckpointError, match="config.json: noise\\['sigma_min'\\]"):
        sg.ScoreModel.load(tmp_path)


def test_nan_weights_with_a_matching_hash_do_not_load(tmp_path):
    model = _model()
    model.save(tmp_path)
    state = {k: v.clone() for k, v in model.network.state_dict().items()}
    first = next(iter(state))
    state[first][...] = float("nan")
    save_file(state, tmp_path / "model.safetensors")
    config = json.loads((tmp_path / "config.json").read_text())
    config["files"]["model.safetensors"] = hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest()
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(sg.CheckpointError, match=f"tensor '{first}' holds NaN or Inf"):
        sg.ScoreModel.load(tmp_path)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_files_get_the_permissions_of_a_plain_write(tmp_path, umask):
    old = os.umask(umask)
    try:
        _model().save(tmp_path)
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("config.json", "model.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_training_into_an_existing_run_is_refused_without_resume(tmp_path):
    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    sg.train_score(data, "dsm", steps=3, batch_size=16, out=tmp_path, progress=False, checkpoint_every=2)
    before = (tmp_path / "config.json").read_bytes()
    with pytest.raises(ValueError, match="already holds a trained model or checkpoint: pass resume=True"):
        sg.train_score(data, "dsm", steps=3, batch_size=16, out=tmp_path, progress=False)
    assert (tmp_path / "config.json").read_bytes() == before


def test_interrupted_training_names_the_checkpoint_and_the_resume_command(tmp_path, capsys, monkeypatch):
    import argparse

    from scoregeo import cli
    from scoregeo.scores.checkpoint import STATE_FILE

    monkeypatch.setattr(cli.sys, "argv", ["scoregeo", "train", "--data", "moons", "--out", str(tmp_path)])
    args = argparse.Namespace(out=str(tmp_path), checkpoint_every=1000, threads=None)

    def interrupted():
        raise KeyboardInterrupt

    assert cli._guarded("train", args, interrupted) == 130
    assert "before the first checkpoint" in capsys.readouterr().err
    (tmp_path / STATE_FILE).write_bytes(b"")
    assert cli._guarded("train", args, interrupted) == 130
    err = capsys.readouterr().err
    assert f"the last checkpoint (saved every 1000 steps) is in {tmp_path}" in err
    assert f"scoregeo train --data moons --out {tmp_path} --resume" in err
