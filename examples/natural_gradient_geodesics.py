"""Natural gradient against plain gradient descent on two statistical manifolds, with Fisher–Rao geodesics.

1. A univariate Gaussian N(μ, σ²) fitted by maximum likelihood to 400 samples,
   parameters θ = (μ, log σ). The loss is the mean negative log-likelihood; its
   Fisher information per observation is F(θ) = diag(1/σ², 2), taken from
   ``sg.FisherRaoMetric`` (the Hessian of torch's closed-form KL divergence) and
   handed to ``scoregeo.fisher.NaturalGradient`` as a dense ``Curvature``.
   Natural-gradient descent (NGD) and gradient descent (GD) start from the same
   point with the same step size; the Fisher–Rao geodesic from the start to the
   maximum-likelihood estimate is solved by ``sg.geodesic`` and its length
   checked against the closed form ``sg.fisher_rao.normal`` and its shape against
   the exact geodesic (a half-ellipse over the σ = 0 axis in the (μ, σ) plane).
2. Logistic regression with two weights, no bias, on 200 points: NGD through
   ``NaturalGradient.from_model`` with the matrix-free Fisher of
   ``fim(..., structure="implicit", reduction="mean")`` (conjugate-gradient
   solves), at lr = 1 (Newton's method: F is the Hessian of the logistic NLL) and
   at lr = 0.3 (close to the continuous natural-gradient flow), against GD at
   lr = 4, and the Fisher–Rao geodesic of the model's family
   w ↦ Π_n Bernoulli(σ(x_nᵀ w)) between the start and the optimum, solved by
   collocation and checked by shooting its initial velocity (``sg.shoot``).

The trajectories are plotted with the geodesics (on contours of the loss); the
lengths printed are Fisher–Rao lengths per observation (the metric of the mean
log-likelihood), the polylines through the iterates for the optimisers.

    .venv/bin/python examples/natural_gradient_geodesics.py [--out natural-gradient.png]
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as nnf
from matplotlib.figure import Figure
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal

import scoregeo as sg
from scoregeo.fisher import DenseCurvature, NaturalGradient

F64 = torch.float64


def gaussian_family(theta: torch.Tensor) -> Normal:
    """θ = (μ, log σ) ↦ N(μ, σ²)."""
    return Normal(theta[..., 0], theta[..., 1].exp())


def run_gaussian(y: torch.Tensor, start: torch.Tensor, optimizer: str, lr: float, steps: int) -> torch.Tensor:
    """Iterates (steps + 1, 2) of NGD or GD on the mean NLL of N(μ, σ²) at the samples y."""
    theta = nn.Parameter(start.clone())
    metric = sg.FisherRaoMetric(gaussian_family, 2)
    if optimizer == "ngd":
        opt = NaturalGradient([theta], lambda: DenseCurvature(metric.matrix(theta.detach())), lr=lr, damping=1e-10)
    else:
        opt = torch.optim.SGD([theta], lr=lr)

    def closure():
        opt.zero_grad()
        loss = -gaussian_family(theta).log_prob(y).mean()
        loss.backward()
        return loss

    iterates = [theta.detach().clone()]
    for _ in range(steps):
        opt.step(closure)
        iterates.append(theta.detach().clone())
    return torch.stack(iterates)


def exact_normal_geodesic_error(points: torch.Tensor) -> float:
    """Largest distance of points (μ, log σ) from the exact geodesic through their end points.

    In (u, σ) = (μ/√2, σ) the Fisher–Rao metric of N(μ, σ²) is twice the Poincaré
    half-plane metric, whose geodesics are half-circles centred on σ = 0 (or vertical
    lines when the means agree).
    """
    u, s = points[:, 0] / math.sqrt(2), points[:, 1].exp()
    (u0, s0), (u1, s1) = (u[0], s[0]), (u[-1], s[-1])
    centre = (u1**2 + s1**2 - u0**2 - s0**2) / (2 * (u1 - u0))
    radius = torch.hypot(u0 - centre, s0)
    return float((torch.hypot(u - centre, s) - radius).abs().max())


def logistic_problem(n: int = 200):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, dtype=F64, generator=g) * torch.tensor([1.0, 0.5], dtype=F64)
    y = torch.bernoulli(torch.sigmoid(x @ torch.tensor([2.0, -1.5], dtype=F64)), generator=g)
    return x, y


def run_logistic(x, y, start, optimizer: str, lr: float, steps: int):
    """Iterates (steps + 1, 2) of NGD or GD on the mean NLL of logistic regression, and the NGD solve infos."""
    model = nn.Linear(2, 1, bias=False).to(F64)
    with torch.no_grad():
        model.weight.copy_(start[None])
    if optimizer == "ngd":
        opt = NaturalGradient.from_model(model, x, "bernoulli", lr=lr, damping=1e-8)  # implicit F, mean
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr)

    def closure():
        opt.zero_grad()
        loss = nnf.binary_cross_entropy_with_logits(model(x), y[:, None])  # mean NLL: F's scale
        loss.backward()
        return loss

    iterates, infos = [model.weight.detach()[0].clone()], []
    for _ in range(steps):
        opt.step(closure)
        iterates.append(model.weight.detach()[0].clone())
        infos.append(getattr(opt, "last_solve_info", None))
    return torch.stack(iterates), infos


def box(*curves: torch.Tensor, margin: float = 0.15) -> tuple[list[float], list[float]]:
    """Bounding box (low, high) of point sets (..., 2), widened by ``margin`` of its size."""
    points = torch.cat([c.reshape(-1, 2) for c in curves])
    lo, hi = points.min(0).values, points.max(0).values
    pad = margin * (hi - lo)
    return (lo - pad).tolist(), (hi + pad).tolist()


def steps_to(iterates: torch.Tensor, target: torch.Tensor, tol: float) -> str:
    close = ((iterates - target).norm(dim=-1) < tol).nonzero()
    return str(int(close[0])) if close.numel() else f">{iterates.shape[0] - 1}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="natural-gradient.png")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ok = True

    # ---------------------------------------------------------------- 1. N(μ, σ²)
    y = 1.0 + 0.8 * torch.randn(400, dtype=F64, generator=torch.Generator().manual_seed(0))
    mle = torch.stack([y.mean(), y.std(correction=0).log()])  # closed-form maximum-likelihood estimate
    start = torch.tensor([-3.0, math.log(4.0)], dtype=F64)
    lr, steps = 0.3, 60
    ngd = run_gaussian(y, start, "ngd", lr, steps)
    gd = run_gaussian(y, start, "gd", lr, steps)
    metric = sg.FisherRaoMetric(gaussian_family, 2)
    path = sg.geodesic(metric, start, mle, n_points=96)
    closed = sg.fisher_rao.normal(start[0], start[1].exp(), mle[0], mle[1].exp())
    shape_err = exact_normal_geodesic_error(path.points)
    ok &= bool(path.converged)

    print("1. N(μ, σ²), θ = (μ, log σ), mean NLL of 400 samples")
    print(f"   start (μ, σ) = ({float(start[0]):.3f}, {float(start[1].exp()):.3f}),  "
          f"MLE = ({float(mle[0]):.4f}, {float(mle[1].exp()):.4f})")
    print(f"   Fisher–Rao distance start → MLE:  geodesic length {float(path.length):.6f} (sg.geodesic, "
          f"{path.method}, converged={bool(path.converged)})")
    print(f"                                     closed form     {float(closed):.6f} (sg.fisher_rao.normal), "
          f"rel. diff {abs(float(path.length) / float(closed) - 1):.1e}")
    print(f"   geodesic off the exact half-ellipse by at most {shape_err:.1e} (in (μ/√2, σ))")
    print(f"   {'':>4} {'lr':>5} {'steps to |θ−MLE|<1e-6':>22} {'|θ−MLE| after ' + str(steps):>19} "
          f"{'Fisher–Rao path length':>23}")
    for name, traj in (("NGD", ngd), ("GD", gd)):
        print(f"   {name:>4} {lr:5.2f} {steps_to(traj, mle, 1e-6):>22} {float((traj[-1] - mle).norm()):19.2e} "
              f"{float(sg.curve_length(metric, traj)):23.4f}")

    # ---------------------------------------------------------------- 2. logistic regression
    x, labels = logistic_problem()
    w0 = torch.tensor([-0.5, 2.0], dtype=F64)
    # lr = 1 is Newton's method here (F is the Hessian of the logistic NLL): fast from this start, but it
    # overshoots from starts whose predictions are confidently wrong (e.g. w0 = (-1.5, 3)), where lr < 1 is needed
    ngd_lr, gd_lr = 1.0, 4.0
    ngd_w, infos = run_logistic(x, labels, w0, "ngd", ngd_lr, 12)
    gd_w, _ = run_logistic(x, labels, w0, "gd", gd_lr, 400)
    flow_lr = 0.3  # small steps: close to the continuous natural-gradient flow
    flow_w, flow_infos = run_logistic(x, labels, w0, "ngd", flow_lr, 80)
    infos += flow_infos
    w_star = ngd_w[-1]
    grad_star = torch.func.grad(lambda w: nnf.binary_cross_entropy_with_logits(x @ w, labels))(w_star)
    family = lambda w: Independent(Bernoulli(logits=w @ x.T), 1)  # noqa: E731  the model on the whole data set
    logistic_metric = sg.FisherRaoMetric(family, 2)
    # Chebyshev collocation from the straight line (method="auto", which also refines five other starts to
    # find the shortest geodesic, takes ~20 s on this 200-term metric); checked by shooting its initial velocity
    logistic_path = sg.geodesic(logistic_metric, w0, w_star, n_points=96, method="collocation")
    shot = sg.shoot(logistic_metric, w0, logistic_path.initial_velocity, n_points=2)
    per_obs = 1 / math.sqrt(x.shape[0])  # the family's Fisher is the sum over examples; lengths per observation

    print("\n2. logistic regression, 2 weights, mean NLL of 200 points, F = fim(..., 'implicit', reduction='mean')")
    print(f"   optimum w* = ({float(w_star[0]):.4f}, {float(w_star[1]):.4f}), "
          f"|∇L(w*)| = {float(grad_star.norm()):.1e}")
    print(f"   CG solves: max relative residual {max(i.relative_residual for i in infos):.1e}, "
          f"all converged = {all(i.converged for i in infos)}")
    print(f"   Fisher–Rao distance w0 → w*: geodesic length {float(logistic_path.length) * per_obs:.4f} "
          f"({logistic_path.method}, converged={bool(logistic_path.converged)})")
    ok &= bool(logistic_path.converged) and all(info.converged for info in infos)
    print(f"   shooting its initial velocity (sg.shoot) ends {float((shot.end_point - w_star).norm()):.1e} from w*")
    print(f"   {'':>4} {'lr':>5} {'steps to |w−w*|<1e-6':>22} {'|w−w*| after 12':>19} "
          f"{'Fisher–Rao path length':>23}")
    for name, traj, rate in (("NGD", ngd_w, ngd_lr), ("NGD", flow_w, flow_lr), ("GD", gd_w, gd_lr)):
        print(f"   {name:>4} {rate:5.2f} {steps_to(traj, w_star, 1e-6):>22} {float((traj[12] - w_star).norm()):19.2e} "
              f"{float(sg.curve_length(logistic_metric, traj)) * per_obs:23.4f}")

    # ---------------------------------------------------------------- figure
    fig = Figure(figsize=(12, 5), layout="constrained")
    left, right = fig.subplots(1, 2)

    def to_mu_sigma(t):
        return t[..., 0].numpy(), t[..., 1].exp().numpy()

    lo, hi = box(ngd, gd, path.points)
    mu, ls = torch.meshgrid(torch.linspace(lo[0], hi[0], 200, dtype=F64), torch.linspace(lo[1], hi[1], 200, dtype=F64),
                            indexing="ij")
    grid = torch.stack([mu, ls], -1)
    nll = -gaussian_family(grid.unsqueeze(-2)).log_prob(y).mean(-1)
    levels = torch.quantile(nll.flatten(), torch.linspace(0.01, 0.99, 25, dtype=F64)).numpy()
    left.contour(mu.numpy(), ls.exp().numpy(), nll.numpy(), levels=levels, colors="0.8", linewidths=0.7)
    left.plot(*to_mu_sigma(path.points), color="C3", linewidth=2.5, label="Fisher–Rao geodesic")
    left.plot(*to_mu_sigma(ngd), "o-", color="C0", markersize=3, label=f"natural gradient (lr={lr})")
    left.plot(*to_mu_sigma(gd), "s-", color="C1", markersize=3, label=f"gradient descent (lr={lr})")
    left.plot(*to_mu_sigma(mle), "k*", markersize=12, label="maximum likelihood")
    left.set_xlabel("μ")
    left.set_ylabel("σ")
    left.set_title(f"N(μ, σ²), θ = (μ, log σ), {steps} steps; d_FR = {float(closed):.3f}")
    left.legend(loc="upper right", fontsize=8)

    lo, hi = box(ngd_w, flow_w, gd_w, logistic_path.points)
    w1, w2 = torch.meshgrid(torch.linspace(lo[0], hi[0], 200, dtype=F64), torch.linspace(lo[1], hi[1], 200, dtype=F64),
                            indexing="ij")
    ws = torch.stack([w1, w2], -1)
    loss = nnf.binary_cross_entropy_with_logits(ws @ x.T, labels.expand(*ws.shape[:-1], -1), reduction="none").mean(-1)
    levels = torch.quantile(loss.flatten(), torch.linspace(0.01, 0.99, 25, dtype=F64)).numpy()
    right.contour(w1.numpy(), w2.numpy(), loss.numpy(), levels=levels, colors="0.8", linewidths=0.7)
    right.plot(*logistic_path.points.T.numpy(), color="C3", linewidth=2.5, label="Fisher–Rao geodesic")
    right.plot(*ngd_w.T.numpy(), "o-", color="C0", markersize=3,
               label=f"natural gradient (lr={ngd_lr:g}, implicit F, CG)")
    right.plot(*flow_w.T.numpy(), "^-", color="C2", markersize=2, linewidth=0.8,
               label=f"natural gradient (lr={flow_lr:g})")
    right.plot(*gd_w.T.numpy(), "s-", color="C1", markersize=2, linewidth=0.8, label=f"gradient descent (lr={gd_lr:g})")
    right.plot(*w_star.numpy(), "k*", markersize=12, label="optimum")
    right.set_xlabel("w₁")
    right.set_ylabel("w₂")
    right.set_title("logistic regression, 2 weights")
    right.legend(loc="lower left", fontsize=8)
    fig.savefig(args.out, dpi=110)
    print(f"\nwrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
