"""Small shared timing helpers for the benchmarks: thread control, wall-clock timers, a machine header."""

from __future__ import annotations

import os
import platform
import time
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int):
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class Stopwatch:
    """Wall-clock timer: ``with Stopwatch() as sw: ...; sw.seconds``."""

    def __init__(self):
        self.seconds = float("nan")

    def __enter__(self) -> "Stopwatch":
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0


def machine_header() -> str:
    """One line: torch version, CPU count, current torch threads, load average, Python."""
    try:
        load = f"{os.getloadavg()[0]:.1f}"
    except OSError:
        load = "n/a"
    return (f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load}, "
            f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
