"""The ``scoregeo`` command line.

    scoregeo demo [--out DIR] [--no-progress] [--threads N]

Each subcommand is a small :class:`Command` (its arguments and a ``run``
function returning the exit code) registered in ``COMMANDS``; the work lives in
library modules (``scoregeo.demo``, ...), imported only when the command runs so
that ``scoregeo --help`` stays fast.

Exit codes: 0 success; 1 the command ran but its result is not trustworthy
(for ``demo``: some path did not converge; the files are written anyway and the
JSON says which) or it could not write its output; 2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from . import __version__


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

COMMANDS: tuple[Command, ...] = (DEMO,)


# ----------------------------------------------------------------------------- main
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


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
