"""Fisher information of a classifier: scoregeo against BackPACK, curvlinops and nngeometry.

Tasks (true Fisher of a softmax classifier, F = Σ_n J_nᵀ Λ_n J_n with
Λ_n = diag(p_n) − p_n p_nᵀ; for the categorical likelihood this is also the GGN of
the summed cross-entropy):

* **F·v**       one Fisher-vector product on an operator built beforehand
                (column "F·v"), and operator construction + one product ("build+F·v");
* **diag**      the exact diagonal of F (no Monte Carlo);
* **KFAC**      the build of the Kronecker factors with the exact expectation over y
                (no Monte Carlo: every column of a square root of Λ_n is backpropagated);
* **dense**     the P×P matrix (small models only).

Models (ReLU, PyTorch default initialisation, seed 0), batch N = 256, 10 classes,
inputs ~ N(0, 1), labels uniform (the true Fisher does not depend on them):

* ``mlp``:   MLP 784-128-64-10, P = 109,386 (dense not attempted: 96 GB in float64);
* ``cnn``:   Conv2d(1→4, 5×5, stride 2, padding 1) → Conv2d(4→8, 5×5, stride 2) →
             Linear(200→10) on 1×28×28 inputs, P = 2,922;
* ``small``: MLP 20-16-10, P = 506.

Each library is used through its own API for the exact Fisher / GGN:

* scoregeo:   ``fim(model, X, "categorical", kind="true", structure=...)``, reduction="sum";
* BackPACK:   ``hessianfree.ggnvp.ggn_vector_product_from_plist`` (F·v, on the graph of one
              forward pass; the ``GGNMP`` extension multiplies only the per-layer diagonal blocks,
              so it is not F·v), ``DiagGGNExact`` (diag), ``KFLR`` (KFAC with the exact loss Hessian),
              ``SqrtGGNExact`` (dense = VᵀV), with ``CrossEntropyLoss(reduction="sum")``;
* curvlinops: ``GGNLinearOperator`` (F·v; dense = operator @ I in blocks of 128 columns) and
              ``KFACLinearOperator(fisher_type="type-2", separate_weight_and_bias=False)``, with
              ``CrossEntropyLoss(reduction="sum")`` and ``check_deterministic=False``; it has no
              exact diagonal (only the stochastic ``hutchinson_diag`` / ``xdiag``);
* nngeometry: ``FIM(model, (X,), representation, variant="classif_logits")`` with
              ``PMatImplicit`` + ``PVector`` (F·v), ``PMatDiag``, ``PMatKFAC``, ``PMatDense``.

Every value is compared, in float64, with a brute-force reference that uses no
library code: per-example Jacobians J_n from ``torch.func.jacrev`` in chunks, then
F·V = Σ J_nᵀ(Λ_n(J_n V)), diag F = Σ_n diag(J_nᵀ Λ_n J_n), F = Σ J_nᵀ Λ_n J_n; for KFAC
the factors from their definition: A = (1/R) Σ ā āᵀ over the layer inputs (patches
cut by explicit slicing for the convolutions, not ``unfold``) and G = Σ g gᵀ over the
gradients at the layer outputs of the columns of B_n with B_nᵀB_n = Λ_n (from an
eigendecomposition), in float64. A KFAC is compared through its product with 4 fixed
random vectors. Difference = max|x − ref| / max|ref| (elementwise, relative to the
largest entry). Timing in float32 (median over interleaved rounds), peak memory
of one call in float32 (torch CPU tensor allocations, from the profiler's memory events).

    .venv/bin/python benchmarks/fisher_vs_peers.py [--models mlp cnn small]
        [--peers backpack curvlinops nngeometry] [--rounds 7] [--min-time 0.3]
        [--no-memory] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib.metadata
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

import scoregeo.fisher as sgf

THREADS = 2
N_BATCH = 256
N_PROBES = 4  # random vectors for the F·V and KFAC·V checks
TOL64 = 1e-12  # target: float64 values equal to the reference to this relative difference
DENSE_CHUNK = 128  # curvlinops: columns of the identity per GGN @ I block
LIBS = ("scoregeo", "backpack", "curvlinops", "nngeometry")
PEER_PACKAGES = {"backpack": "backpack-for-pytorch", "curvlinops": "curvlinops-for-pytorch", "nngeometry": "nngeometry"}
TASKS = {
    "fv": "F·v",
    "fv_build": "build+F·v",
    "diag": "exact diag",
    "kfac": "KFAC build",
    "dense": "dense F",
}
MODELS = {
    "mlp": dict(title="MLP 784-128-64-10", tasks=("fv", "fv_build", "diag", "kfac")),
    "cnn": dict(title="CNN conv(1→4,5×5,s2,p1)-conv(4→8,5×5,s2)-linear(200→10), 1×28×28",
                tasks=("fv", "fv_build", "diag", "kfac", "dense")),
    "small": dict(title="MLP 20-16-10", tasks=("fv", "fv_build", "diag", "kfac", "dense")),
}
CONFIDENT_SCALE = 100.0  # the confident variant multiplies the last layer's weight and bias by this

warnings.filterwarnings("ignore", message="Full backward hook is firing")  # BackPACK's hooks on input-less graphs


# ============================================================================ models and data
def build_model(name: str, dtype: torch.dtype, confident: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if name == "mlp":
        layers = [nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)]
    elif name == "cnn":
        layers = [nn.Conv2d(1, 4, 5, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 5, stride=2), nn.ReLU(),
                  nn.Flatten(), nn.Linear(200, 10)]
    elif name == "small":
        layers = [nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 10)]
    else:
        raise ValueError(name)
    model = nn.Sequential(*layers).to(torch.float64)
    if confident:
        with torch.no_grad():
            model[-1].weight.mul_(CONFIDENT_SCALE)
            model[-1].bias.mul_(CONFIDENT_SCALE)
    return model.to(dtype).eval()


def build_data(name: str, dtype: torch.dtype, n: int = N_BATCH, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    shape = {"mlp": (784,), "cnn": (1, 28, 28), "small": (20,)}[name]
    X = torch.randn(n, *shape, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randint(0, 10, (n,), generator=gen)
    return X, y


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def probes(P: int, dtype: torch.dtype, seed: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(P, N_PROBES, generator=gen, dtype=torch.float64).to(dtype)


def unflatten_like(v: torch.Tensor, params) -> list[torch.Tensor]:
    out, i = [], 0
    for p in params:
        out.append(v[i : i + p.numel()].view_as(p))
        i += p.numel()
    return out


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


# ============================================================================ reference (float64)
def _per_example_jacobians(model: nn.Module, X: torch.Tensor, chunk: int):
    """Yield (slice, J (n, C, P)) with torch.func.jacrev per example, parameters in model.parameters() order."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p, x):
        return functional_call(model, p, (x.unsqueeze(0),)).squeeze(0)

    jac_fn = vmap(jacrev(f), in_dims=(None, 0))
    for s in range(0, X.shape[0], chunk):
        sl = slice(s, min(X.shape[0], s + chunk))
        jac = jac_fn(params, X[sl])
        yield sl, torch.cat([jac[k].flatten(2) for k in params], dim=2)


def _output_precision(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        p = torch.softmax(model(X), dim=-1)
    return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)  # (N, C, C)


def _patches(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Rows (N·Ho·Wo, C_in·kh·kw) of input patches by explicit slicing (no unfold)."""
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    dh, dw = conv.dilation
    ph, pw = conv.padding
    xp = nn.functional.pad(x, (pw, pw, ph, ph))
    ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    cols = torch.stack([
        torch.stack([xp[:, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw]
                     for j in range(kw)], dim=2)
        for i in range(kh)], dim=2)  # (N, C, kh, kw, Ho, Wo)
    return cols.permute(0, 4, 5, 1, 2, 3).reshape(-1, cols.shape[1] * kh * kw)


@dataclass
class KBlock:
    """One Kronecker block G ⊗ A acting on V[index] (index (d_out, d_in) into the parameter vector)."""

    index: torch.Tensor
    G: torch.Tensor
    A: torch.Tensor


def kfac_apply(blocks: list[KBlock], V: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(V)
    for b in blocks:
        out[b.index] = torch.einsum("io,ojk,jl->ilk", b.G, V[b.index], b.A)
    return out


def _layer_index(model: nn.Module):
    """Per Linear/Conv2d: (module, weight index (d_out, d_w), bias index (d_out, 1))."""
    offsets, total = {}, 0
    for p in model.parameters():
        offsets[id(p)] = total
        total += p.numel()
    out = []
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            d_out = m.weight.shape[0]
            iw = (offsets[id(m.weight)] + torch.arange(m.weight.numel())).reshape(d_out, -1)
            ib = (offsets[id(m.bias)] + torch.arange(d_out)).reshape(d_out, 1)
            out.append((m, iw, ib))
    return out


def reference_kfac(model: nn.Module, X: torch.Tensor) -> dict[str, list[KBlock]]:
    """KFAC from its definition (float64), in three block structures.

    - "joint":    [W | b] per layer, A = (1/R) Σ ā āᵀ with ā = (a, 1), G = Σ_{n,t,k} g gᵀ
                  (scoregeo, nngeometry, curvlinops with separate_weight_and_bias=False);
    - "separate": weight block G ⊗ A_w (A_w = (1/R) Σ a aᵀ), bias block G (no W–b cross terms);
    - "backpack": "separate", but for a Conv2d G_r = Σ_{n,k} (Σ_t g)(Σ_t g)ᵀ and A = (1/N) Σ_{n,t} a aᵀ
                  (what BackPACK's KFLR computes for convolutions, see its HBPConvNd).
    """
    layers = _layer_index(model)
    acts, outs = {}, {}
    x = X
    with torch.enable_grad():
        for m in model:
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                acts[m] = x.detach()
                x = m(x)
                outs[m] = x
            else:
                x = m(x)
        f = x
        lam = _output_precision(model, X)
        w, U = torch.linalg.eigh(lam)  # Λ = U diag(w) Uᵀ → B = diag(√w) Uᵀ, Bᵀ B = Λ
        B = w.clamp_min(0).sqrt().unsqueeze(-1) * U.mT  # (N, K, C)
        G = {m: 0.0 for m, _, _ in layers}
        Gr = {m: 0.0 for m, _, _ in layers}
        mods = [m for m, _, _ in layers]
        for k in range(B.shape[1]):
            grads = torch.autograd.grad(f, [outs[m] for m in mods], grad_outputs=B[:, k, :],
                                        retain_graph=k < B.shape[1] - 1)
            for m, g in zip(mods, grads):
                if isinstance(m, nn.Conv2d):
                    rows = g.permute(0, 2, 3, 1).reshape(-1, g.shape[1])
                    gs = g.sum((2, 3))
                    Gr[m] = Gr[m] + gs.T @ gs
                else:
                    rows = g
                    Gr[m] = Gr[m] + g.T @ g
                G[m] = G[m] + rows.T @ rows
    res = {"joint": [], "separate": [], "backpack": []}
    for m, iw, ib in layers:
        a = _patches(m, acts[m]) if isinstance(m, nn.Conv2d) else acts[m]
        R = a.shape[0]
        abar = torch.cat([a, torch.ones(R, 1, dtype=a.dtype)], 1)
        A_joint = abar.T @ abar / R
        A_w = a.T @ a / R
        one = torch.ones(1, 1, dtype=a.dtype)
        res["joint"].append(KBlock(torch.cat([iw, ib], 1), G[m], A_joint))
        res["separate"] += [KBlock(iw, G[m], A_w), KBlock(ib, G[m], one)]
        if isinstance(m, nn.Conv2d):
            res["backpack"] += [KBlock(iw, Gr[m], a.T @ a / X.shape[0]), KBlock(ib, Gr[m], one)]
        else:
            res["backpack"] += [KBlock(iw, G[m], A_w), KBlock(ib, G[m], one)]
    return res


def reference(model: nn.Module, X: torch.Tensor, V: torch.Tensor, dense: bool) -> dict:
    """Brute-force float64 values: F·V, diag F, (dense F), KFAC·V in three block structures."""
    P = n_params(model)
    lam = _output_precision(model, X)
    C = lam.shape[-1]
    chunk = max(1, int(2**24 // (C * P)))
    FV = torch.zeros(P, V.shape[1], dtype=torch.float64)
    diag = torch.zeros(P, dtype=torch.float64)
    Fd = torch.zeros(P, P, dtype=torch.float64) if dense else None
    for sl, J in _per_example_jacobians(model, X, chunk):
        L = lam[sl]
        LJ = L @ J  # (n, C, P)
        FV += torch.einsum("ncp,nck->pk", J, L @ torch.einsum("ncp,pk->nck", J, V))
        diag += (J * LJ).sum((0, 1))
        if dense:
            Fd += J.reshape(-1, P).T @ LJ.reshape(-1, P)
    out = {"fv": FV, "diag": diag}
    if dense:
        out["dense"] = (Fd + Fd.T) / 2
    kf = reference_kfac(model, X)
    out["kfac"] = {k: kfac_apply(b, V) for k, b in kf.items()}
    return out


def loop_reference_dense(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """Dense F with one autograd.grad per (example, class): an independent check of the reference."""
    params = list(model.parameters())
    lam = _output_precision(model, X)
    rows = []
    for n in range(X.shape[0]):
        with torch.enable_grad():
            f = model(X[n : n + 1])[0]
            J = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(f[c], params, retain_graph=True)])
                             for c in range(f.shape[0])])
        rows.append(J.T @ lam[n] @ J)
    return torch.stack(rows).sum(0)


# ============================================================================ library adapters
class Unsupported(Exception):
    """The library has no API for this task (the reason is the message)."""


@dataclass
class Runner:
    run: Callable[[], object]  # the timed operation
    value: Callable[[], torch.Tensor]  # the comparable value (sum scale, constant applied)
    scale: float = 1.0  # the constant applied to the library's own value
    structure: str = "joint"  # KFAC block structure to compare against
    notes: list = field(default_factory=list)


def _ce_sum():
    return nn.CrossEntropyLoss(reduction="sum")


def make_scoregeo(task, model, X, y, V) -> Runner:
    m = copy.deepcopy(model)
    if task == "fv":
        F = sgf.fim(m, X, "categorical", structure="implicit")
        v = V[:, 0].contiguous()
        return Runner(lambda: F.mv(v), lambda: F.mv(V))
    if task == "fv_build":
        v = V[:, 0].contiguous()
        return Runner(lambda: sgf.fim(m, X, "categorical", structure="implicit").mv(v),
                      lambda: sgf.fim(m, X, "categorical", structure="implicit").mv(V))
    if task == "diag":
        run = lambda: sgf.fim(m, X, "categorical", structure="diag").diag()  # noqa: E731
        return Runner(run, run)
    if task == "kfac":
        run = lambda: sgf.fim(m, X, "categorical", structure="kfac")  # noqa: E731
        return Runner(run, lambda: run().mv(V))
    if task == "dense":
        run = lambda: sgf.fim(m, X, "categorical", structure="dense").dense()  # noqa: E731
        return Runner(run, run)
    raise Unsupported(task)


def make_backpack(task, model, X, y, V) -> Runner:
    from backpack import backpack, extend
    from backpack.extensions import KFLR, DiagGGNExact, SqrtGGNExact
    from backpack.hessianfree.ggnvp import ggn_vector_product_from_plist

    if task in ("fv", "fv_build"):
        m = copy.deepcopy(model)  # not extended: hessianfree needs only autograd
        plist = [p for p in m.parameters() if p.requires_grad]
        lf = _ce_sum()

        def product(out, loss, v):
            return torch.cat([g.flatten() for g in ggn_vector_product_from_plist(loss, out, plist,
                                                                                 unflatten_like(v, plist))])

        def build():
            with torch.enable_grad():
                out = m(X)
                return out, lf(out, y)

        v = V[:, 0].contiguous()
        if task == "fv":
            out, loss = build()
            return Runner(lambda: product(out, loss, v),
                          lambda: torch.stack([product(out, loss, V[:, k]) for k in range(V.shape[1])], 1))

        def cold(v):
            out, loss = build()
            return product(out, loss, v)

        return Runner(lambda: cold(v), lambda: torch.stack([cold(V[:, k]) for k in range(V.shape[1])], 1))

    m = extend(copy.deepcopy(model))
    lf = extend(_ce_sum())
    plist = [p for p in m.parameters() if p.requires_grad]
    ext = {"diag": DiagGGNExact, "kfac": KFLR, "dense": SqrtGGNExact}[task]

    def backward():
        with torch.enable_grad():
            loss = lf(m(X), y)
            with backpack(ext()):
                loss.backward()

    if task == "diag":
        def run():
            backward()
            return [p.diag_ggn_exact for p in plist]

        return Runner(run, lambda: torch.cat([d.flatten() for d in run()]))
    if task == "dense":
        def run():
            backward()
            S = torch.cat([p.sqrt_ggn_exact.flatten(2) for p in plist], 2)  # (C, N, P)
            S = S.reshape(-1, S.shape[-1])
            return S.T @ S

        return Runner(run, run)

    # kfac: KFLR factors per parameter: weight [G, A], bias [G] (weight and bias separate blocks)
    def run():
        backward()
        return [list(p.kflr) for p in plist]

    def value():
        factors = run()
        blocks = []
        for (mod, iw, ib) in _layer_index(m):
            fw = mod.weight.kflr
            blocks.append(KBlock(iw, fw[0], fw[1]))
            blocks.append(KBlock(ib, mod.bias.kflr[0], torch.ones(1, 1, dtype=V.dtype)))
        del factors
        return kfac_apply(blocks, V)

    has_conv = any(isinstance(mod, nn.Conv2d) for mod in m.modules())
    notes = ["weight and bias are separate Kronecker blocks (no W–b cross terms); compared with the "
             "reference in that structure"]
    if has_conv:
        notes.append("Conv2d: KFLR's factors are G = Σ_n (Σ_t g)(Σ_t g)ᵀ (output gradients summed over "
                     "positions) and A = (1/N) Σ_n,t a aᵀ — not KFC; compared with a reference in that convention "
                     "(row 'vs KFC' gives the difference to the KFC definition)")
    return Runner(run, value, structure="backpack" if has_conv else "separate", notes=notes)


def make_curvlinops(task, model, X, y, V) -> Runner:
    from curvlinops import GGNLinearOperator, KFACLinearOperator

    m = copy.deepcopy(model)
    params = [p for p in m.parameters() if p.requires_grad]
    data = [(X, y)]

    def ggn():
        return GGNLinearOperator(m, _ce_sum(), params, data, check_deterministic=False)

    if task == "fv":
        op = ggn()
        v = V[:, 0].contiguous()
        return Runner(lambda: op @ v, lambda: op @ V)
    if task == "fv_build":
        v = V[:, 0].contiguous()
        return Runner(lambda: ggn() @ v, lambda: ggn() @ V)
    if task == "dense":
        P = n_params(m)

        def run():
            op = ggn()
            eye = torch.eye(P, dtype=X.dtype)
            return torch.cat([op @ eye[:, i : i + DENSE_CHUNK] for i in range(0, P, DENSE_CHUNK)], 1)

        return Runner(run, run, notes=[f"dense: GGNLinearOperator @ I in blocks of {DENSE_CHUNK} columns"])
    if task == "kfac":
        def run():
            K = KFACLinearOperator(m, _ce_sum(), params, data, check_deterministic=False, fisher_type="type-2",
                                   separate_weight_and_bias=False)
            K.compute_kronecker_factors()
            return K

        return Runner(run, lambda: run() @ V)
    raise Unsupported("no exact diagonal (only the stochastic hutchinson_diag / xdiag)")


def make_nngeometry(task, model, X, y, V, set_dtype: bool = True) -> Runner:
    from nngeometry.layercollection import LayerCollection
    from nngeometry.metrics import FIM
    from nngeometry.object import PMatDense, PMatDiag, PMatImplicit, PMatKFAC, PVector

    m = copy.deepcopy(model)
    N = X.shape[0]
    lc = LayerCollection.from_model(m)
    # nngeometry creates some buffers in the default dtype (torch.ones/zeros without dtype, torch.finfo().eps)
    ctx = (lambda: default_dtype(X.dtype)) if set_dtype else contextlib.nullcontext

    def fim(rep):
        with ctx():
            return FIM(m, (X,), rep, variant="classif_logits")

    def pv(v):
        return PVector(lc, vector_repr=v.contiguous())

    if task in ("fv", "fv_build"):
        F0 = fim(PMatImplicit)

        def product(v, F=None):
            with ctx():
                return (F if F is not None else fim(PMatImplicit)).mv(pv(v))

        if task == "fv":
            run = lambda: product(V[:, 0], F0)  # noqa: E731
        else:
            run = lambda: product(V[:, 0])  # noqa: E731
        value = lambda: N * torch.stack([product(V[:, k], F0).to_torch() for k in range(V.shape[1])], 1)  # noqa: E731
        return Runner(run, value, scale=N)
    if task == "diag":
        run = lambda: fim(PMatDiag).get_diag()  # noqa: E731
        return Runner(run, lambda: N * run(), scale=N)
    if task == "dense":
        run = lambda: fim(PMatDense).to_torch()  # noqa: E731
        return Runner(run, lambda: N * run(), scale=N)
    if task == "kfac":
        run = lambda: fim(PMatKFAC)  # noqa: E731

        def value():
            K = run()
            with ctx():
                return N * torch.stack([K.mv(pv(V[:, k])).to_torch() for k in range(V.shape[1])], 1)

        return Runner(run, value, scale=N)
    raise Unsupported(task)


MAKERS = {"scoregeo": make_scoregeo, "backpack": make_backpack, "curvlinops": make_curvlinops,
          "nngeometry": make_nngeometry}


def make_runner(lib, task, model, X, y, V) -> Runner:
    return MAKERS[lib](task, model, X, y, V)


# ============================================================================ comparison
def rel_diff(x: torch.Tensor, ref: torch.Tensor) -> float:
    x = x.detach().to(torch.float64)
    if x.shape != ref.shape:
        raise ValueError(f"shape {tuple(x.shape)} != reference {tuple(ref.shape)}")
    if not bool(torch.isfinite(x).all()):
        return math.nan
    return float((x - ref).abs().max() / ref.abs().max().clamp_min(1e-300))


def ref_value(ref: dict, task: str, runner: Runner) -> torch.Tensor:
    if task in ("fv", "fv_build"):
        return ref["fv"]
    if task == "kfac":
        return ref["kfac"][runner.structure]
    return ref[task]


@dataclass
class Check:
    diff: float | None = None  # max relative difference (NaN when the value has NaN/Inf)
    nonfinite: int = 0
    error: str | None = None
    unsupported: str | None = None
    scale: float = 1.0
    extra: dict = field(default_factory=dict)


def check_one(lib, task, model, X, y, V, ref) -> Check:
    try:
        r = make_runner(lib, task, model, X, y, V)
        val = r.value()
    except Unsupported as exc:
        return Check(unsupported=str(exc))
    except Exception as exc:  # noqa: BLE001 - a failure of the library under test is a result
        return Check(error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:110] if str(exc) else ''}")
    ck = Check(scale=r.scale)
    ck.nonfinite = int((~torch.isfinite(val)).sum())
    ck.extra["size"] = val.numel()
    ck.diff = rel_diff(val, ref_value(ref, task, r))
    if task == "kfac" and r.structure != "joint":
        ck.extra["structure"] = r.structure
        if r.structure == "backpack":
            ck.extra["vs KFC"] = rel_diff(val, ref["kfac"]["separate"])
    ck.extra["notes"] = r.notes
    return ck


def fmt_check(c: Check | None) -> str:
    if c is None:
        return "—"
    if c.unsupported:
        return "n/a"
    if c.error:
        return "error"
    if c.nonfinite:
        return f"NaN×{c.nonfinite}"
    s = f"{c.diff:.1e}"
    if c.scale != 1.0:
        s += f" (×{c.scale:g})"
    return s


# ============================================================================ timing
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
DISTURBED = 0.2  # a round is repeated when other processes used more than this many CPUs on average during it


def _machine_busy() -> float | None:
    """CPU-seconds all processes have used since boot (/proc/stat), or None where unavailable."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:9]]
    except OSError:
        return None
    return (sum(vals) - vals[3] - vals[4]) / _HZ  # minus idle and iowait


class Stopwatch:
    """Wall time of a block, and the CPU other processes used meanwhile (machine busy − this process)."""

    def __enter__(self):
        self.t, self.cpu, self.busy = time.perf_counter(), time.process_time(), _machine_busy()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t
        busy = _machine_busy()
        if busy is None or self.busy is None:
            self.others = 0.0
        else:
            self.others = max(0.0, (busy - self.busy) - (time.process_time() - self.cpu)) / max(self.wall, 1e-9)


def wait_quiet(max_wait: float, threads: int) -> float:
    """Wait (up to max_wait s) until other processes leave ``threads`` CPUs idle; return the seconds waited."""
    t0 = time.perf_counter()
    spare = (os.cpu_count() or 1) - threads
    while time.perf_counter() - t0 < max_wait:
        with Stopwatch() as sw:
            time.sleep(0.5)
        if sw.others <= spare + DISTURBED:
            break
    return time.perf_counter() - t0


def measure(cands: dict, min_time: float, rounds: int, threads: int = THREADS) -> tuple[dict, int]:
    """Samples (seconds per call) of each candidate, measured round-robin after a warm-up.

    Each round times every candidate once, in a block of calls lasting about
    ``min_time / rounds`` s; calls slower than 1 s get 3 rounds of one call, slower
    than 5 s one round (their time is then a single call after the warm-up). The
    machine is shared: a round during which other processes used more than the
    spare CPUs (+ DISTURBED) is discarded and repeated (at most 2·rounds extra
    attempts). Returns the samples and the number of rounds discarded.
    """
    per_call = {}
    for name, fn in cands.items():
        fn()  # warm-up (lazy initialisations, graph building)
        t0 = time.perf_counter()
        fn()
        per_call[name] = time.perf_counter() - t0
    block = max(min_time / rounds, 1e-3)
    n_calls = {k: max(1, int(block / max(t, 1e-7))) for k, t in per_call.items()}
    samples: dict[str, list[float]] = {k: [] for k in cands}
    spare = (os.cpu_count() or 1) - threads
    done = discarded = 0
    while done < rounds:
        row = {}
        with Stopwatch() as round_sw:
            for name, fn in cands.items():
                if (per_call[name] > 1.0 and done >= 3) or (per_call[name] > 5.0 and done >= 1):
                    continue
                n = n_calls[name]
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                row[name] = (time.perf_counter() - t0) / n
        if round_sw.others > spare + DISTURBED and discarded < 2 * rounds:
            discarded += 1
            continue
        for name, t in row.items():
            samples[name].append(t)
        done += 1
    return samples, discarded


def med(s):
    return statistics.median(s) if s else None


def ratio_to_fastest(samples: dict, name: str, others: list[str]) -> float | None:
    """Median over rounds of t[name] / min over ``others`` of t (rounds where all were measured)."""
    others = [o for o in others if samples.get(o)]
    if not samples.get(name) or not others:
        return None
    k = min(len(samples[name]), *(len(samples[o]) for o in others))
    return statistics.median(samples[name][r] / min(samples[o][r] for o in others) for r in range(k))


def fmt_time(t) -> str:
    if t is None:
        return "—"
    if t < 1e-3:
        return f"{t * 1e6:.0f} µs"
    if t < 1.0:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.2f} s"


# ============================================================================ memory
def peak_memory(run: Callable[[], object]) -> int:
    """Peak of torch's CPU tensor allocations during one call of ``run``, in bytes above the start.

    From the profiler's memory events (``profile_memory=True``): every op's own net
    allocation and every free outside an op, in time order, summed; the peak of
    that running sum. Only tensors allocated through torch's CPU allocator are
    seen, at op granularity (a temporary allocated and freed inside a single op is
    not); blocks allocated before the call and freed during it are not subtracted
    (the profiler cannot size them), so results a library keeps from a previous
    call and replaces do not lower its peak.
    """
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = run()
        del out
    events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()
                    if e.self_cpu_memory_usage)
    cur = peak = 0
    for _, delta in events:
        cur += delta
        peak = max(peak, cur)
    return peak


def fmt_mem(m: int | None) -> str:
    if m is None:
        return "—"
    return f"{m / 2**20:.1f} MB" if m >= 2**20 / 10 else f"{m / 2**10:.0f} kB"


# ============================================================================ main
def version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--peers", nargs="+", default=[lib for lib in LIBS if lib != "scoregeo"],
                   choices=[lib for lib in LIBS if lib != "scoregeo"])
    p.add_argument("--threads", type=int, default=THREADS)
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    p.add_argument("--min-time", type=float, default=0.3, help="seconds of measurement per candidate and task")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    p.add_argument("--max-wait", type=float, default=120.0,
                   help="seconds to wait, before each task, for other processes to leave --threads CPUs idle")
    p.add_argument("--quick", action="store_true", help="short timing, no memory")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.min_time, args.no_memory = 3, 0.1, True
    torch.set_num_threads(args.threads)
    libs = ["scoregeo", *args.peers]
    peers = list(args.peers)
    t_start = time.perf_counter()

    print(f"scoregeo Fisher benchmark: torch {torch.__version__}, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("peers: " + ", ".join(f"{PEER_PACKAGES[lib]} {version(PEER_PACKAGES[lib])}" for lib in peers))
    print(f"Timing: before each task, wait (≤ {args.max_wait:g} s) until other processes leave {args.threads} CPUs "
          f"idle; a round during which they used more than {DISTURBED:g} CPU (from /proc/stat minus this process) "
          f"is repeated (a {args.threads}-thread pool stalls on every parallel op while another process holds one "
          "of its CPUs)")
    print(f"batch N = {N_BATCH}, 10 classes; difference = max|x − ref| / max|ref|; target ≤ {TOL64:g} in float64\n")

    checks: dict = {}  # (model, task, lib) -> Check
    timings: dict = {}  # (model, task) -> samples
    memory: dict = {}  # (model, task, lib) -> bytes
    disturbance: dict = {}  # (model, task) -> (seconds waited for a quiet machine, rounds discarded)
    confident: dict = {}  # (model, dtype, task, lib) -> Check
    nng_default: dict = {}  # (model, task) -> Check (nngeometry in float64 without set_default_dtype)
    lib_notes: dict = {lib: [] for lib in libs}

    # ------------------------------------------------------------------ correctness, float64
    for name in args.models:
        spec = MODELS[name]
        model = build_model(name, torch.float64)
        X, y = build_data(name, torch.float64)
        P = n_params(model)
        V = probes(P, torch.float64)
        t0 = time.perf_counter()
        ref = reference(model, X, V, dense="dense" in spec["tasks"])
        note = f"reference {time.perf_counter() - t0:.1f} s"
        if name == "small":
            loop = loop_reference_dense(model, X)
            note += f"; loop-of-autograd.grad dense check: {rel_diff(loop, ref['dense']):.1e}"
        print(f"[{name}] {spec['title']}: P = {P:,}; {note}", flush=True)
        spec["P"] = P
        for task in spec["tasks"]:
            if task == "fv_build":
                continue
            for lib in libs:
                c = check_one(lib, task, model, X, y, V, ref)
                checks[name, task, lib] = c
                for n in c.extra.get("notes", []):
                    if n not in lib_notes[lib]:
                        lib_notes[lib].append(n)
            if "nngeometry" in libs:
                nng_default[name, task] = _check_nng_default(task, model, X, y, V, ref)
        del ref
        gc.collect()

    # ------------------------------------------------------------------ confident models (last layer ×100)
    conf_models = [m for m in args.models if "dense" in MODELS[m]["tasks"]]
    for name in conf_models:
        m64 = build_model(name, torch.float64, confident=True)
        X64, y = build_data(name, torch.float64)
        V64 = probes(n_params(m64), torch.float64)
        ref = reference(m64, X64, V64, dense=True)
        with torch.no_grad():
            pmax = torch.softmax(m64(X64), -1).max(-1).values
        MODELS[name]["pmax"] = (float(pmax.median()), float((1 - pmax).min()))
        for dt in (torch.float32, torch.float64):
            model = build_model(name, dt, confident=True)
            X, _ = build_data(name, dt)
            V = V64.to(dt)
            for task in ("dense", "diag", "kfac", "fv"):
                for lib in libs:
                    confident[name, dt, task, lib] = check_one(lib, task, model, X, y, V, ref)
        print(f"[{name}] confident variant checked", flush=True)

    # ------------------------------------------------------------------ timing, float32
    for name in args.models:
        spec = MODELS[name]
        model = build_model(name, torch.float32)
        X, y = build_data(name, torch.float32)
        V = probes(n_params(model), torch.float32)
        for task in spec["tasks"]:
            cands = {}
            for lib in libs:
                try:
                    cands[lib] = make_runner(lib, task, model, X, y, V).run
                except Unsupported:
                    pass
            waited = wait_quiet(args.max_wait, args.threads)
            samples, discarded = measure(cands, args.min_time * len(cands), args.rounds, args.threads)
            timings[name, task] = samples
            disturbance[name, task] = (waited, discarded)
            if not args.no_memory:
                for lib, run in cands.items():
                    memory[name, task, lib] = peak_memory(run)
            print(f"  {name} {TASKS[task]}: " + ", ".join(f"{k} {fmt_time(med(s))}" for k, s in samples.items())
                  + f" (waited {waited:.1f} s for a quiet machine, {discarded} disturbed rounds repeated)", flush=True)
            del cands
            gc.collect()

    # ================================================================== report
    print()
    print("Conventions (what was compared, and the constant applied to each library's own value)")
    print("  scoregeo:   fim(..., kind='true', reduction='sum') — the log-likelihood scale, summed: constant 1")
    if "backpack" in libs:
        print("  BackPACK:   CrossEntropyLoss(reduction='sum'): the GGN of the summed loss = F, constant 1 "
              "(reduction='mean' would give F/N)")
    if "curvlinops" in libs:
        print("  curvlinops: CrossEntropyLoss(reduction='sum'): constant 1 (reduction='mean' would give F/N); "
              "KFAC with separate_weight_and_bias=False ([W | b] blocks as scoregeo; the default True drops the "
              "W–b cross terms)")
    if "nngeometry" in libs:
        print(f"  nngeometry: FIM always averages over the examples: every value × N = {N_BATCH}; in float64 it "
              "needs torch.set_default_dtype(torch.float64) (done here around each call, see below)")

    for name in args.models:
        spec = MODELS[name]
        print(f"\n=== {name}: {spec['title']}, P = {spec['P']:,}, N = {N_BATCH}")
        # correctness
        print("Max relative difference to the brute-force reference, float64 (× constant applied)")
        header = f"{'task':<12} | " + " | ".join(f"{lib:>16}" for lib in libs)
        print(header)
        print("-" * len(header))
        for task in spec["tasks"]:
            if task == "fv_build":
                continue
            print(f"{TASKS[task]:<12} | " + " | ".join(f"{fmt_check(checks.get((name, task, lib))):>16}"
                                                        for lib in libs))
        for task in spec["tasks"]:
            for lib in libs:
                c = checks.get((name, task, lib))
                if c and "vs KFC" in c.extra:
                    print(f"  {lib} {TASKS[task]}: vs its own convention {c.diff:.1e}; vs the KFC definition "
                          f"{c.extra['vs KFC']:.1e}")
        # timing
        print("\nTime, float32 (median over interleaved rounds); ratio = scoregeo / fastest peer (median of "
              "per-round ratios)")
        header = (f"{'task':<12} | " + " | ".join(f"{lib:>11}" for lib in libs)
                  + f" | {'fastest peer':>13} | {'ratio':>6}")
        print(header)
        print("-" * len(header))
        for task in spec["tasks"]:
            S = timings.get((name, task))
            if not S:
                continue
            pts = [lib for lib in peers if S.get(lib)]
            fastest = min(pts, key=lambda lib: med(S[lib])) if pts else None
            ratio = ratio_to_fastest(S, "scoregeo", pts)
            spec.setdefault("ratio", {})[task] = (ratio, fastest)
            print(f"{TASKS[task]:<12} | " + " | ".join(f"{fmt_time(med(S.get(lib))):>11}" for lib in libs)
                  + f" | {fastest or '—':>13} | {ratio if ratio is None else f'{ratio:.2f}':>6}")
        dist = [(TASKS[t], *disturbance[name, t]) for t in spec["tasks"] if (name, t) in disturbance]
        if dist:
            print("  waited for a quiet machine / disturbed rounds repeated: "
                  + ", ".join(f"{t} {w:.1f} s / {d}" for t, w, d in dist))
        if memory:
            print("\nPeak memory of one call, float32: torch CPU tensor allocations above the start (profiler "
                  "memory events; the F·v operator's retained state is counted in build+F·v only)")
            header = f"{'task':<12} | " + " | ".join(f"{lib:>11}" for lib in libs)
            print(header)
            print("-" * len(header))
            for task in spec["tasks"]:
                print(f"{TASKS[task]:<12} | " + " | ".join(f"{fmt_mem(memory.get((name, task, lib))):>11}"
                                                            for lib in libs))

    # confident
    if confident:
        print(f"\n=== Confident models: last layer (weight and bias) × {CONFIDENT_SCALE:g}")
        for name in conf_models:
            pm, tail = MODELS[name]["pmax"]
            print(f"{name}: median max-probability {pm:.12f}, smallest 1 − max p = {tail:.1e}")
            header = f"{'task':<12} {'dtype':<8} | " + " | ".join(f"{lib:>16}" for lib in libs)
            print(header)
            print("-" * len(header))
            for task in ("dense", "diag", "kfac", "fv"):
                for dt in (torch.float32, torch.float64):
                    print(f"{TASKS[task]:<12} {str(dt).split('.')[-1]:<8} | "
                          + " | ".join(f"{fmt_check(confident.get((name, dt, task, lib))):>16}" for lib in libs))
        print("  (NaN×k: k non-finite entries; values: max relative difference to the float64 reference)")

    # targets
    print("\n=== Targets")
    for name in args.models:
        spec = MODELS[name]
        for task in spec["tasks"]:
            ratio, fastest = spec.get("ratio", {}).get(task, (None, None))
            S = timings.get((name, task), {})
            if ratio is None:
                tverdict = "no peer measured"
            else:
                tverdict = (f"{'MET' if ratio <= 1.0 else 'NOT MET'} (scoregeo {fmt_time(med(S['scoregeo']))}, "
                            f"fastest peer {fastest} {fmt_time(med(S[fastest]))}, ratio {ratio:.2f})")
            line = f"  {name:<5} {TASKS[task]:<11} time ≤ fastest peer: {tverdict}"
            c = checks.get((name, "fv" if task == "fv_build" else task, "scoregeo"))
            if c is not None and task != "fv_build":
                ok = c.diff is not None and c.diff <= TOL64 and not c.nonfinite
                line += f"; float64 ≤ {TOL64:g}: {'MET' if ok else 'NOT MET'} ({fmt_check(c)})"
            print(line)
    if confident:
        bad = [(n, str(dt).split('.')[-1], TASKS[t]) for (n, dt, t, lib), c in confident.items()
               if lib == "scoregeo" and (c.nonfinite or c.error)]
        print(f"  no NaN on a confident model (scoregeo, every task, float32 and float64): "
              f"{'MET' if not bad else 'NOT MET ' + str(bad)}")

    # peer differences and failures
    print("\n=== Peer results that differ by a constant factor, use another convention, or fail")
    constants = {"backpack": "constant 1 (CrossEntropyLoss(reduction='sum'))",
                 "curvlinops": "constant 1 (CrossEntropyLoss(reduction='sum'))",
                 "nngeometry": f"constant N = {N_BATCH}: every value is the mean over the batch, multiplied by N "
                               "before comparing"}
    for lib in peers:
        grouped: dict[str, list[str]] = {}  # message -> where

        def add(msg, where):
            grouped.setdefault(msg, []).append(where)

        for (name, task, l), c in checks.items():
            if l != lib:
                continue
            if c.error:
                add(f"fails: {c.error}", f"{name} {TASKS[task]}")
            elif c.unsupported:
                add(f"{TASKS[task]} not available: {c.unsupported}", name)
            elif c.nonfinite:
                add("non-finite entries", f"{name} {TASKS[task]} ({c.nonfinite})")
            elif c.diff is not None and c.diff > TOL64:
                add(f"differs from the reference by more than {TOL64:g}", f"{name} {TASKS[task]} ({c.diff:.1e})")
        if lib == "nngeometry":
            for (name, task), c in nng_default.items():
                if c.error:
                    add(f"in float64 with the default dtype left at float32 it fails: {c.error}",
                        f"{name} {TASKS[task]}")
                elif c.nonfinite or (c.diff is not None and c.diff > TOL64):
                    add("in float64 with the default dtype left at float32 (float32 buffers and eps) it differs",
                        f"{name} {TASKS[task]} ({'NaN' if c.nonfinite else f'{c.diff:.1e}'})")
        for (name, dt, task, l), c in confident.items():
            if l == lib and (c.nonfinite or c.error):
                what = "NaN/Inf in the result" if c.nonfinite else f"fails: {c.error}"
                detail = f" ({c.nonfinite} of {c.extra.get('size', '?')} entries)" if c.nonfinite else ""
                add(f"confident model (last layer ×{CONFIDENT_SCALE:g}): {what}",
                    f"{name} {str(dt).split('.')[-1]} {TASKS[task]}{detail}")
        print(f"  {lib}: {constants[lib]}")
        for note in lib_notes.get(lib, []):
            print(f"    - {note}")
        for msg, where in grouped.items():
            print(f"    - {msg} — {', '.join(where)}")
        if lib == "nngeometry" and any(k[3] == lib and (c.nonfinite or c.error) for k, c in confident.items()):
            print("      reason: variant='classif_logits' backpropagates a Cholesky-type square root of Λ (Tanabe & "
                  "Sagae) built from q_c = 1 − Σ_{j≤c} p_j and divided by q_{c−1}; on a confident softmax q rounds to "
                  "0 (0/0) or below 0 (square root of a negative number), and the NaN of one example reaches every "
                  "entry through the sums over the batch")
    if memory:
        print("\nMemory: torch.profiler with profile_memory=True around one call after the warm-up; the peak of the "
              "running sum of allocations and frees. It sees only torch's CPU tensor allocations, at op granularity, "
              "not Python objects, BLAS/oneDNN workspaces or allocator slack; tracemalloc would see none of the "
              "tensors, and ru_maxrss deltas were dominated here by one-time initialisations (about 50 MB on a "
              "first call whose tensors peak at 12 MB).")
    print(f"\nTotal run time {time.perf_counter() - t_start:.0f} s; load average at the end "
          f"{os.getloadavg()[0]:.1f}")
    return 0


def _check_nng_default(task, model, X, y, V, ref) -> Check:
    """nngeometry in float64 without torch.set_default_dtype(torch.float64)."""
    try:
        r = make_nngeometry(task, model, X, y, V, set_dtype=False)
        val = r.value()
    except Unsupported as exc:
        return Check(unsupported=str(exc))
    except Exception as exc:  # noqa: BLE001
        return Check(error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:110] if str(exc) else ''}")
    return Check(diff=rel_diff(val, ref_value(ref, task, r)), nonfinite=int((~torch.isfinite(val)).sum()))


if __name__ == "__main__":
    sys.exit(main())
