"""Training data for score models: 2-D toys, scikit-learn's 8×8 digits, and the user's own files.

Data come as CPU tensors of shape (N, d), one point per row, in the requested
dtype (torch.float32 or torch.float64); only ``digits(flatten=False)`` differs,
with images of shape (N, 1, 8, 8).

Toy distributions (``make(name, n, generator)``), all in the plane and lying
roughly in [-4, 4]². Every random number is drawn from ``generator`` with torch
ops, so the same generator state gives the same tensor. Class memberships
(which moon, ring, arm, ...) come from a random permutation, so classes have
equal sizes (±1) and appear in random order. ε ~ N(0, I₂) below; u ~ U[0, 1).

==============  ==============================================================  ==========
name            construction                                                    noise
==============  ==============================================================  ==========
moons           sklearn's two moons, ×2 and centred: s·(2 cos t − 1,           σ = 0.2
                2 sin t − 0.5) + σε, t = πu, s = +1 (upper moon) or −1 (lower);
                class means (∓1, ±(4/π − 0.5))
circles         two concentric circles of radii 3 and 1.5 (sklearn's            σ = 0.24
                factor 0.5, ×3), uniform angle, + σε
rings           four concentric circles of radii 0.75, 1.5, 2.25, 3,            σ = 0.08
                uniform angle, + σε
swiss_roll      2-D swiss roll (t cos t, t sin t)/5 + σε, t = 1.5π(1 + 2u)      σ = 0.2
8gaussians      N(μ_k, σ²I), k uniform on 0..7, μ_k = 2 (cos kπ/4, sin kπ/4)    σ = 0.25
                — exactly the law of ``toy_mixture("8gaussians")``
pinwheel        5 arms: (ρ, τ) = (1 + 0.3 ε₁, 0.1 ε₂) rotated by angle           (in ρ, τ)
                2πk/5 + 0.25 e^ρ, then ×2
checkerboard    uniform on the 8 "black" 2×2 squares of a 4×4 board on          none
                [-4, 4)², i.e. ⌊x/2⌋ + ⌊y/2⌋ even
2spirals        two opposite spirals s·(−t cos t, t sin t)/3 + σε,               σ = 0.1
                t = 3π√u, s = ±1
==============  ==============================================================  ==========

The shapes follow the FFJORD toy set (Grathwohl et al., 2019) and scikit-learn's
``make_moons`` / ``make_circles``; details (uniform instead of evenly spaced
angles, no uniform jitter on the spirals, centred moons, 8 Gaussians at radius 2)
are this module's own.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from ._checks import check_interval, check_positive_int
from .densities import GaussianMixture

_EIGHT_RADIUS = 2.0
_EIGHT_STD = 0.25
_DEFAULT_N = 10_000
_FORMATS = (".npy", ".csv", ".pt")


# ----------------------------------------------------------------------------- toys
# Each sampler maps (n, generator, dtype) to an (n, 2) tensor; see the table above.
def _uniform(n: int, g: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
    return torch.rand(n, generator=g, dtype=dtype)


def _noise(n: int, sigma: float, g: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
    return sigma * torch.randn(n, 2, generator=g, dtype=dtype)


def _classes(n: int, k: int, g: torch.Generator | None) -> torch.Tensor:
    """Labels 0..k−1 in random order with equal counts (±1)."""
    return torch.randperm(n, generator=g) % k


def _polar(radius: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    return torch.stack((radius * angle.cos(), radius * angle.sin()), dim=-1)


def _on_circles(radii: tuple[float, ...], sigma: float, n, g, dtype) -> torch.Tensor:
    radius = torch.tensor(radii, dtype=dtype)[_classes(n, len(radii), g)]
    return _polar(radius, 2 * math.pi * _uniform(n, g, dtype)) + _noise(n, sigma, g, dtype)


def _moons(n, g, dtype):
    sign = 1.0 - 2.0 * _classes(n, 2, g).to(dtype)
    t = math.pi * _uniform(n, g, dtype)
    moon = torch.stack((2 * t.cos() - 1, 2 * t.sin() - 0.5), dim=-1)
    return sign[:, None] * moon + _noise(n, 0.2, g, dtype)


def _circles(n, g, dtype):
    return _on_circles((3.0, 1.5), 0.24, n, g, dtype)


def _rings(n, g, dtype):
    return _on_circles((0.75, 1.5, 2.25, 3.0), 0.08, n, g, dtype)


def _swiss_roll(n, g, dtype):
    t = 1.5 * math.pi * (1 + 2 * _uniform(n, g, dtype))
    return _polar(t / 5, t) + _noise(n, 0.2, g, dtype)


def _eight_gaussians(n, g, dtype):
    return toy_mixture("8gaussians", dtype=dtype).sample(n, generator=g)


def _pinwheel(n, g, dtype):
    arm = _classes(n, 5, g).to(dtype)
    eps = torch.randn(n, 2, generator=g, dtype=dtype)
    rho, tau = 1 + 0.3 * eps[:, 0], 0.1 * eps[:, 1]
    angle = 2 * math.pi * arm / 5 + 0.25 * rho.exp()
    c, s = angle.cos(), angle.sin()
    return 2 * torch.stack((c * rho - s * tau, s * rho + c * tau), dim=-1)


def _checkerboard(n, g, dtype):
    # x, w uniform on [-2, 2) (exactly: 4u − 2 is exact for the dyadic u of torch.rand);
    # when the cell of (x, w) is white, w moves one cell up (cyclically), which is a
    # measure-preserving bijection onto the black cells of the same column.
    x = 4 * _uniform(n, g, dtype) - 2
    w = 4 * _uniform(n, g, dtype) - 2
    y = w + (x.floor() + w.floor()) % 2
    y = torch.where(y >= 2, y - 4, y)
    return 2 * torch.stack((x, y), dim=-1)


def _two_spirals(n, g, dtype):
    sign = 1.0 - 2.0 * _classes(n, 2, g).to(dtype)
    t = 3 * math.pi * _uniform(n, g, dtype).sqrt()
    spiral = torch.stack((-t * t.cos(), t * t.sin()), dim=-1) / 3
    return sign[:, None] * spiral + _noise(n, 0.1, g, dtype)


_SAMPLERS = {
    "moons": _moons,
    "circles": _circles,
    "rings": _rings,
    "swiss_roll": _swiss_roll,
    "8gaussians": _eight_gaussians,
    "pinwheel": _pinwheel,
    "checkerboard": _checkerboard,
    "2spirals": _two_spirals,
}
TOYS: tuple[str, ...] = tuple(_SAMPLERS)


def make(
    name: str, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Draw n points from the toy distribution ``name`` (one of ``TOYS``), shape (n, 2).

    Constructions and noise levels are tabulated in the module docstring. All
    randomness comes from ``generator`` (torch's global generator when None).
    """
    if name not in _SAMPLERS:
        raise ValueError(f"unknown toy dataset {name!r}; expected one of {', '.join(TOYS)}")
    check_positive_int(n, "n")
    _check_dtype(dtype)
    return _SAMPLERS[name](n, generator, dtype)


def toy_mixture(name: str = "8gaussians", dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """The exact law of ``make(name, ...)`` as an ``sg.GaussianMixture`` (analytic score).

    Only "8gaussians" is a Gaussian mixture: 8 equally weighted components
    N(2 (cos kπ/4, sin kπ/4), 0.25² I), k = 0..7; ``make("8gaussians", ...)``
    samples from this very object.
    """
    if name != "8gaussians":
        raise ValueError(f"toy_mixture: only '8gaussians' is a Gaussian mixture, got {name!r}")
    _check_dtype(dtype)
    angles = torch.arange(8, dtype=dtype) * (math.pi / 4)
    means = _polar(torch.full_like(angles, _EIGHT_RADIUS), angles)
    return GaussianMixture(means, _EIGHT_STD**2 * torch.eye(2, dtype=dtype))


# ----------------------------------------------------------------------------- digits
def digits(
    dtype: torch.dtype = torch.float32,
    flatten: bool = True,
    value_range: tuple[float, float] = (-1.0, 1.0),
    return_labels: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8×8 handwritten digits (1797 images, no download).

    Pixel values v ∈ {0, ..., 16} map linearly to value_range = (lo, hi) as
    lo·(1 − v/16) + hi·v/16, so 0 ↦ lo and 16 ↦ hi exactly.

    Returns:
        images of shape (1797, 64) when ``flatten`` (row-major pixels), else
        (1797, 1, 8, 8); with ``return_labels``, the pair (images, labels) where
        labels is an int64 tensor (1797,) of digits 0..9.
    """
    _check_dtype(dtype)
    lo, hi = check_interval(value_range, "value_range")
    pixels, labels = _load_digits()
    s = torch.tensor(pixels, dtype=torch.float64) / 16
    images = (lo * (1 - s) + hi * s).to(dtype)
    if not flatten:
        images = images.reshape(-1, 1, 8, 8)
    if return_labels:
        return images, torch.tensor(labels, dtype=torch.int64)
    return images


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's raw digits (pixels 0..16, labels), read once; sklearn is imported only here."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data, bunch.target


# ----------------------------------------------------------------------------- files
def load(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Read a data matrix (N, d), N >= 1, d >= 1, one point per row, from a file.

    Formats, by extension:
      * ``.npy``: a 2-D numeric array saved by ``numpy.save`` (no pickled objects);
      * ``.csv``: comma-separated numbers, one row per point; a first row made only
        of non-numeric fields (column names) is skipped as a header;
      * ``.pt``: a 2-D real tensor saved by ``torch.save`` (read with ``weights_only=True``).

    A 1-D array is rejected rather than guessed as (N, 1) or (1, d). Raises
    ``FileNotFoundError`` for a missing file and ``ValueError`` naming the path for
    anything else: unsupported extension, unreadable or corrupt file, non-numeric
    content, wrong shape, rows holding NaN or Inf (after conversion to ``dtype``).
    """
    _check_dtype(dtype)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"data file {str(p)!r} does not exist")
    if not p.is_file():
        raise ValueError(f"{str(p)!r} is not a file; expected a {'/'.join(_FORMATS)} data file")
    suffix = p.suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(f"{str(p)!r}: unsupported extension {p.suffix!r}; supported: {', '.join(_FORMATS)}")
    reader = {".npy": _read_npy, ".csv": _read_csv, ".pt": _read_pt}[suffix]
    return _as_data_matrix(reader(p), p, dtype)


def _read_npy(p: Path) -> torch.Tensor:
    try:
        with open(p, "rb") as f:
            array = np.lib.format.read_array(f, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{str(p)!r}: not a readable .npy array file ({_first_line(err)})") from err
    return _from_numpy(array, p)


def _read_csv(p: Path) -> torch.Tensor:
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()  # -sig: drop a byte-order mark
    except UnicodeDecodeError as err:
        raise ValueError(f"{str(p)!r}: not a text .csv file ({err.reason} at byte {err.start})") from err
    if lines and not any(_is_number(field) for field in lines[0].split(",")):
        lines = lines[1:]  # header of column names
    if not any(line.strip() for line in lines):
        raise ValueError(f"{str(p)!r}: no data rows; expected rows of comma-separated numbers")
    try:
        array = np.loadtxt(lines, delimiter=",", ndmin=2, comments=None, dtype=np.float64)
    except ValueError as err:
        raise ValueError(
            f"{str(p)!r}: expected rows of comma-separated numbers with the same number of columns "
            f"(after an optional header row of names); {_first_line(err)}"
        ) from err
    return _from_numpy(array, p)


def _read_pt(p: Path) -> torch.Tensor:
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise ValueError(f"{str(p)!r}: not a readable torch.save file ({_first_line(err)})") from err
    if not isinstance(obj, torch.Tensor):
        raise ValueError(
            f"{str(p)!r}: holds a {type(obj).__name__}; expected a tensor of shape (N, d) saved with torch.save"
        )
    if obj.dtype.is_complex or obj.dtype == torch.bool:
        raise ValueError(f"{str(p)!r}: non-numeric tensor of dtype {obj.dtype}; expected real (int or float) values")
    return obj.detach()


def _from_numpy(array: np.ndarray, p: Path) -> torch.Tensor:
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{str(p)!r}: non-numeric content of dtype {array.dtype}; expected real (int or float) values")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))


def _as_data_matrix(x: torch.Tensor, p: Path, dtype: torch.dtype) -> torch.Tensor:
    """Check the shape (N, d), N >= 1, d >= 1, cast to dtype, and reject rows with NaN or Inf."""
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        hint = " (reshape a single feature to (N, 1) or a single point to (1, d))" if x.ndim == 1 else ""
        raise ValueError(
            f"{str(p)!r}: expected a 2-D array of shape (N, d) with N >= 1 and d >= 1, got shape {tuple(x.shape)}{hint}"
        )
    x = x.to(dtype)
    bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten()
    if bad.numel():
        raise ValueError(
            f"{str(p)!r}: {bad.numel()} of {x.shape[0]} rows contain NaN or Inf as {dtype} "
            f"(first at row {int(bad[0])}, counting data rows from 0); remove or impute them"
        )
    return x


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__


# ----------------------------------------------------------------------------- entry point
def get(
    spec: str | os.PathLike,
    n: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Data named by ``spec``: a toy name, "digits", or a path to a .npy/.csv/.pt file.

    A toy gives ``make(spec, n, generator, dtype)`` with n = 10000 when None;
    "digits" gives ``digits(dtype)`` (1797, 64) in [-1, 1]; a path gives
    ``load(spec, dtype)``. ``n`` applies to toys only (a ValueError otherwise);
    ``generator`` is unused by the deterministic sources.
    """
    if isinstance(spec, str) and spec in TOYS:
        return make(spec, _DEFAULT_N if n is None else n, generator, dtype)
    if n is not None:
        raise ValueError(f"n applies only to the toy datasets ({', '.join(TOYS)}); got n={n!r} for {str(spec)!r}")
    if spec == "digits":
        return digits(dtype)
    if not Path(spec).exists():
        raise ValueError(
            f"unknown dataset {str(spec)!r}: not a toy ({', '.join(TOYS)}), not 'digits', "
            f"and no file exists at that path (supported files: {', '.join(_FORMATS)})"
        )
    return load(spec, dtype)


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
