"""The work behind ``scoregeo train``, ``sample`` and ``geodesic``: files, figures and reports.

Each function returns a JSON-serialisable report (also what the CLI prints);
every file is written atomically. Figures use matplotlib's object API (no
pyplot), so they work headless.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from . import datasets, plotting
from ._distributed import is_main_process, launched
from ._io import atomic_write
from .evaluation import sliced_wasserstein
from .geodesics import curve_length, geodesic, lerp, pairwise_distances, slerp
from .metrics import ScoreMetric
from .scores import ScoreModel, train_score
from .scores.potential import line_integral

RUN_FILE = "run.json"


def _save_figure(fig: Figure, path: Path) -> None:
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110), binary=True)


def _save_json(obj: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda fh: json.dump(obj, fh, indent=2), binary=False)


def _training_data(run: dict[str, Any]) -> torch.Tensor:
    """The exact training data of a run, regenerated from its spec and seed."""
    return datasets.get(run["data"], n=run["n"], generator=torch.Generator().manual_seed(run["seed"]))


def _run_data(model_dir: Path) -> torch.Tensor | None:
    """The training data of the run in ``model_dir`` if it has a ``run.json`` (``scoregeo train`` writes one)."""
    run_path = Path(model_dir) / RUN_FILE
    return _training_data(json.loads(run_path.read_text())) if run_path.is_file() else None


def _is_toy(spec: str) -> bool:
    return spec in datasets.TOYS


# ----------------------------------------------------------------------------- train
def train(
    data: str,
    out: str | Path,
    method: str = "dsm",
    n: int | None = None,
    seed: int = 0,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Train a score model on ``data`` (toy name, "digits" or a file) into ``out``; write ``loss.png``.

    ``options`` go to ``sg.train_score`` (steps, batch_size, lr, sigma_min, ...).
    ``out`` receives the model files, ``run.json`` (where the data came from)
    and ``loss.png`` (the training loss per step).
    """
    out = Path(out)
    n = (n or 10_000) if _is_toy(data) else n
    run = {"data": data if _is_toy(data) or data == "digits" else str(Path(data).resolve()), "n": n, "seed": seed}
    tensor = _training_data(run)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = train_score(tensor, method, seed=seed, out=out, progress=progress, **options)
    seconds = time.perf_counter() - start
    if is_main_process():  # under torchrun, rank 0 writes the run's files
        _save_json(run, out / RUN_FILE)
        fig = Figure(figsize=(6, 3.5), layout="constrained")
        ax = fig.add_subplot()
        plotting.loss_curve(ax, model.loss_history)
        ax.set_title(f"{method} on {Path(data).name}: {len(model.loss_history)} steps")
        ax.legend()
        _save_figure(fig, out / "loss.png")
    tail = model.loss_history[-max(1, len(model.loss_history) // 20):]
    return {"model": str(out), "method": method, "data": run["data"], "n_data": tensor.shape[0],
            "steps": len(model.loss_history), "final_loss": float(np.mean(tail)), "seconds": seconds,
            "sigma_range": model.sigma_range, "files": [str(out / f) for f in ("config.json", "loss.png")]}


# ----------------------------------------------------------------------------- sample
def sample(
    model_dir: str | Path,
    n: int = 2000,
    sampler: str | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Sample a trained model; write ``samples.npy`` and ``samples.png`` (over the training data) into ``out``.

    ``out`` defaults to ``model_dir``. For 2-D data the figure overlays the
    samples on the training data and the report gives their sliced
    Wasserstein-2 distance to it; images are drawn as a grid.
    """
    model_dir = Path(model_dir)
    out = Path(out) if out is not None else model_dir
    model = ScoreModel.load(model_dir)
    start = time.perf_counter()
    samples, info = model.sample(n, sampler, generator=torch.Generator().manual_seed(seed), progress=progress,
                                 **options)
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "samples.npy", lambda fh: np.save(fh, samples.numpy()), binary=True)
    report = {"model": str(model_dir), "sampler": info.sampler, "n": n, "steps": info.steps,
              "score_evals": info.score_evals, "acceptance_rate": info.acceptance_rate,
              "n_nonfinite": info.n_nonfinite, "seconds": seconds, "files": [str(out / "samples.npy")]}
    data = _run_data(model_dir)
    fig = _samples_figure(samples, data, model)
    if fig is not None:
        _save_figure(fig, out / "samples.png")
        report["files"].append(str(out / "samples.png"))
    if data is not None and data.ndim == 2 and info.n_nonfinite == 0:
        report["sliced_w2_to_data"] = float(sliced_wasserstein(samples.to(data), data, 512,
                                                               torch.Generator().manual_seed(seed)))
    return report


def _samples_figure(samples: torch.Tensor, data: torch.Tensor | None, model: ScoreModel) -> Figure | None:
    finite = samples[torch.isfinite(samples.reshape(samples.shape[0], -1)).all(1)]
    if samples.ndim == 2 and samples.shape[1] == 2:
        fig = Figure(figsize=(5, 5), layout="constrained")
        ax = fig.add_subplot()
        if data is not None:
            plotting.samples(ax, data[:5000], color="0.6", label="data")
        plotting.samples(ax, finite, color="C3", label=f"samples ({model.method})")
        ax.set(aspect="equal", xlabel="x₁", ylabel="x₂",
               title=f"{finite.shape[0]} samples of the {model.method} model" + (" over the data" if data is not None else ""))
        ax.legend(loc="upper right", markerscale=4)
        return fig
    image_shape = _image_shape(model)
    if image_shape is None or finite.shape[0] == 0:
        return None
    images = finite.reshape(finite.shape[0], *image_shape)
    count = min(64, images.shape[0])
    cols = 8
    rows = -(-count // cols)
    fig = Figure(figsize=(cols, rows), layout="constrained")
    for i in range(count):
        ax = fig.add_subplot(rows, cols, i + 1)
        image = images[i].permute(1, 2, 0).numpy()
        ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image.clip(-1, 1) * 0.5 + 0.5, cmap="gray")
        ax.set_axis_off()
    fig.suptitle(f"{count} samples of the {model.method} model ({'×'.join(map(str, images.shape[1:]))})")
    return fig


# ----------------------------------------------------------------------------- geodesic
def geodesic_under_model(
    model_dir: str | Path,
    start: Sequence[float] | int | str,
    end: Sequence[float] | int | str,
    sigma: float | None = None,
    lam: float = 10.0,
    alpha: float = 1.0,
    n_points: int = 64,
    plot: str | Path | None = None,
    progress: bool = True,
    timestep: int | None = None,
) -> dict[str, Any]:
    """Boundary-value geodesic of g = αI + λ s sᵀ with the learned score s(·, σ), beside the straight line.

    ``model_dir``: a run of ``scoregeo train`` (with ``sigma``), or a diffusers
    pipeline directory (with ``timestep``; see ``load_pipeline_score``).

    End points: coordinates (a sequence of d numbers), an index into the run's
    training data (an int), or a .npy file holding one point (a str). Reports
    both curves' Riemannian and Euclidean lengths, the solver's convergence, and
    the learned log-density change along each (line integral of the score,
    ``scores.potential.line_integral``). ``plot``: for 2-D models, both curves
    over the learned log-density and score field; for image data (8×8 digits,
    (C, H, W) models), an image strip (rows: straight line, SLERP, geodesic).
    Everything, ``plot`` included, is checked before the solve.
    """
    score, data, image_shape = _score_source(model_dir, sigma, timestep)
    dim = score.dim
    if plot is not None and dim != 2 and image_shape is None:
        raise ValueError(f"--plot draws 2-D models and image data only; this model's points have shape {score.event_shape}")
    x0, x1 = (_end_point(p, name, dim, data) for p, name in ((start, "from"), (end, "to")))
    metric = ScoreMetric(score, lam=lam, alpha=alpha)
    start_time = time.perf_counter()
    path = geodesic(metric, x0, x1, n_points=n_points, progress=progress)
    seconds = time.perf_counter() - start_time
    line = lerp(x0, x1, n_points)

    def summary(points: torch.Tensor) -> dict[str, Any]:
        log_p = line_integral(score, points)
        return {"length": float(curve_length(metric, points)),
                "euclidean_length": float((points.diff(dim=0)).norm(dim=-1).sum()),
                "log_density_change_min": float(log_p.min()), "log_density_change_end": float(log_p[-1])}

    report = {"model": str(model_dir), "sigma": sigma, "timestep": timestep, "lam": lam, "alpha": alpha, "from": x0.tolist(),
              "to": x1.tolist(), "converged": bool(path.converged), "residual": float(path.residual),
              "n_local": None if path.n_local is None else int(path.n_local), "seconds": seconds,
              "geodesic": summary(path.points), "straight_line": summary(line)}
    if plot is not None:
        figure = (_geodesic_figure(model_dir, score, path.points, line, report) if dim == 2
                  else _strip_figure({"straight line": line, "SLERP": slerp(x0, x1, n_points), "geodesic": path.points},
                                     image_shape, report))
        _save_figure(figure, Path(plot))
        report["files"] = [str(plot)]
    return report


def _score_source(model_dir, sigma: float | None, timestep: int | None):
    """(score source, training data or None, image shape or None) of a scoregeo run or a diffusers pipeline."""
    from .scores.diffusers import load_pipeline_score

    if (Path(model_dir) / "model_index.json").is_file():
        if timestep is None:
            raise ValueError("a diffusers model needs --timestep (the training timestep of its score)")
        if sigma is not None:
            raise ValueError("--sigma applies to scoregeo models; a diffusers model takes --timestep")
        source = load_pipeline_score(model_dir, timestep)
        shape = source.event_shape
        return source, None, shape if len(shape) == 3 else None
    if timestep is not None:
        raise ValueError("--timestep applies to diffusers models; a scoregeo model takes --sigma")
    model = ScoreModel.load(model_dir, dtype=torch.float64)
    return model.score_fn(sigma), _run_data(model_dir), _image_shape(model)


def _image_shape(model: ScoreModel) -> tuple[int, int, int] | None:
    """(C, H, W) of the model's points when they are images (an image model, or 64-D vectors: 8×8 digits)."""
    if len(model.data_shape) == 3:
        return model.data_shape
    return (1, 8, 8) if model.data_shape == (64,) else None


def _end_point(spec, name: str, dim: int, data: torch.Tensor | None) -> torch.Tensor:
    """An end point from coordinates, a training-data index or a .npy file; (dim,) float64."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        if data is None:
            raise ValueError(f"--{name}-index needs the run's training data (run.json of 'scoregeo train')")
        if not -data.shape[0] <= spec < data.shape[0]:
            raise ValueError(f"--{name}-index must be in [0, {data.shape[0]}), got {spec}")
        point = data[spec].reshape(-1).double()
    elif isinstance(spec, (str, Path)):
        point = _load_npy(spec, f"--{name}-file").reshape(-1)
    else:
        point = torch.tensor([float(v) for v in spec], dtype=torch.float64)
    if point.shape != (dim,):
        raise ValueError(f"--{name} must have {dim} coordinates, got {point.numel()}")
    if not bool(torch.isfinite(point).all()):
        raise ValueError(f"--{name} has NaN or Inf coordinates")
    return point


def _strip_figure(curves: dict[str, torch.Tensor], image_shape: tuple[int, int, int], report) -> Figure:
    """One row of images per curve, ten samples from start to end."""
    columns = 10
    fig = Figure(figsize=(columns * 0.9, len(curves) * 1.0 + 0.6), layout="constrained")
    axes = fig.subplots(len(curves), columns, squeeze=False)
    for row, (name, points) in zip(axes, curves.items()):
        picks = torch.linspace(0, points.shape[0] - 1, columns).round().long()
        for ax, k in zip(row, picks):
            image = points[k].reshape(image_shape).permute(1, 2, 0).numpy()
            # one grey scale for every frame (data in [−1, 1]), so brightness is comparable along a row
            ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else (image.clip(-1, 1) + 1) / 2, cmap="gray",
                      vmin=-1 if image.shape[-1] == 1 else None, vmax=1 if image.shape[-1] == 1 else None)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(name, fontsize=8)
    g = report["geodesic"]
    level = f"σ = {report['sigma']}" if report.get("timestep") is None else f"t = {report['timestep']}"
    fig.suptitle(f"λ = {report['lam']:g}, {level}: geodesic length {g['length']:.3g}"
                 + ("" if report["converged"] else " (NOT converged)")
                 + f", straight line {report['straight_line']['length']:.3g}", fontsize=9)
    return fig


def _geodesic_figure(model_dir, score, points, line, report) -> Figure:
    ends = torch.stack([points[0], points[-1]])
    data = _run_data(model_dir)
    cloud = torch.cat([ends, data.double()]) if data is not None else ends
    low, high = cloud.min(0).values, cloud.max(0).values
    pad = 0.15 * float((high - low).max()) + 0.5
    xlim, ylim = (float(low[0]) - pad, float(high[0]) + pad), (float(low[1]) - pad, float(high[1]) + pad)
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    contours = plotting.learned_log_density(ax, score, xlim, ylim, depth=10.0)
    fig.colorbar(contours, ax=ax, label="learned log p (least-squares potential of the score)")
    plotting.score_field(ax, score, xlim, ylim, n=18, color="0.35", alpha=0.6)
    g, s = report["geodesic"], report["straight_line"]
    plotting.geodesics(ax, line, color="0.1", linestyle="--",
                       label=f"straight line: length {s['length']:.3g}, min Δlog p {s['log_density_change_min']:.2f}")
    plotting.geodesics(ax, points, color="C3", linewidth=2,
                       label=f"geodesic: length {g['length']:.3g}, min Δlog p {g['log_density_change_min']:.2f}"
                       + ("" if report["converged"] else " (NOT converged)"))
    ax.plot(*ends.T.numpy(), "ko", markersize=4)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.set_title(f"score metric αI + λ s sᵀ, λ = {report['lam']:g}, σ = {report['sigma']}")
    ax.legend(loc="lower left", fontsize=8)
    return fig


# ----------------------------------------------------------------------------- distances
def distances_under_model(
    model_dir: str | Path,
    out: str | Path,
    indices: str | None = None,
    points: str | Path | None = None,
    sigma: float | None = None,
    lam: float = 10.0,
    alpha: float = 1.0,
    batch_size: int = 64,
    progress: bool = True,
    timestep: int | None = None,
    blocks: str | Path | None = None,
) -> dict[str, Any]:
    """Geodesic distance matrix of g = αI + λ s sᵀ (learned score at σ) between data rows or a .npy file's points.

    ``model_dir``: a scoregeo run (``sigma``) or a diffusers pipeline directory (``timestep``).

    ``indices``: "A:B" or "I,J,…" rows of the run's training data; ``points``: a
    .npy (n, d) array. Writes the (n, n) matrix to ``out`` (.npy, atomically).
    ``blocks``: a directory for the finished blocks of pairs, so that a rerun
    resumes (``pairwise_distances(out_dir=...)``); under ``torchrun`` with
    several processes the blocks are shared out over the ranks, and ``blocks``
    defaults to ``<out>.blocks``. Rank 0 writes the matrix.
    """
    score, data, _ = _score_source(model_dir, sigma, timestep)
    if points is not None:
        X = _end_point_array(points, score.dim)
    else:
        if data is None:
            raise ValueError("--indices needs the run's training data (run.json of 'scoregeo train')")
        X = data.reshape(data.shape[0], -1)[_parse_indices(indices, data.shape[0])].double()
    if X.shape[0] < 2:
        raise ValueError(f"need at least 2 points, got {X.shape[0]}")
    metric = ScoreMetric(score, lam=lam, alpha=alpha)
    distributed = launched()
    if distributed and blocks is None:
        blocks = f"{out}.blocks"
    start = time.perf_counter()
    D = pairwise_distances(metric, X, batch_size=batch_size, progress=progress, out_dir=blocks,
                           distributed=distributed, key=_model_key(model_dir, sigma, timestep))
    seconds = time.perf_counter() - start
    if is_main_process():
        atomic_write(out, lambda fh: np.save(fh, D.numpy()), binary=True)
    n = X.shape[0]
    return {"model": str(model_dir), "n": n, "pairs": n * (n - 1) // 2, "seconds": seconds, "files": [str(out)]}


def _model_key(model_dir: str | Path, sigma: float | None, timestep: int | None) -> str:
    """What identifies the score of a model directory for block files: its JSON files (a scoregeo run's
    config.json holds the SHA-256 of its weights), σ and the timestep."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).rglob("*.json")):
        digest.update(str(path.relative_to(model_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{digest.hexdigest()} sigma={sigma} timestep={timestep}"


def _parse_indices(text: str, count: int) -> list[int]:
    """"A:B" (Python slice) or "I,J,…" into row numbers in [0, count)."""
    try:
        if ":" in text:
            low, _, high = text.partition(":")
            rows = list(range(count))[slice(int(low) if low else None, int(high) if high else None)]
        else:
            rows = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--indices must be A:B or I,J,…, got {text!r}") from None
    bad = [i for i in rows if not 0 <= i < count]
    if bad or not rows:
        raise ValueError(f"--indices must select rows in [0, {count}), got {text!r}")
    return rows


def _load_npy(spec: str | Path, option: str) -> torch.Tensor:
    """The float64 array of an existing .npy file named by the CLI option ``option`` (no pickles)."""
    path = Path(spec)
    if path.suffix != ".npy" or not path.is_file():
        raise ValueError(f"{option} must be an existing .npy file, got {str(spec)!r}")
    try:
        return torch.from_numpy(np.load(path, allow_pickle=False)).double()
    except (ValueError, OSError) as err:
        raise ValueError(f"{option} {str(spec)!r}: not a readable .npy array ({err})") from None


def _end_point_array(spec: str | Path, dim: int) -> torch.Tensor:
    """The (n, dim) points of the --points file (images flattened)."""
    array = _load_npy(spec, "--points")
    array = array.reshape(array.shape[0], -1) if array.ndim >= 2 else array
    if array.ndim != 2 or array.shape[1] != dim or not bool(torch.isfinite(array).all()):
        raise ValueError(f"--points must hold a finite (n, {dim}) array, got shape {tuple(array.shape)}")
    return array
