"""Score-model files: a JSON config plus safetensors weights, written atomically, checked on load.

A model directory holds

* ``config.json``: what to build (network config, method, parameterisation,
  noise model, data shape) and how it was trained, with the SHA-256 of every
  weight file;
* ``model.safetensors``: the weights used for inference (the EMA weights);
* ``train_state.safetensors``: everything ``resume`` needs (raw and EMA weights,
  Adam moments, the random generator's state, the loss history).

safetensors files hold only tensors and a JSON header, so loading them runs no
code. Every file is written to a temporary file and renamed; the config is
written last. A file whose checksum differs from the config's, a truncated or
corrupt file, or weights that do not fit the network are refused with a
``CheckpointError`` (a ``ValueError``) that names the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .._io import atomic_write

FORMAT = "scoregeo-score-model"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"


class CheckpointError(ValueError):
    """A model directory that cannot be loaded: missing, corrupt, truncated or mismatched files."""


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write ``tensors`` to ``path`` in safetensors format (atomically); return the file's SHA-256."""
    payload = save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    atomic_write(path, lambda fh: fh.write(payload), binary=True)
    return hashlib.sha256(payload).hexdigest()


def read_tensors(path: Path, sha256: str | None) -> dict[str, torch.Tensor]:
    """Read a safetensors file, refusing it when missing, corrupt or not matching ``sha256``."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found (the model directory is incomplete)")
    payload = path.read_bytes()
    if sha256 is not None and hashlib.sha256(payload).hexdigest() != sha256:
        raise CheckpointError(
            f"{path}: checksum does not match {CONFIG_FILE} (the file is truncated, corrupt, or from another run)"
        )
    try:
        tensors = load_safetensors(payload)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: tensor {name!r} holds NaN or Inf (a diverged run was saved)")
    return tensors


def write_config(directory: Path, config: dict[str, Any]) -> None:
    """Write ``config.json`` atomically (tagged with the format name and version)."""
    body = {"format": FORMAT, "version": VERSION, **config}
    atomic_write(directory / CONFIG_FILE, lambda fh: json.dump(body, fh, indent=2), binary=False)


def read_config(directory: Path) -> dict[str, Any]:
    """Read and check ``config.json`` of a model directory."""
    path = Path(directory) / CONFIG_FILE
    if not Path(directory).is_dir():
        raise CheckpointError(f"{directory}: not a model directory (it does not exist)")
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found ({directory} is not a scoregeo model directory)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt JSON ({err})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a scoregeo score-model config (format {config.get('format')!r})"
                              if isinstance(config, dict) else f"{path}: not a JSON object")
    if config.get("version") != VERSION:
        raise CheckpointError(f"{path}: format version {config.get('version')!r}, this scoregeo reads {VERSION}")
    for key in ("network", "method", "parameterization", "noise", "data_shape", "files"):
        if key not in config:
            raise CheckpointError(f"{path}: missing key {key!r}")
    return config


def load_state_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """``module.load_state_dict(tensors)``, strict, with a clear error on missing, extra or mis-shaped weights."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    shapes = [f"{k}: file {tuple(tensors[k].shape)} vs network {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(tensors)) if tensors[k].shape != own[k].shape]
    if missing or extra or shapes:
        parts = [f"missing {missing[:5]}" if missing else "", f"unexpected {extra[:5]}" if extra else "",
                 f"shape mismatch {shapes[:3]}" if shapes else ""]
        raise CheckpointError(f"{source}: weights do not fit the network in {CONFIG_FILE} ("
                              + "; ".join(p for p in parts if p) + ")")
    module.load_state_dict(tensors)
