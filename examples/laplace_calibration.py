"""Calibration of a digits classifier: the MAP model against its Laplace predictive, on held-out digits.

1. A 64-32-10 tanh MLP trained on 1000 of the bundled 8×8 digits to the MAP of
   the summed cross-entropy plus ½ δ ‖θ‖² (L-BFGS), δ = 1 (seeded split).
2. ``fisher.laplace`` posteriors ("kfac", "last_layer", "dense"), their prior
   precision fitted by the marginal likelihood, and the linearised predictive
   (probit; for "dense" also Monte Carlo) on the 797 held-out digits.
3. A table of accuracy, negative log-likelihood and expected calibration error
   (15 bins) per predictive, and a reliability diagram.

    .venv/bin/python examples/laplace_calibration.py [--out docs/laplace_calibration.png]
"""

from __future__ import annotations

import argparse
import time

import torch
from matplotlib.figure import Figure
from torch import nn

import scoregeo as sg
import scoregeo.fisher as sf

DT = torch.float64
DELTA = 1.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="laplace_calibration.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    images, labels = sg.datasets.digits(dtype=DT, return_labels=True)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train, test = order[:1000], order[1000:]
    x, y, x_test, y_test = images[train], labels[train], images[test], labels[test]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).to(DT)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
        loss = loss + 0.5 * DELTA * sum((p**2).sum() for p in model.parameters())
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        predictives = {"MAP": torch.softmax(model(x_test), -1)}
    notes = {"MAP": ""}
    for structure in ("kfac", "last_layer", "dense"):
        start = time.perf_counter()
        post = sf.laplace(model, (x, y), "categorical", structure=structure, prior_precision=DELTA)
        delta = post.optimize_prior_precision()
        predictives[f"Laplace {structure}"] = post.predictive(x_test)
        notes[f"Laplace {structure}"] = f"δ = {delta:.3g}, {time.perf_counter() - start:.1f} s"
    predictives["Laplace dense, Monte Carlo"] = post.predictive(x_test, method="mc", n_samples=2000,
                                                                generator=torch.Generator().manual_seed(0))
    notes["Laplace dense, Monte Carlo"] = "2000 draws of f"

    rows = ["| predictive | accuracy | NLL | ECE (15 bins) | fitted prior precision, time |", "|---|---:|---:|---:|---|"]
    results = {}
    for name, probs in predictives.items():
        cal = sf.calibration(probs, y_test, n_bins=15)
        results[name] = cal
        rows.append(f"| {name} | {cal.accuracy:.3f} | {cal.nll:.3f} | {cal.ece:.3f} | {notes[name]} |")
    print(f"{len(train)} training / {len(test)} held-out digits; MLP 64-32-10 (tanh), MAP with δ = {DELTA}")
    print("\n".join(rows))

    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="perfect calibration")
    for name, cal in results.items():
        ax.plot(cal.confidence.numpy(), cal.bin_accuracy.numpy(), marker="o", markersize=3,
                label=f"{name} (ECE {cal.ece:.3f})")
    ax.set_xlabel("confidence (mean of max probability in the bin)")
    ax.set_ylabel("accuracy in the bin")
    ax.set_title(f"Reliability on {len(test)} held-out digits", fontsize=10)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
