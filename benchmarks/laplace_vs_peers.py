"""scoregeo.fisher.laplace against laplace-torch 0.3 on the same models and data (float64, 1 thread).

Peer set-up (a benchmark dependency only; laplace-torch declares torchvision,
whose registry build would replace the CPU torch, so it is installed without
dependencies, as the Fisher peers are):

    .venv/bin/pip install --no-deps laplace-torch==0.3 backpack-for-pytorch==1.7.1 curvlinops-for-pytorch==3.0.1 \\
        unfoldNd==0.2.3 einconv==0.1.0 torchmetrics lightning-utilities
    .venv/bin/pip install einops opt-einsum linear_operator

Cases: a softmax MLP on the bundled digits (classification) and an MLP on a 1-D
sine (regression, σ = 0.1), both trained to the MAP of the prior δ. For each
structure (scoregeo "dense"/"diag"/"kfac"/"last_layer" against laplace-torch
"full"/"diag"/"kron"/last-layer "full"): the largest entry of the difference of
the posterior precisions relative to the largest entry, the difference of the
log marginal likelihoods, the largest difference of predictive probabilities
(probit; regression: function variances J H⁻¹ Jᵀ, relative), and the time of fitting (posterior
precision), of the marginal likelihood and of the predictive, as a ratio to
laplace-torch's in the same run (medians of 3 rounds, interleaved).

Constant conventions: both return log p(D | θ*) − ½ (log det H − P log δ) − ½ δ‖θ*‖²
with the exact normalised log-likelihood (laplace-torch's summed cross-entropy
and its Gaussian with −N·C/2 log 2πσ²). K-FAC differs by design where a layer
has a bias: scoregeo factors [W | b] as one Kronecker block with the input
augmented by a 1 (Martens & Grosse), laplace-torch gives the bias a block of
its own; the script also runs the bias-free classifier, where both are the same
approximation.

    .venv/bin/python benchmarks/laplace_vs_peers.py [--out benchmarks/results/laplace_vs_peers.txt]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import scoregeo as sg
import scoregeo.fisher as sf

DT = torch.float64
DELTA = 1.0
SIGMA = 0.1
PAIRS = (("dense", "full", "all"), ("diag", "diag", "all"), ("kfac", "kron", "all"), ("last_layer", "full", "last_layer"))


def trained(model: nn.Module, x, y, loss_fn, steps: int = 300) -> nn.Module:
    """The MAP of the summed loss plus ½ δ ‖θ‖² (L-BFGS, strong Wolfe)."""
    opt = torch.optim.LBFGS(model.parameters(), max_iter=steps, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(model(x), y) + 0.5 * DELTA * sum((p**2).sum() for p in model.parameters())
        loss.backward()
        return loss

    opt.step(closure)
    return model


def cases():
    images, labels = sg.datasets.digits(dtype=DT, return_labels=True)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train, test = order[:1000], order[1000:1200]
    ce = nn.CrossEntropyLoss(reduction="sum")
    for bias in (True, False):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(64, 24, bias=bias), nn.Tanh(), nn.Linear(24, 10, bias=bias)).to(DT)
        yield (f"digits classifier{'' if bias else ' (no biases)'}", "classification",
               trained(net, images[train], labels[train], ce), images[train], labels[train], images[test])
    g = torch.Generator().manual_seed(1)
    x = torch.rand(300, 1, dtype=DT, generator=g) * 8 - 4
    y = torch.sin(x) + SIGMA * torch.randn(300, 1, dtype=DT, generator=g)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 50), nn.Tanh(), nn.Linear(50, 1)).to(DT)
    mse = lambda f, t: ((f - t) ** 2).sum() / (2 * SIGMA**2)  # noqa: E731 - the Gaussian NLL up to a constant
    yield "sine regression (σ = 0.1)", "regression", trained(net, x, y, mse), x, y, torch.linspace(-6, 6, 50, dtype=DT)[:, None]


def timed(fn):
    start = time.process_time()
    value = fn()
    return value, time.process_time() - start


def as_matrix(precision) -> torch.Tensor:
    if hasattr(precision, "to_matrix"):
        return precision.to_matrix()
    return torch.diag(precision) if precision.ndim == 1 else precision


def compare(name, task, model, x, y, x_test, ours_structure, peer_structure, subset):
    from laplace import Laplace

    loader = DataLoader(TensorDataset(x, y), batch_size=len(x))
    likelihood = "categorical" if task == "classification" else "gaussian"
    variance = None if task == "classification" else SIGMA**2
    times = {"ours": [], "peer": []}
    for _ in range(3):
        post, t_fit = timed(lambda: sf.laplace(model, (x, y), likelihood, structure=ours_structure,
                                              prior_precision=DELTA, variance=variance))
        lml, t_lml = timed(lambda: post.log_marginal_likelihood())
        pred, t_pred = timed(lambda: post.predictive(x_test))
        times["ours"].append((t_fit, t_lml, t_pred))

        def fit_peer():
            la = Laplace(model, task, subset_of_weights=subset, hessian_structure=peer_structure,
                         prior_precision=DELTA, **({} if task == "classification" else {"sigma_noise": SIGMA}))
            la.fit(loader, progress_bar=False)
            return la

        la, t_fit_peer = timed(fit_peer)
        lml_peer, t_lml_peer = timed(lambda: float(la.log_marginal_likelihood()))
        pred_peer, t_pred_peer = timed(lambda: la(x_test, pred_type="glm", link_approx="probit"))
        times["peer"].append((t_fit_peer, t_lml_peer, t_pred_peer))
    mine, theirs = as_matrix(post.posterior_precision()), as_matrix(la.posterior_precision)
    precision_diff = float((mine - theirs).abs().max() / mine.abs().max())
    if task == "classification":
        pred_diff = float((pred - pred_peer).abs().max())
    else:
        # laplace-torch's regression predictive is the function variance J H⁻¹ Jᵀ, without the noise σ²
        function_variance = pred[1][:, 0, 0] - SIGMA**2
        pred_diff = float((function_variance - pred_peer[1].reshape(-1)).abs().max() / function_variance.abs().max())
    med = {k: [statistics.median(t[i] for t in v) for i in range(3)] for k, v in times.items()}
    ratios = [o / p for o, p in zip(med["ours"], med["peer"])]
    return (f"| {name} | {ours_structure} / {peer_structure} | {precision_diff:.1e} | {lml - lml_peer:+.2e} | "
            f"{pred_diff:.1e} | " + " | ".join(f"{1e3 * o:.2f} ms ({r:.2f}×)" for o, r in zip(med["ours"], ratios)) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_default_dtype(DT)  # laplace-torch creates some internal tensors in the default dtype
    import laplace

    lines = [
        f"scoregeo.fisher.laplace vs laplace-torch {laplace.__version__ if hasattr(laplace, '__version__') else '0.3'}; "
        f"torch {torch.__version__}, float64, 1 thread, δ = {DELTA}; CPU time, medians of 3 rounds",
        "",
        "| case | structure (scoregeo / laplace-torch) | precision rel. diff | Δ log marginal likelihood | "
        "predictive max diff | fit (× peer) | marginal likelihood (× peer) | predictive (× peer) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    for name, task, model, x, y, x_test in cases():
        for ours, peer, subset in PAIRS:
            if "no biases" in name and ours != "kfac":
                continue
            row = compare(name, task, model, x, y, x_test, ours, peer, subset)
            lines.append(row)
            print(row, flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
