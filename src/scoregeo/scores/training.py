"""``train_score``: learn a score model from data by score matching, with EMA, checkpoints and resume."""

from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from .. import _distributed
from .._checks import check_positive_int
from .checkpoint import CONFIG_FILE, STATE_FILE, CheckpointError, load_state_into, read_config, read_tensors, write_tensors
from .model import ScoreModel
from .noise import METHODS, NOISE_FREE_METHODS, noise_model
from .networks import NoiseConditionalMLP, UNet, network_config
from .objectives import (
    denoising_score_matching,
    exact_score_matching,
    geometric_sigmas,
    ncsn_loss,
    sde_loss,
    sigma_max_from_data,
    sliced_score_matching,
)
from .parameterization import output_to_score

Loss = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def train_score(
    data: torch.Tensor,
    method: str = "dsm",
    *,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    ema_decay: float = 0.999,
    seed: int = 0,
    network: nn.Module | None = None,
    parameterization: str | None = None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    n_sigmas: int = 10,
    beta_min: float = 0.1,
    beta_max: float = 20.0,
    n_projections: int = 1,
    grad_clip: float | None = 1.0,
    out: str | Path | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[int, float, ScoreModel], None] | None = None,
    distributed: bool | None = None,
) -> ScoreModel:
    """Train a score model on ``data`` and return it as a ``ScoreModel`` (with the EMA weights).

    Args:
        data: (N, d) vectors or (N, C, H, W) images, float32 or float64 (the
            network is trained in that dtype). Nothing is rescaled: the score is
            learned in the data's own units, as ``sg.ScoreMetric`` needs it.
        method: "exact" (Hyvärinen), "sliced", "sliced_vr" (clean data);
            "dsm" (σ log-uniform in [sigma_min, sigma_max] per example), "ncsn"
            (``n_sigmas`` geometric levels), "ve", "vp" (continuous-time SDEs).
            See ``ScoreModel`` and ``scores.objectives``.
        steps: total optimisation steps (with ``resume``, the run continues up to it).
        batch_size, lr: minibatch size (drawn with replacement) and Adam step size.
        ema_decay: decay of the exponential moving average of the weights, reached
            after a warm-up (min(ema_decay, (1 + n)/(10 + n)) after n steps); the
            returned and saved model uses the EMA weights.
        seed: seeds the network initialisation and the one ``torch.Generator``
            behind all minibatches and noise, so a run is reproducible and a
            resumed run continues exactly as an uninterrupted one.
        network: a module f(x, σ) (default: ``NoiseConditionalMLP`` for vectors,
            ``UNet`` for images). With ``out``, a custom module's class must be
            registered (``scores.register_network``) so that checkpoints can
            describe it; this is checked before the first step.
        parameterization: "score", "epsilon" or "scaled" (default "scaled",
            NCSNv2's s = f/σ, for noise-conditional methods; "score" otherwise).
        sigma_min, sigma_max: noise range of dsm/ncsn/ve; sigma_max defaults to
            the largest pairwise distance of the data (NCSNv2), sigma_min to
            sigma_max / 100.
        n_sigmas: number of NCSN levels. beta_min, beta_max: VP SDE schedule.
        n_projections: random projections per example for sliced methods.
        grad_clip: clip the gradient norm to this value (None: no clipping).
        out: a directory for checkpoints (``ScoreModel.load``-able at every
            checkpoint); required for ``resume``.
        checkpoint_every: steps between checkpoints (and at the end).
        resume: continue from the checkpoint in ``out``; the data and every
            training setting must match the stored run, else ``ValueError``.
        progress: show a tqdm bar with the loss.
        callback: called as ``callback(step, loss, model)`` after every step, where
            ``model`` is a ``ScoreModel`` view of the current EMA weights (for
            monitoring; evaluate it under ``torch.no_grad()``); on every rank.
        distributed: train data-parallel over the processes of torch.distributed
            (None, the default: when launched by ``torchrun`` with more than one
            process). The network is wrapped in ``DistributedDataParallel``;
            each of the W ranks draws ``batch_size / W`` examples per step from
            its shard ``data[rank::W]`` with its own generator (rank 0's seeded
            by ``seed``, the others by a seed derived from it), so a step's
            gradient is that of ``batch_size`` examples. Weights, optimizer and
            EMA are identical on every rank; the loss history holds the
            global-batch loss; the progress bar and the checkpoints are rank
            0's. A checkpoint keeps every rank's generator: resumed with as many
            processes, a run continues exactly as an uninterrupted one; with
            another number, weights, optimizer, EMA and step are restored
            exactly but the minibatch and noise streams are new ones.

    Raises:
        ValueError for bad arguments or a mismatched resume; ``CheckpointError``
        for a corrupt checkpoint; FloatingPointError if the loss becomes NaN/Inf.
    """
    data = _check_data(data)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("checkpoint_every", checkpoint_every),
                        ("n_sigmas", n_sigmas), ("n_projections", n_projections)):
        check_positive_int(value, name)
    for name, value in (("lr", lr), ("beta_min", beta_min), ("beta_max", beta_max)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not (isinstance(ema_decay, (int, float)) and 0 <= ema_decay < 1):
        raise ValueError(f"ema_decay must be a number in [0, 1), got {ema_decay!r}")
    if grad_clip is not None and not (isinstance(grad_clip, (int, float)) and grad_clip > 0):
        raise ValueError(f"grad_clip must be None or a number > 0, got {grad_clip!r}")
    if resume and out is None:
        raise ValueError("resume=True needs out, the directory of the run to continue")
    parameterization = parameterization or ("score" if method in NOISE_FREE_METHODS else "scaled")
    if method in NOISE_FREE_METHODS and parameterization != "score":
        raise ValueError(f"method {method!r} trains an unconditional score: parameterization must be 'score', "
                         f"got {parameterization!r}")

    rank, world = _distributed.rank_and_world(distributed, data.device)
    if batch_size % world:
        raise ValueError(f"batch_size ({batch_size}) must be divisible by the number of processes ({world})")
    if data.shape[0] < world:
        raise ValueError(f"data has {data.shape[0]} rows, fewer than the {world} processes that share it")

    noise = _noise_params(method, data, sigma_min, sigma_max, n_sigmas, beta_min, beta_max)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = (network if network is not None else _default_network(data, method)).to(data.dtype).train()

    if out is not None:
        network_config(net)  # a custom network that checkpoints cannot describe fails now, not at the first save
    data_mean, data_std = data.mean(0), data.std(0)

    def as_model(module: nn.Module) -> ScoreModel:
        return ScoreModel(module, method, parameterization, noise, tuple(data.shape[1:]), data_mean, data_std)

    generator = torch.Generator(device=data.device).manual_seed(_rank_seed(seed, rank))
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    ema = AveragedModel(net, multi_avg_fn=_ema_with_warmup(ema_decay), use_buffers=True)
    training = dict(method=method, steps=steps, batch_size=batch_size, lr=lr, ema_decay=ema_decay, seed=seed,
                    n_projections=n_projections, grad_clip=grad_clip, data_sha256=_fingerprint(data),
                    n_data=data.shape[0])
    history: list[float] = []
    start = 0
    out = None if out is None else Path(out)
    if resume and out is not None and (out / STATE_FILE).is_file():
        start, history = _restore(out, as_model(ema.module).config(), net, ema, optimizer, generator, training,
                                  rank, world)
    elif not resume and out is not None and any((out / name).exists() for name in (STATE_FILE, CONFIG_FILE)):
        raise ValueError(f"{out} already holds a trained model or checkpoint: pass resume=True (CLI: --resume) "
                         "to continue that run, or choose another directory (nothing was overwritten)")
    elif resume:
        warnings.warn(f"resume=True but {out} holds no checkpoint: starting a new run", stacklevel=2)

    shard = data[rank::world]
    trained = net if world == 1 else DistributedDataParallel(
        net, device_ids=[data.device] if data.device.type == "cuda" else None)
    loss_fn = _loss(method, trained, parameterization, noise, n_projections)
    ema_view = as_model(ema.module)
    with tqdm(total=steps, initial=start, desc=f"train {method}", disable=not progress or rank != 0,
              unit="step") as bar:
        for step in range(start, steps):
            batch = shard[torch.randint(shard.shape[0], (batch_size // world,), generator=generator,
                                        device=data.device)]
            local = loss_fn(batch, generator)
            loss = local if world == 1 else _distributed.mean_over_ranks(local)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the {method} loss became {float(loss)} at step {step + 1}; lower lr "
                                         f"(now {lr}) or check the data for extreme values")
            optimizer.zero_grad(set_to_none=True)
            local.backward()  # DistributedDataParallel averages the gradients over the ranks
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
            optimizer.step()
            ema.update_parameters(net)
            history.append(loss.item())
            bar.update(1)
            if (step + 1) % 10 == 0 or step + 1 == steps:
                bar.set_postfix(loss=f"{sum(history[-10:]) / len(history[-10:]):.4g}")
            if callback is not None:
                callback(step + 1, history[-1], ema_view)
            if out is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
                states = [generator.get_state()] if world == 1 else _distributed.gather_objects(generator.get_state())
                if rank == 0:
                    _save(out, as_model(ema.module), net, ema, optimizer, states, training, history, step + 1)

    model = as_model(ema.module)
    model.loss_history = history
    return model


# ----------------------------------------------------------------------------- pieces
def _check_data(data: torch.Tensor) -> torch.Tensor:
    if not isinstance(data, torch.Tensor) or not data.is_floating_point():
        raise ValueError(f"data must be a floating-point tensor (N, d) or (N, C, H, W), got "
                         f"{type(data).__name__ if not isinstance(data, torch.Tensor) else data.dtype}")
    if data.ndim not in (2, 4) or data.shape[0] < 2:
        raise ValueError(f"data must have shape (N, d) or (N, C, H, W) with N >= 2, got {tuple(data.shape)}")
    bad = ~torch.isfinite(data.reshape(data.shape[0], -1)).all(1)
    if bool(bad.any()):
        raise ValueError(f"data has {int(bad.sum())} rows with NaN or Inf (first: row {int(bad.nonzero()[0])})")
    return data


def _default_network(data: torch.Tensor, method: str) -> nn.Module:
    conditional = method not in NOISE_FREE_METHODS
    if data.ndim == 2:
        return NoiseConditionalMLP(data.shape[1], conditional=conditional)
    if not conditional:
        raise ValueError(f"method {method!r} trains on clean data; for images use a noise-conditional method")
    return UNet(in_channels=data.shape[1])


def _noise_params(method, data, sigma_min, sigma_max, n_sigmas, beta_min, beta_max) -> dict[str, Any]:
    if method in NOISE_FREE_METHODS:
        if sigma_min is not None or sigma_max is not None:
            raise ValueError(f"sigma_min/sigma_max do not apply to method {method!r} (it trains on clean data)")
        return {}
    if method == "vp":
        if not beta_min < beta_max:
            raise ValueError(f"need beta_min < beta_max, got {beta_min} and {beta_max}")
        return {"beta_min": float(beta_min), "beta_max": float(beta_max)}
    high = float(sigma_max) if sigma_max is not None else float(sigma_max_from_data(data.reshape(data.shape[0], -1)))
    low = float(sigma_min) if sigma_min is not None else high / 100
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got sigma_min={low}, sigma_max={high}")
    if method in ("ncsn", "ve") and not low < high:
        raise ValueError(f"method {method!r} needs sigma_min < sigma_max, got {low} and {high}")
    if method == "ncsn":
        return {"sigmas": geometric_sigmas(low, high, n_sigmas).tolist()}
    return {"sigma_min": low, "sigma_max": high}


def _loss(method: str, net: nn.Module, parameterization: str, noise: dict, n_projections: int) -> Loss:
    """The minibatch loss of ``method`` as a function of (batch, generator)."""
    def conditional_score(x, sigma):
        return output_to_score(net(x, sigma), sigma, parameterization)

    def clean_score(x):
        return net(x, None)

    if method == "exact":
        return lambda x, gen: exact_score_matching(clean_score, x)
    if method in ("sliced", "sliced_vr"):
        vr = method == "sliced_vr"
        return lambda x, gen: sliced_score_matching(clean_score, x, n_projections, vr, gen)
    if method == "dsm":
        log_low, log_high = math.log(noise["sigma_min"]), math.log(noise["sigma_max"])

        def dsm(x, gen):
            u = torch.rand(x.shape[0], generator=gen, dtype=x.dtype, device=x.device)
            return denoising_score_matching(conditional_score, x, torch.exp(log_low + u * (log_high - log_low)), gen)

        return dsm
    if method == "ncsn":
        sigmas = torch.tensor(noise["sigmas"])
        return lambda x, gen: ncsn_loss(conditional_score, x, sigmas.to(x), gen)
    sde = noise_model(method, noise).sde
    return lambda x, gen: sde_loss(conditional_score, sde, x, gen)


def _ema_with_warmup(decay: float):
    """EMA update for ``AveragedModel`` whose decay after n updates is min(decay, (1 + n) / (10 + n)).

    A constant decay of 0.999 averages over the last ~1000 steps, so for runs of a
    few thousand steps the average is dominated by early, poor weights (measured:
    5x the Fisher divergence of the raw weights after 1500 steps). The warm-up
    (as in TensorFlow's ExponentialMovingAverage with num_updates) keeps the
    window at about a tenth of the run until it reaches 1 / (1 − decay).
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        for mean, value in zip(averaged, current):
            mean.lerp_(value, weight)

    return update


def _rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The generator seed of ``rank`` (``seed`` itself for rank 0 of a fresh run), from one run seed.

    ``step`` > 0 derives fresh streams for a run resumed with another number of processes.
    """
    if rank == 0 and step == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}/{rank}/{step}".encode()).digest()[:8], "little") >> 1


def _fingerprint(data: torch.Tensor) -> str:
    return hashlib.sha256(data.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


# ----------------------------------------------------------------------------- checkpoints
def _save(out, inference, net, ema, optimizer, generator_states, training, history, step) -> None:
    """Write train_state.safetensors, then ``inference`` (the EMA model: weights, then config.json).

    ``generator_states``: the minibatch generator's state of every rank, in rank order.
    """
    out.mkdir(parents=True, exist_ok=True)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    for index, slots in optimizer.state_dict()["state"].items():
        state.update({f"adam.{index}.{k}": torch.as_tensor(v) for k, v in slots.items()})
    state["rng"] = generator_states[0]
    state.update({f"rng.{rank}": value for rank, value in enumerate(generator_states) if rank > 0})
    state["loss_history"] = torch.tensor(history, dtype=torch.float64)
    state_sha = write_tensors(out / STATE_FILE, state)
    stored = {**training, "step": step, "world_size": len(generator_states)}
    inference.save(out, extra={"training": stored, "files": {STATE_FILE: state_sha}})


def _restore(out, model_config, net, ema, optimizer, generator, training, rank, world) -> tuple[int, list[float]]:
    """Load a checkpoint of the same run into the fresh objects; return (step, loss history).

    The generator gets this rank's stored state when the checkpoint was written
    by as many processes, else a fresh stream derived from the seed, rank and step.
    """
    config = read_config(out)
    stored = dict(config.get("training", {}))
    step = stored.pop("step", None)
    stored_world = stored.pop("world_size", 1)
    mismatched = {k: (stored.get(k), v) for k, v in training.items() if k != "steps" and stored.get(k) != v}
    mismatched.update({k: (config.get(k), model_config[k]) for k in ("network", "method", "parameterization", "noise",
                                                              "data_shape") if config.get(k) != model_config[k]})
    if mismatched:
        details = "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in mismatched.items())
        raise ValueError(f"cannot resume from {out}: the run differs from the checkpoint ({details})")
    state = read_tensors(out / STATE_FILE, config["files"].get(STATE_FILE))
    load_state_into(net, {k[4:]: v for k, v in state.items() if k.startswith("net.")}, out / STATE_FILE)
    load_state_into(ema, {k[4:]: v for k, v in state.items() if k.startswith("ema.")}, out / STATE_FILE)
    adam = optimizer.state_dict()
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith("adam."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value
    adam["state"] = slots
    if not isinstance(step, int) or step < 0 or len(state["loss_history"]) != step:
        raise CheckpointError(f"{out}: inconsistent step count in the checkpoint")
    try:
        optimizer.load_state_dict(adam)
        if stored_world == world:
            generator.set_state(state["rng" if rank == 0 else f"rng.{rank}"])
        else:
            generator.manual_seed(_rank_seed(training["seed"], rank, step))
            if rank == 0:
                warnings.warn(f"resuming {out} with {world} processes from a checkpoint of {stored_world}: weights, "
                              "optimizer, EMA and step are restored exactly, the minibatch and noise streams are new",
                              stacklevel=3)
    except (KeyError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{out / STATE_FILE}: optimizer or generator state does not fit ({err})") from None
    return step, state["loss_history"].tolist()
