"""``scoregeo.datasets``: toy samplers, the 8-Gaussians mixture, digits, file loading, ``get``.

Oracles: the documented constructions (noiseless curves, radii, centres, board
cells) re-derived here independently of the module; population moments of the
mixture; scikit-learn's raw digits; arrays written with numpy / torch. Sample
sizes are chosen so that every statistical tolerance is >= 5 standard errors.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np
import pytest
import torch

from scoregeo import GaussianMixture, datasets

F64 = torch.float64


def sample(name: str, n: int = 4000, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    return datasets.make(name, n, torch.Generator().manual_seed(seed), dtype)


def curve_distance2(x: torch.Tensor, curve: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance of each point of x to a densely sampled curve, and the nearest curve index."""
    d, idx = zip(*(torch.cdist(chunk, curve).min(dim=1) for chunk in x.split(1000)))
    return torch.cat(d) ** 2, torch.cat(idx)


def polar(radius, angle) -> torch.Tensor:
    return torch.stack((radius * angle.cos(), radius * angle.sin()), dim=-1)


def assert_balanced(labels: torch.Tensor, k: int) -> None:
    """Each of k classes holds n/k points up to 5 binomial standard errors (a few may be misassigned)."""
    n = labels.numel()
    counts = torch.bincount(labels, minlength=k).to(F64)
    tol = 5 * math.sqrt(n * (1 / k) * (1 - 1 / k))
    assert counts.numel() == k and bool(((counts - n / k).abs() < tol).all()), counts


# ----------------------------------------------------------------------------- every toy
def test_toys_constant():
    expected = ("moons", "circles", "rings", "swiss_roll", "8gaussians", "pinwheel", "checkerboard", "2spirals")
    assert datasets.TOYS == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", datasets.TOYS)
def test_toy_shape_dtype_box_and_reproducibility(name, dtype):
    x = sample(name, 3000, seed=0, dtype=dtype)
    assert x.shape == (3000, 2) and x.dtype == dtype
    assert bool(torch.isfinite(x).all())
    # Roughly [-4, 4]²: no toy puts a point beyond 5 except with probability < 1e-6 per point
    # (pinwheel, the widest, needs a 5σ radial draw), and none is degenerate or far off-centre.
    assert float(x.abs().max()) <= 5.0
    assert bool((x.std(dim=0) > 0.8).all()) and bool((x.std(dim=0) < 3.0).all())
    assert float(x.mean(dim=0).norm()) < 0.6
    assert torch.equal(x, sample(name, 3000, seed=0, dtype=dtype))
    assert not torch.equal(x, sample(name, 3000, seed=1, dtype=dtype))


def test_global_generator_is_used_when_none():
    torch.manual_seed(123)
    a = datasets.make("moons", 50)
    torch.manual_seed(123)
    assert torch.equal(a, datasets.make("moons", 50))


@pytest.mark.parametrize("n", [0, -3, 2.5, True, None, "10"])
def test_bad_n(n):
    with pytest.raises(ValueError, match=r"^n must be an integer >= 1"):
        datasets.make("moons", n)


def test_unknown_toy_lists_names():
    with pytest.raises(ValueError, match=r"unknown toy dataset 'moon'.*moons, circles, rings.*2spirals"):
        datasets.make("moon", 10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.int64, "float32"])
def test_bad_dtype(dtype):
    with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64"):
        datasets.make("rings", 10, dtype=dtype)


# ----------------------------------------------------------------------------- shape-specific oracles
@pytest.mark.parametrize(
    ("name", "radii", "sigma"), [("circles", (1.5, 3.0), 0.24), ("rings", (0.75, 1.5, 2.25, 3.0), 0.08)]
)
def test_concentric_radii(name, radii, sigma):
    n = 20000
    r = sample(name, n).norm(dim=1)
    radii_t = torch.tensor(radii, dtype=F64)
    ring = (r[:, None] - radii_t).abs().argmin(dim=1)
    assert_balanced(ring, len(radii))
    for k, radius in enumerate(radii):
        resid = r[ring == k] - radius
        # |c + σε| − |c| ≈ σ ε_radial + σ² ε_tangential² / (2|c|): mean σ²/(2r), sd σ.
        se = sigma / math.sqrt(resid.numel())
        assert abs(float(resid.mean()) - sigma**2 / (2 * radius)) < 5 * se + 0.01 * sigma
        assert abs(float(resid.std()) / sigma - 1) < 0.06


def test_moons_classes_and_noise():
    n = 12000
    x = sample("moons", n)
    t = torch.linspace(0, math.pi, 400, dtype=F64)
    upper = torch.stack((2 * t.cos() - 1, 2 * t.sin() - 0.5), dim=-1)
    d2, idx = curve_distance2(x, torch.cat((upper, -upper)))
    is_lower = idx >= 400
    assert_balanced(is_lower.long(), 2)
    # Class means are those of the noiseless moons, (∓1, ±(4/π − 0.5)). Per class the coordinates
    # ∓(2 cos t − 1, 2 sin t − 0.5) + σε, t ~ U[0, π], have variances (2, 2 − 16/π²) + σ²: allow 5 se.
    expected = torch.tensor([-1.0, 4 / math.pi - 0.5], dtype=F64)
    tol = 5 * (torch.tensor([2.0, 2 - 16 / math.pi**2], dtype=F64) + 0.2**2).sqrt() / math.sqrt(n / 2)
    assert bool(((x[~is_lower].mean(0) - expected).abs() < tol).all())
    assert bool(((x[is_lower].mean(0) + expected).abs() < tol).all())
    # Squared distance to the curve ≈ σ² χ²₁ (normal component of the noise): mean σ², se √2σ²/√n ≈ 0.013σ².
    assert abs(float(d2.mean()) / 0.2**2 - 1) < 0.1


def test_swiss_roll_on_its_curve():
    x = sample("swiss_roll", 4000)
    t = torch.linspace(1.5 * math.pi, 4.5 * math.pi, 3000, dtype=F64)
    d2, idx = curve_distance2(x, polar(t / 5, t))
    assert abs(float(d2.mean()) / 0.2**2 - 1) < 0.15
    # t = 1.5π(1 + 2u): the nearest curve parameter is uniform on [1.5π, 4.5π] (mean 3π, sd 0.87π).
    assert abs(float(t[idx].mean()) / math.pi - 3) < 0.1


def test_two_spirals_on_their_curves():
    x = sample("2spirals", 4000)
    t = 3 * math.pi * torch.linspace(0, 1, 3000, dtype=F64)
    arm = torch.stack((-t * t.cos(), t * t.sin()), dim=-1) / 3
    d2, idx = curve_distance2(x, torch.cat((arm, -arm)))
    assert_balanced((idx >= 3000).long(), 2)
    assert abs(float(d2.mean()) / 0.1**2 - 1) < 0.15
    # t = 3π√u: (t/3π)² is uniform on [0, 1), mean 1/2 (sd 0.29, se 0.005).
    assert abs(float((t[idx % 3000] / (3 * math.pi)).pow(2).mean()) - 0.5) < 0.03


def test_eight_gaussians_clusters():
    n = 16000
    x = sample("8gaussians", n)
    centres = polar(torch.full((8,), 2.0, dtype=F64), torch.arange(8, dtype=F64) * math.pi / 4)
    k = torch.cdist(x, centres).argmin(dim=1)
    assert_balanced(k, 8)
    for j in range(8):
        xj = x[k == j]
        # Cluster means within 5 se (0.25/√2000 ≈ 0.006) plus the small pull of misassigned points.
        torch.testing.assert_close(xj.mean(0), centres[j], atol=0.03, rtol=0)
        assert bool(((xj.std(0) / 0.25 - 1).abs() < 0.08).all())


def test_pinwheel_arms():
    x = sample("pinwheel", 10000) / 2
    s = x.norm(dim=1)
    # ρ = 1 + 0.3ε₁ and |x|/2 = √(ρ² + τ²) ≈ ρ + τ²/(2ρ): mean ≈ 1.005, sd ≈ 0.3.
    assert abs(float(s.mean()) - 1.005) < 0.02 and abs(float(s.std()) / 0.3 - 1) < 0.05
    # The polar angle is 2πk/5 + 0.25 e^ρ + atan(τ/ρ), with |τ/ρ| ≲ 0.1 typically.
    offset = torch.atan2(x[:, 1], x[:, 0]) - 0.25 * s.exp()
    arms = torch.arange(5, dtype=F64) * 2 * math.pi / 5
    delta = torch.remainder(offset[:, None] - arms + math.pi, 2 * math.pi) - math.pi
    err, k = delta.abs().min(dim=1)
    assert_balanced(k, 5)
    assert float((err < 0.35).double().mean()) > 0.98


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_checkerboard_black_cells_only(dtype):
    n = 40000
    x = sample("checkerboard", n, dtype=dtype)
    assert float(x.min()) >= -4 and float(x.max()) < 4
    cell = torch.floor(x / 2).long() + 2  # column, row in 0..3
    assert bool(((cell.sum(dim=1) % 2) == 0).all())
    assert_balanced(cell[:, 0] * 2 + cell[:, 1] // 2, 8)  # one label per black cell
    # Uniform within each cell: the offset in the cell is U[0, 2)², mean 1, se 0.58/√n.
    offset = (x - 2 * torch.floor(x / 2)).double()
    torch.testing.assert_close(offset.mean(0), torch.ones(2, dtype=F64), atol=0.015, rtol=0)


# ----------------------------------------------------------------------------- toy_mixture
def test_toy_mixture_parameters():
    gm = datasets.toy_mixture()
    assert isinstance(gm, GaussianMixture) and gm.means.dtype == F64
    angles = torch.arange(8, dtype=F64) * math.pi / 4
    torch.testing.assert_close(gm.means, 2 * torch.stack((angles.cos(), angles.sin()), dim=-1))
    torch.testing.assert_close(gm.covs, 0.25**2 * torch.eye(2, dtype=F64).expand(8, 2, 2))
    torch.testing.assert_close(gm.weights, torch.full((8,), 1 / 8, dtype=F64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_make_eight_gaussians_samples_the_mixture(dtype):
    a = datasets.make("8gaussians", 500, torch.Generator().manual_seed(7), dtype)
    b = datasets.toy_mixture(dtype=dtype).sample(500, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_toy_mixture_moments_match_samples():
    gm = datasets.toy_mixture()
    n = 100_000
    x = sample("8gaussians", n, seed=3)
    w = gm.weights[:, None]
    mean = (w * gm.means).sum(0)
    second = (w[..., None] * (gm.covs + gm.means[:, :, None] * gm.means[:, None, :])).sum(0)
    cov = second - torch.outer(mean, mean)  # = (2²/2 + 0.25²) I
    torch.testing.assert_close(cov, 2.0625 * torch.eye(2, dtype=F64))
    # Tolerances: 5 standard errors of each estimate, the se taken from the sample itself.
    se_mean = (x.var(0) / n).sqrt()
    assert bool(((x.mean(0) - mean).abs() < 5 * se_mean).all())
    xc = x - x.mean(0)
    products = xc[:, :, None] * xc[:, None, :]
    se_cov = (products.var(0) / n).sqrt()
    assert bool(((products.mean(0) - cov).abs() < 5 * se_cov).all())
    # And the per-sample log-likelihood under the mixture equals its Monte-Carlo value on own samples.
    own = gm.sample(n, torch.Generator().manual_seed(4))
    ll, ll_own = gm.log_prob(x), gm.log_prob(own)
    assert abs(float(ll.mean() - ll_own.mean())) < 5 * math.sqrt(float(ll.var() + ll_own.var()) / n)


def test_toy_mixture_only_for_eight_gaussians():
    with pytest.raises(ValueError, match="only '8gaussians'"):
        datasets.toy_mixture("moons")


# ----------------------------------------------------------------------------- digits
@pytest.fixture(scope="module")
def raw_digits():
    from sklearn.datasets import load_digits

    return load_digits()


def test_digits_default(raw_digits):
    x = datasets.digits()
    assert x.shape == (1797, 64) and x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    expected = torch.as_tensor(raw_digits.data / 8 - 1, dtype=torch.float32)
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-6)


def test_digits_range_and_layout(raw_digits):
    x = datasets.digits(dtype=F64, value_range=(0.25, 3.0))
    assert x.dtype == F64 and float(x.min()) == 0.25 and float(x.max()) == 3.0
    torch.testing.assert_close((x - 0.25) / 2.75 * 16, torch.as_tensor(raw_digits.data, dtype=F64))
    images, labels = datasets.digits(dtype=F64, flatten=False, value_range=(0.25, 3.0), return_labels=True)
    assert images.shape == (1797, 1, 8, 8)
    assert torch.equal(images.reshape(1797, 64), x)
    assert labels.dtype == torch.int64 and torch.equal(labels, torch.as_tensor(raw_digits.target))


@pytest.mark.parametrize("value_range", [(1.0, 0.0), (0.0, 0.0), (0.0, math.inf), (0.0,), "ab", None])
def test_digits_bad_range(value_range):
    with pytest.raises(ValueError, match="value_range"):
        datasets.digits(value_range=value_range)


# ----------------------------------------------------------------------------- load
DATA = np.array([[0.5, -1.25, 3.0], [1e-3, 2.0, -7.5], [4.0, 0.0, 1.0 / 3.0], [-2.0, 6.0, 9.0]])


def raises_about(path, problem: str, exc: type[Exception] = ValueError):
    """pytest.raises whose message must name the path and then describe the problem."""
    return pytest.raises(exc, match=re.escape(str(path)) + ".*" + problem)


def test_load_npy_round_trip(tmp_path):
    path = tmp_path / "data.npy"
    np.save(path, DATA)
    x = datasets.load(path, dtype=F64)
    assert x.dtype == F64 and torch.equal(x, torch.from_numpy(DATA))
    assert torch.equal(datasets.load(str(path)), torch.from_numpy(DATA).float())
    np.save(path, DATA.astype(np.float32))
    assert torch.equal(datasets.load(path), torch.from_numpy(DATA.astype(np.float32)))
    np.save(path, np.arange(6, dtype=np.int16).reshape(3, 2))
    assert torch.equal(datasets.load(path, dtype=F64), torch.arange(6, dtype=F64).reshape(3, 2))


@pytest.mark.parametrize("header", ["", "x,y,z\n", '"x 1", y ,z\n'])
def test_load_csv_round_trip(tmp_path, header):
    path = tmp_path / "data.csv"
    rows = "\n".join(", ".join(repr(float(v)) for v in row) for row in DATA)
    path.write_text(header + rows + "\n")
    assert torch.equal(datasets.load(path, dtype=F64), torch.from_numpy(DATA))


def test_load_csv_single_column_and_uppercase_extension(tmp_path):
    path = tmp_path / "col.CSV"
    path.write_text("value\n1\n2\n3\n")
    assert torch.equal(datasets.load(path, dtype=F64), torch.tensor([[1.0], [2.0], [3.0]], dtype=F64))


def test_load_pt_round_trip(tmp_path):
    path = tmp_path / "data.pt"
    torch.save(torch.from_numpy(DATA), path)
    assert torch.equal(datasets.load(path, dtype=F64), torch.from_numpy(DATA))
    torch.save(torch.nn.Parameter(torch.ones(2, 2)), path)
    x = datasets.load(path)
    assert not x.requires_grad and torch.equal(x, torch.ones(2, 2))


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def pt_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


BAD_FILES = {
    # name: (file name, writer(path), message fragment)
    "1-D npy": ("a.npy", lambda p: np.save(p, np.ones(5)), r"2-D array of shape \(N, d\).*got shape \(5,\)"),
    "3-D npy": ("a.npy", lambda p: np.save(p, np.ones((2, 2, 2))), r"got shape \(2, 2, 2\)"),
    "0-D pt": ("a.pt", lambda p: torch.save(torch.tensor(1.0), p), r"got shape \(\)"),
    "no rows": ("a.npy", lambda p: np.save(p, np.ones((0, 3))), r"N >= 1 and d >= 1, got shape \(0, 3\)"),
    "no columns": ("a.pt", lambda p: torch.save(torch.ones(3, 0), p), r"got shape \(3, 0\)"),
    "strings npy": ("a.npy", lambda p: np.save(p, np.array([["a", "b"]])), "non-numeric content of dtype <U1"),
    "complex npy": ("a.npy", lambda p: np.save(p, np.ones((2, 2), dtype=complex)), "non-numeric content"),
    "object npy": (
        "a.npy",
        lambda p: p.write_bytes(npy_bytes(np.array([[{}, 1]], dtype=object))),
        r"not a readable \.npy.*Object arrays",
    ),
    "truncated npy": ("a.npy", lambda p: p.write_bytes(npy_bytes(np.ones((50, 4)))[:300]), r"not a readable \.npy"),
    "garbage npy": ("a.npy", lambda p: p.write_bytes(b"\x00garbage bytes"), "magic string is not correct"),
    "empty npy": ("a.npy", lambda p: p.write_bytes(b""), r"not a readable \.npy"),
    "text in csv": ("a.csv", lambda p: p.write_text("1,2\n3,abc\n"), "comma-separated numbers.*'abc'"),
    "partial header csv": ("a.csv", lambda p: p.write_text("x,1\n3,4\n"), "could not convert string 'x'"),
    "semicolon csv": ("a.csv", lambda p: p.write_text("a;b\n1;2\n"), "could not convert string '1;2'"),
    "ragged csv": ("a.csv", lambda p: p.write_text("1,2\n3,4,5\n"), "same number of columns.*changed from 2 to 3"),
    "header-only csv": ("a.csv", lambda p: p.write_text("x,y\n"), "no data rows"),
    "empty csv": ("a.csv", lambda p: p.write_text(""), "no data rows"),
    "binary csv": ("a.csv", lambda p: p.write_bytes(b"\xff\xfe\x00\x81garbage"), r"not a text \.csv file"),
    "dict pt": ("a.pt", lambda p: torch.save({"x": torch.ones(2, 2)}, p), "holds a dict; expected a tensor"),
    "bool pt": ("a.pt", lambda p: torch.save(torch.ones(2, 2, dtype=torch.bool), p), "non-numeric tensor.*torch.bool"),
    "garbage pt": ("a.pt", lambda p: p.write_bytes(b"not a torch file"), "not a readable torch.save file"),
    "truncated pt": ("a.pt", lambda p: p.write_bytes(pt_bytes(torch.ones(50, 4))[:600]), "not a readable torch.save"),
    "empty pt": ("a.pt", lambda p: p.write_bytes(b""), "not a readable torch.save file"),
    "unknown extension": (
        "a.txt",
        lambda p: p.write_text("1,2\n"),
        r"unsupported extension '\.txt'; supported: \.npy, \.csv, \.pt",
    ),
    "no extension": ("data", lambda p: p.write_text("1,2\n"), "unsupported extension ''"),
    "directory": ("dir.npy", lambda p: p.mkdir(), "is not a file"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_load_bad_file(tmp_path, case):
    name, write, problem = BAD_FILES[case]
    path = tmp_path / name
    write(path)
    with raises_about(path, problem):
        datasets.load(path)


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.npy"
    with raises_about(path, "does not exist", FileNotFoundError):
        datasets.load(path)


@pytest.mark.parametrize("suffix", [".npy", ".csv", ".pt"])
def test_load_nan_inf_rows(tmp_path, suffix):
    data = np.ones((6, 2))
    data[2, 1] = np.nan
    data[4, 0] = -np.inf
    data[5, :] = np.nan
    path = tmp_path / ("bad" + suffix)
    if suffix == ".npy":
        np.save(path, data)
    elif suffix == ".csv":
        path.write_text("a,b\n" + "\n".join(f"{u},{v}" for u, v in data))
    else:
        torch.save(torch.from_numpy(data), path)
    with raises_about(path, r"3 of 6 rows contain NaN or Inf.*first at row 2"):
        datasets.load(path)


def test_load_overflow_in_float32_is_reported(tmp_path):
    path = tmp_path / "big.npy"
    np.save(path, np.array([[1.0, 2.0], [1e300, 0.0]]))
    assert float(datasets.load(path, dtype=F64)[1, 0]) == 1e300
    with raises_about(path, r"1 of 2 rows contain NaN or Inf as torch.float32 \(first at row 1"):
        datasets.load(path)


# ----------------------------------------------------------------------------- get
def test_get_toy():
    assert datasets.get("rings").shape == (10000, 2)
    x = datasets.get("pinwheel", n=7, generator=torch.Generator().manual_seed(5), dtype=F64)
    assert torch.equal(x, sample("pinwheel", 7, seed=5))


def test_get_digits_and_files(tmp_path):
    assert torch.equal(datasets.get("digits"), datasets.digits())
    path = tmp_path / "data.npy"
    np.save(path, DATA)
    assert torch.equal(datasets.get(str(path), dtype=F64), torch.from_numpy(DATA))
    assert torch.equal(datasets.get(path), datasets.load(path))


def test_get_unknown_spec_lists_toys(tmp_path):
    toys = r"not a toy \(moons, circles, .*2spirals\), not 'digits'"
    with pytest.raises(ValueError, match="unknown dataset 'moon': " + toys):
        datasets.get("moon")
    with pytest.raises(ValueError, match="no file exists at that path"):
        datasets.get(tmp_path / "missing.csv")


def test_get_rejects_n_for_fixed_data(tmp_path):
    with pytest.raises(ValueError, match="n applies only to the toy datasets"):
        datasets.get("digits", n=100)
    with pytest.raises(ValueError, match="n applies only"):
        datasets.get(tmp_path, n=3)
    with pytest.raises(ValueError, match="^n must be an integer"):
        datasets.get("moons", n=0)
