"""The ``scoregeo`` command line.

    scoregeo demo [--out DIR] [--no-progress] [--threads N]
    scoregeo train --data moons --method dsm --out runs/moons [--steps N ...]
    scoregeo sample --model runs/moons [--n N] [--sampler annealed|pc|ode|langevin]
    scoregeo geodesic --model runs/moons --sigma 0.1 --from X,Y --to X,Y [--lam 10] [--plot path.png]
    scoregeo distances --model runs/digits --sigma 0.3 --indices 0:50 --out distances.npy

Each subcommand is a small :class:`Command` (its arguments and a ``run``
function returning the exit code) registered in ``COMMANDS``; the work lives in
library modules (``scoregeo.demo``, ...), imported only when the command runs so
that ``scoregeo --help`` stays fast.

Exit codes: 0 success; 1 the command ran but its result is not trustworthy
(``demo``/``geodesic``: some path did not converge; ``sample``: some samples
are NaN/Inf; the files are written anyway and say so) or it could not write its
output; 2 usage error (bad options, unreadable data or model files).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from . import __version__
from ._distributed import is_main_process


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ----------------------------------------------------------------------------- demo
def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo-out", metavar="DIR", help="output directory (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        metavar="N",
        help="torch intra-op CPU threads (default: %(default)s; the demo's tensors are tiny, and more threads "
        "only add synchronisation overhead)",
    )


def _demo_run(args: argparse.Namespace) -> int:
    from .demo import format_table, run

    try:
        report = run(args.out, progress=not args.no_progress, threads=args.threads)
    except OSError as err:
        print(f"scoregeo demo: error: cannot write to {args.out!r}: {err}", file=sys.stderr)
        return 1
    print(format_table(report))
    print(f"\nwrote {args.out}/demo.png and {args.out}/demo.json in {report['seconds']:.1f} s")
    if not report["all_converged"]:
        print(
            "scoregeo demo: warning: some paths did not converge (drawn anyway, marked in demo.json): "
            + "; ".join(report["not_converged"]),
            file=sys.stderr,
        )
        return 1
    return 0


DEMO = Command(
    name="demo",
    help="geodesics of the score metric on 2-D densities: demo.png and demo.json",
    description=(
        "Shot and boundary-value geodesics of g(x) = αI + λ s(x)s(x)ᵀ (α = 1, λ ∈ {0, 1, 10, 100}) and the "
        "metric's unit balls, on a 2-D Gaussian and a two-component Gaussian mixture. Writes DIR/demo.png and "
        "DIR/demo.json (lengths, convergence, number of local geodesics, speed drift of every path) and prints "
        "a table. Exit status 0 if every path converged, 1 otherwise (files are still written)."
    ),
    add_arguments=_demo_arguments,
    run=_demo_run,
)

# ----------------------------------------------------------------------------- learned scores
def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                        help="torch intra-op CPU threads (default: torch's own choice)")


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    from .scores.noise import METHODS

    parser.add_argument("--data", required=True, metavar="SPEC",
                        help="a 2-D toy (moons, circles, rings, swiss_roll, 8gaussians, pinwheel, checkerboard, "
                        "2spirals), 'digits', or a .npy/.csv/.pt file holding an (N, d) array")
    parser.add_argument("--method", default="dsm", choices=METHODS, help="score-matching objective (default: dsm)")
    parser.add_argument("--out", required=True, metavar="DIR", help="run directory (model, checkpoints, loss.png)")
    parser.add_argument("--n", "--n-data", dest="n", type=_positive_int, default=None,
                        help="number of toy points (default: 10000; under torchrun spell it --n-data, since torchrun "
                        "reads --n as an abbreviation of its own options)")
    parser.add_argument("--steps", type=_positive_int, default=5000, help="optimisation steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=_positive_int, default=256, help="minibatch size (default: %(default)s)")
    parser.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam step size (default: %(default)s)")
    parser.add_argument("--sigma-min", type=_positive_float, default=None, help="smallest noise level")
    parser.add_argument("--sigma-max", type=_positive_float, default=None,
                        help="largest noise level (default: the largest pairwise distance of the data)")
    parser.add_argument("--checkpoint-every", type=_positive_int, default=1000, metavar="N",
                        help="steps between checkpoints (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue the run stored in --out")
    _common_arguments(parser)


def _train_run(args: argparse.Namespace) -> int:
    from .workflows import train

    def work():
        return train(args.data, args.out, args.method, n=args.n, seed=args.seed, progress=not args.no_progress,
                     steps=args.steps, batch_size=args.batch_size, lr=args.lr, sigma_min=args.sigma_min,
                     sigma_max=args.sigma_max, checkpoint_every=args.checkpoint_every, resume=args.resume)

    report = _guarded("train", args, work)
    if isinstance(report, int) or not is_main_process():  # under torchrun, rank 0 reports
        return report if isinstance(report, int) else 0
    print(f"trained {report['method']} on {report['data']} ({report['n_data']} points): {report['steps']} steps "
          f"in {report['seconds']:.1f} s, final loss {report['final_loss']:.4g}")
    print(f"wrote {args.out}/ (config.json, model.safetensors, train_state.safetensors, run.json, loss.png)")
    return 0


TRAIN = Command(
    name="train",
    help="learn a score model from data by score matching",
    description=(
        "Train a noise-conditional score network (MLP for vectors, U-Net for images) by score matching. Writes "
        "the model (config.json + model.safetensors), a resumable checkpoint, run.json and loss.png into --out."
    ),
    add_arguments=_train_arguments,
    run=_train_run,
)


def _sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="a run directory written by 'scoregeo train'")
    parser.add_argument("--n", type=_positive_int, default=2000, help="number of samples (default: %(default)s)")
    parser.add_argument("--sampler", choices=("annealed", "pc", "ode", "langevin"), default=None,
                        help="default: annealed Langevin for dsm/ncsn, predictor-corrector for ve/vp, "
                        "Langevin for noise-free models")
    parser.add_argument("--out", default=None, metavar="DIR", help="where samples.npy/.png go (default: --model)")
    _common_arguments(parser)


def _sample_run(args: argparse.Namespace) -> int:
    from .workflows import sample

    report = _guarded("sample", args, lambda: sample(args.model, args.n, args.sampler, args.seed, args.out,
                                                      progress=not args.no_progress))
    if isinstance(report, int):
        return report
    quality = f", sliced W2 to the data {report['sliced_w2_to_data']:.3f}" if "sliced_w2_to_data" in report else ""
    print(f"{report['n']} samples by {report['sampler']}: {report['score_evals']} score evaluations in "
          f"{report['seconds']:.1f} s{quality}")
    print("wrote " + ", ".join(report["files"]))
    if report["n_nonfinite"]:
        print(f"scoregeo sample: warning: {report['n_nonfinite']} samples are NaN or Inf", file=sys.stderr)
        return 1
    return 0


SAMPLE = Command(
    name="sample",
    help="draw samples from a trained score model",
    description="Sample a model trained by 'scoregeo train'; writes samples.npy and samples.png (over the data).",
    add_arguments=_sample_arguments,
    run=_sample_run,
)


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="a run directory written by 'scoregeo train', or a diffusers pipeline directory")
    parser.add_argument("--sigma", type=_positive_float, default=None,
                        help="noise level of the learned score s(x, σ) (scoregeo noise-conditional models)")
    parser.add_argument("--timestep", type=_nonnegative_int, default=None,
                        help="training timestep of a diffusers model's score")


def _geodesic_arguments(parser: argparse.ArgumentParser) -> None:
    _model_arguments(parser)
    for end, what in (("from", "start"), ("to", "end")):
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument(f"--{end}", dest=f"{what}_point", type=_point, metavar="X,Y,…",
                           help=f"{what} point as coordinates (write --{end}=-1,0.5 when the first is negative)")
        group.add_argument(f"--{end}-index", dest=f"{what}_index", type=_nonnegative_int, metavar="I",
                           help=f"{what} point: row I of the run's training data")
        group.add_argument(f"--{end}-file", dest=f"{what}_file", metavar="NPY", help=f"{what} point: a .npy file")
    parser.add_argument("--lam", type=_nonnegative_float, default=10.0, help="λ of g = αI + λ s sᵀ (default: 10)")
    parser.add_argument("--alpha", type=_positive_float, default=1.0, help="α of g = αI + λ s sᵀ (default: 1)")
    parser.add_argument("--n-points", type=_positive_int, default=64, help="samples along the path (default: 64)")
    parser.add_argument("--plot", default=None, metavar="PNG",
                        help="2-D models: the geodesic over the learned density; image data: an image strip "
                        "(straight line, SLERP, geodesic)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")
    _common_arguments(parser)


def _geodesic_run(args: argparse.Namespace) -> int:
    import json

    from ._io import atomic_write
    from .workflows import geodesic_under_model

    def end(what: str):
        for kind in ("point", "index", "file"):
            value = getattr(args, f"{what}_{kind}")
            if value is not None:
                return value

    def work():
        if args.plot is not None and not args.plot.endswith(".png"):
            raise ValueError(f"--plot must name a .png file, got {args.plot!r}")
        report = geodesic_under_model(args.model, end("start"), end("end"), sigma=args.sigma, lam=args.lam,
                                      alpha=args.alpha, n_points=args.n_points, plot=args.plot,
                                      progress=not args.no_progress, timestep=args.timestep)
        if args.json:
            atomic_write(args.json, lambda fh: json.dump(report, fh, indent=2), binary=False)
        return report

    report = _guarded("geodesic", args, work)
    if isinstance(report, int):
        return report
    print(f"{'':16} {'length':>10} {'euclidean':>10} {'min Δlog p':>11} {'Δlog p end':>11}")
    for name in ("geodesic", "straight_line"):
        r = report[name]
        print(f"{name:16} {r['length']:10.4f} {r['euclidean_length']:10.4f} {r['log_density_change_min']:11.3f} "
              f"{r['log_density_change_end']:11.3f}")
    print(f"converged: {report['converged']} (residual {report['residual']:.1e}), local geodesics found: "
          f"{report['n_local']}, {report['seconds']:.1f} s")
    if report.get("files"):
        print("wrote " + ", ".join(report["files"]))
    if not report["converged"]:
        print("scoregeo geodesic: warning: the boundary-value solver did not converge", file=sys.stderr)
        return 1
    return 0


GEODESIC = Command(
    name="geodesic",
    help="a geodesic of the learned score metric between two points",
    description=(
        "Boundary-value geodesic of g(x) = αI + λ s(x, σ) s(x, σ)ᵀ with a learned score, beside the straight line; "
        "prints lengths and the learned log-density change along both; --plot draws them over the learned density "
        "and score field. Exit status 1 if the solver did not converge."
    ),
    add_arguments=_geodesic_arguments,
    run=_geodesic_run,
)


def _distances_arguments(parser: argparse.ArgumentParser) -> None:
    _model_arguments(parser)
    points = parser.add_mutually_exclusive_group(required=True)
    points.add_argument("--indices", metavar="A:B|I,J,…", help="rows of the run's training data, e.g. 0:50 or 3,7,9")
    points.add_argument("--points", metavar="NPY", help="a .npy file holding an (n, d) array of points")
    parser.add_argument("--out", required=True, metavar="NPY", help="where to write the (n, n) distance matrix")
    parser.add_argument("--lam", type=_nonnegative_float, default=10.0, help="λ of g = αI + λ s sᵀ (default: 10)")
    parser.add_argument("--alpha", type=_positive_float, default=1.0, help="α of g = αI + λ s sᵀ (default: 1)")
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="pairs per solve (default: 64)")
    parser.add_argument("--blocks", metavar="DIR", default=None,
                        help="keep every finished block of --batch-size pairs in DIR, so that a rerun resumes "
                        "(default under torchrun: <out>.blocks, shared out over the ranks)")
    _common_arguments(parser)


def _distances_run(args: argparse.Namespace) -> int:
    from .workflows import distances_under_model

    def work():
        if not args.out.endswith(".npy"):
            raise ValueError(f"--out must name a .npy file, got {args.out!r}")
        return distances_under_model(args.model, args.out, indices=args.indices, points=args.points,
                                     sigma=args.sigma, lam=args.lam, alpha=args.alpha, batch_size=args.batch_size,
                                     progress=not args.no_progress, timestep=args.timestep, blocks=args.blocks)

    report = _guarded("distances", args, work)
    if isinstance(report, int) or not is_main_process():  # under torchrun, rank 0 reports
        return report if isinstance(report, int) else 0
    print(f"{report['n']}×{report['n']} distances ({report['pairs']} pairs) in {report['seconds']:.1f} s; "
          f"wrote {report['files'][0]}")
    return 0


DISTANCES = Command(
    name="distances",
    help="a matrix of geodesic distances between data points under a learned score metric",
    description=("Geodesic distances of g(x) = αI + λ s(x, σ) s(x, σ)ᵀ between rows of the run's training data "
                 "(--indices) or of a .npy file (--points); writes the symmetric (n, n) matrix as .npy. Solver "
                 "warnings name the pairs that did not converge."),
    add_arguments=_distances_arguments,
    run=_distances_run,
)


def _guarded(name: str, args: argparse.Namespace, work: Callable[[], dict]) -> dict | int:
    """Run ``work`` with the requested threads; turn input errors into exit code 2 and write errors into 1."""
    import torch

    from .scores.checkpoint import CheckpointError

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return work()
    except KeyboardInterrupt:
        print(f"\nscoregeo {name}: interrupted" + _resume_hint(name, args), file=sys.stderr)
        return 130
    except (ValueError, CheckpointError, FileNotFoundError) as err:
        print(f"scoregeo {name}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"scoregeo {name}: error: cannot write output: {err}", file=sys.stderr)
        return 1


def _resume_hint(name: str, args: argparse.Namespace) -> str:
    """For an interrupted ``train``: where the last checkpoint is and the command that continues the run."""
    if name != "train":
        return ""
    from pathlib import Path

    from .scores.checkpoint import STATE_FILE

    if not (Path(args.out) / STATE_FILE).is_file():
        return f" before the first checkpoint (every {args.checkpoint_every} steps): nothing was saved in {args.out}"
    command = " ".join(a for a in sys.argv[1:] if a != "--resume")
    return (f"; the last checkpoint (saved every {args.checkpoint_every} steps) is in {args.out}. "
            f"Continue the run with:\n  scoregeo {command} --resume")


COMMANDS: tuple[Command, ...] = (DEMO, TRAIN, SAMPLE, GEODESIC, DISTANCES)


# ----------------------------------------------------------------------------- main
def _number(kind: type, lowest: float, inclusive: bool, expected: str) -> Callable[[str], float]:
    """An argparse type: a finite ``kind`` (int or float) above ``lowest`` (or equal to it, if ``inclusive``)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not math.isfinite(value) or not (value >= lowest if inclusive else value > lowest):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, 1, True, "a positive integer")
_positive_float = _number(float, 0.0, False, "a positive number")
_nonnegative_float = _number(float, 0.0, True, "a number >= 0")
_nonnegative_int = _number(int, 0, True, "an integer >= 0")


def _point(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated coordinates like 1.5,-0.2, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"coordinates must be finite, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scoregeo",
        description="Riemannian geometry of data and of models from the Stein score and the Fisher score.",
        epilog="Run 'scoregeo COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.description)
        command.add_arguments(p)
        p.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scoregeo`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    return args._run(args)


if __name__ == "__main__":
    sys.exit(main())
